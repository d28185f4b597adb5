"""Ingest on Ray against one process: sentences per second of `qa index --ray local` with 1 and 2 workers,
of the single-process build and, with the default model, of the encoder alone, in one run; and query
latency through Ray actors against local search on the same index (issue #12 item 4).

Archives come from bench/synth.py (cached outside the repository). Each build is `qa index CORPUS
--index DIR --rebuild --model none|all-MiniLM-L6-v2 [--ray local --workers N]` in a child process.
The rate is the index's sentences over the build's own time, as `qa index` prints it: from planning to
publishing, Ray's actors starting and the model reaching them included, the local cluster's start and
stop not (the command's wall time is given beside it). CPU seconds are user + system of the child and
of every process under it (Ray's GCS, raylet and workers), sampled from /proc every SAMPLE_S seconds
(a process's last SAMPLE_S is missed). The encoder's own rate: encode_documents of ENCODER_SAMPLE
sentences of the model archive in this process (torch's default threads), before and after the builds.

    nice -n 10 .venv/bin/python bench/distributed.py [--keyword 100k|none] [--model 5k] [--workers 1,2]
        [--skip-model] [--serve 100k,1M|none] [--actors default,1,2] [--skip-ingest]
        [--data ../shared/data] [--cache /tmp/qa-scale] [--work /tmp/qa-distributed]

Serving: a keyword-only index of each --serve archive (kept in --work, built incrementally) is
loaded once in this process and once through a local Ray cluster with each --actors count; the
scale bench's ~300 questions are asked of both in turn (k=10): identical hits, wall ms per search,
and the per-question difference (the overhead of Ray's round trips).

Prints a markdown table (copied into docs/deploy.md). Exits 0 with a reason when the data or Ray is absent.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth  # noqa: E402

ENCODER_SAMPLE = 2_000
SAMPLE_S = 0.2
MODEL = "all-MiniLM-L6-v2"
TICK = os.sysconf("SC_CLK_TCK")
_BUILT = re.compile(r"index: [\d,]+ articles, ([\d,]+) sentences .* in ([\d.]+) s")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Run:
    label: str
    workers: int  # 0: one process, no Ray
    sentences: int
    build_s: float  # what qa index reports
    wall_s: float  # the command
    cpu_s: float  # the command and every process under it
    processes: int
    driver_cpu_s: float  # the command's own process: with Ray, the driver that every worker feeds


def tree_cpu(root: int, seen: dict[tuple[int, str], float]) -> None:
    """Record the CPU seconds (user + system) so far of root and of every process under it, by (pid, start)."""
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = ((int(fields[11]) + int(fields[12])) / TICK, fields[19])
    below = {root}
    grew = True
    while grew:
        new = {p for p, pp in parent.items() if pp in below and p not in below}
        below |= new
        grew = bool(new)
    for pid in below:
        if pid in cpu:
            seconds, start = cpu[pid]
            seen[(pid, start)] = seconds


def run(label: str, workers: int, cmd: list[str], logs: Path) -> Run:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    seen: dict[tuple[int, str], float] = {}
    t0 = time.perf_counter()
    with open(logs.with_suffix(".out"), "w") as fo, open(logs.with_suffix(".err"), "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT, env=env)
        while proc.poll() is None:
            tree_cpu(proc.pid, seen)
            time.sleep(SAMPLE_S)
    wall = time.perf_counter() - t0
    out = logs.with_suffix(".out").read_text(errors="replace")
    found = _BUILT.search(out)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                         f"{(out + logs.with_suffix('.err').read_text(errors='replace'))[-3000:]}")
    driver = sum(v for (pid, _), v in seen.items() if pid == proc.pid)
    return Run(label, workers, int(found[1].replace(",", "")), float(found[2]), wall, sum(seen.values()), len(seen),
               driver)


def builds(corpus: Path, model: str, workers: list[int], work: Path) -> list[Run]:
    qa = [str(ROOT / ".venv" / "bin" / "qa")] if (ROOT / ".venv" / "bin" / "qa").exists() else \
        [sys.executable, "-m", "qa.cli"]
    out = []
    for n in [0, *workers]:
        label = "one process" if n == 0 else f"--ray local --workers {n}"
        index = work / f"index-{model}-{n}"
        shutil.rmtree(index, ignore_errors=True)
        cmd = [*qa, "index", str(corpus), "--index", str(index), "--rebuild", "--model", model]
        if n:
            cmd += ["--ray", "local", "--workers", str(n)]
        say(f"{model}: {label}")
        r = run(label, n, cmd, work / f"build-{model}-{n}")
        say(f"  {r.sentences:,} sentences, build {r.build_s:.1f} s, command {r.wall_s:.1f} s, {r.cpu_s:.1f} CPU s")
        out.append(r)
        shutil.rmtree(index, ignore_errors=True)
    return out


def encoder_rate(corpus: Path) -> tuple[float, float, int]:
    """(sentences/s wall, sentences per CPU s, sentences) of the default model alone, on a sample of corpus."""
    from qa.articles import load_corpus
    from qa.embed import load_encoder
    from qa.sentences import load_splitter

    splitter = load_splitter()
    texts = [s.text for a in load_corpus(corpus).articles for s in splitter.split(a.id, a.text)]
    texts = texts[::max(1, len(texts) // ENCODER_SAMPLE)][:ENCODER_SAMPLE]
    encoder = load_encoder(MODEL, device="cpu")
    encoder.encode_documents(texts[:64])  # warm up
    c0, t0 = time.process_time(), time.perf_counter()
    encoder.encode_documents(texts)
    return len(texts) / (time.perf_counter() - t0), len(texts) / (time.process_time() - c0), len(texts)


def table(title: str, runs: list[Run], encoder: list[tuple[float, float, int]] | None = None) -> str:
    one = next(r for r in runs if r.workers == 0)
    first = next((r for r in runs if r.workers == 1), None)
    rate = {r.label: r.sentences / r.build_s for r in runs}
    enc = sum(e[0] for e in encoder) / len(encoder) if encoder else None
    head = ["ingest", "sentences", "build s", "sentences/s", "× one process", "× 1 worker"]
    head += ["× encoder alone"] if encoder else []
    head += ["command wall s", "CPU s (processes)", "sentences per CPU s", "driver CPU s", "sentences per driver CPU s"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in runs:
        row = [r.label, f"{r.sentences:,}", f"{r.build_s:.1f}", f"{rate[r.label]:,.0f}",
               f"{rate[r.label] / rate[one.label]:.2f}×",
               f"{rate[r.label] / rate[first.label]:.2f}×" if first and r.workers else "—"]
        row += [f"{rate[r.label] / enc:.2f}×"] if encoder else []
        row += [f"{r.wall_s:.1f}", f"{r.cpu_s:.1f} ({r.processes})", f"{r.sentences / r.cpu_s:,.0f}",
                f"{r.driver_cpu_s:.1f}", f"{r.sentences / r.driver_cpu_s:,.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    if encoder:
        row = [f"encoder alone ({encoder[0][2]:,} sentences; before, after the builds)", "", "",
               f"{enc:,.0f} ({', '.join(f'{w:,.0f}' for w, _, _ in encoder)})", "", "", "1.00×", "", "",
               ", ".join(f"{c:,.0f}" for _, c, _ in encoder), "", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- serving: query latency through Ray against local search ---------------------------------------

def serve_latency(index: Path, questions: list[str], actors: int | None, k: int = 10) -> dict:
    """Ask every question of one index locally and through Ray actors in turn (the first once more
    as a warm-up): identical hits, and wall ms per search for both and their per-question difference."""
    import numpy as np

    from qa.retrieve import Retriever
    local = Retriever.load(index, load_model=False)
    t0 = time.perf_counter()
    remote = Retriever.load(index, load_model=False, ray="local", actors=actors)
    load_s = time.perf_counter() - t0
    same, wall = 0, {"local": [], "ray": []}
    try:
        for i, q in enumerate([questions[0], *questions]):
            got = {}
            for name, r in (("local", local), ("ray", remote)):
                t0 = time.perf_counter()
                got[name] = r.search(q, k=k)
                if i:
                    wall[name].append(1000 * (time.perf_counter() - t0))
            if i:
                same += [(h.passage, h.score, h.sources) for h in got["local"]] == \
                        [(h.passage, h.score, h.sources) for h in got["ray"]]
        actors_used = len(remote.shards.actors)
    finally:
        remote.close()
    lw, rw = np.array(wall["local"]), np.array(wall["ray"])
    return {"questions": len(questions), "same": same, "actors": actors_used, "segments": len(local.manifest.segments),
            "sentences": local.manifest.sentences, "load_s": load_s,
            "local_p50": float(np.percentile(lw, 50)), "ray_p50": float(np.percentile(rw, 50)),
            "over_p50": float(np.percentile(rw - lw, 50)), "over_p95": float(np.percentile(rw - lw, 95))}


def serving(size: str, actor_counts: list[int | None], args) -> str:
    """The serving table: a keyword-only index of the archive (built once, kept in --work), asked the
    scale bench's questions locally and through 1, 2 … actors of a local Ray cluster."""
    import scale

    from qa import distributed
    archive = synth.ensure_archive(synth.parse_size(size), args.data, args.cache, log=say)
    index = args.work / f"serve-{size}"
    qa = [str(ROOT / ".venv" / "bin" / "qa")] if (ROOT / ".venv" / "bin" / "qa").exists() else \
        [sys.executable, "-m", "qa.cli"]
    say(f"serving: index of the {size} archive (incremental)")
    subprocess.run([*qa, "index", str(archive.corpus), "--index", str(index), "--model", "none"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    questions = scale.load_questions(args.data, 0)
    distributed.connect("local")
    try:
        results = []
        for n in actor_counts:
            say(f"serving: {'the default number of' if n is None else n} actor(s)")
            results.append(serve_latency(index, questions, n))
    finally:
        distributed.disconnect()
    head = ["actors asked (holding)", "segments", "sentences", "same hits", "Ray load s", "local p50 ms",
            "through Ray p50 ms", "overhead p50 / p95 ms"]
    lines = [f"**Serving, keyword-only ({size} archive, k={10}, wall time per search)**", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n, r in zip(actor_counts, results):
        lines.append("| " + " | ".join([f"{'default' if n is None else n} ({r['actors']})", str(r["segments"]), f"{r['sentences']:,}",
                                         f"{r['same']} of {r['questions']}", f"{r['load_s']:.1f}",
                                         f"{r['local_p50']:.2f}", f"{r['ray_p50']:.2f}",
                                         f"{r['over_p50']:.2f} / {r['over_p95']:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keyword", default="100k", help="sentences of the keyword-only archive (none: skip)")
    parser.add_argument("--model", default="5k", help="sentences of the archive built with the default model")
    parser.add_argument("--workers", default="1,2", help="Ray workers to try, comma-separated")
    parser.add_argument("--skip-model", action="store_true", help="the keyword-only builds alone")
    parser.add_argument("--data", type=Path, default=synth.DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=synth.DEFAULT_CACHE)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qa-distributed"))
    parser.add_argument("--serve", default="100k,1M", help="archives whose index is searched through Ray (none: skip)")
    parser.add_argument("--actors", default="default,1,2",
                        help="serving actors to try, comma-separated (default: qa serve's own count, one per node)")
    parser.add_argument("--skip-ingest", action="store_true", help="the serving tables alone")
    args = parser.parse_args(argv)
    if (need := synth.missing_data(args.data)) is not None:
        print(f"skipped: {need} not found (see ../shared/data/SOURCES.md)")
        return 0
    if importlib.util.find_spec("ray") is None:
        print("skipped: Ray is not installed (.venv/bin/pip install -c constraints.txt -e '.[ray]')")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}; `python bench/distributed.py "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    if not args.skip_ingest and args.keyword != "none":
        kw = synth.ensure_archive(synth.parse_size(args.keyword), args.data, args.cache, log=say)
        print(table(f"Keyword-only ({args.keyword} archive)", builds(kw.corpus, "none", workers, args.work)))
    if not args.skip_model and not args.skip_ingest:
        m = synth.ensure_archive(synth.parse_size(args.model), args.data, args.cache, log=say)
        say("the encoder alone")
        before = encoder_rate(m.corpus)
        runs = builds(m.corpus, MODEL, workers, args.work)
        say("the encoder alone, again")
        after = encoder_rate(m.corpus)
        print()
        print(table(f"Default model ({args.model} archive)", runs, [before, after]))
    if args.serve != "none":
        for size in args.serve.split(","):
            print()
            print(serving(size, [None if a == "default" else int(a) for a in args.actors.split(",")], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
