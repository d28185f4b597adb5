"""How the index scales: build, memory, disk, load, search, ask, date filters and adds, 100k to 1M sentences.

For each size, a synthetic archive (bench/synth.py: replicas of BBC News, AG News and SQuAD v1.1 dev
paragraphs, cached outside the repository) is indexed with `qa index --model none|<default model>`
in a child process, and beside it, in children of their own, one plain bm25s index over the same
sentences (bm25s.BM25 with the index's k1/b, qa.tokens.tokenize) and a fresh process that loads the
index with Retriever.load and asks ~300 questions (SQuAD v1.1 dev questions of odd-position titles,
BBC questions of eval/bbc_news.jsonl). Per question, in turn: `search` (k=10), bm25s scoring with
top-10 alone, `search` with a date filter covering the middle third of the archive's dates, and
`answer` (rules, no reader); so ratios are taken under the same load (the machine is shared).
Then the index is copied, the archive's 1,000 extra articles are added as one new file and the
incremental build is timed. With a model: FAISS alone (exact IndexFlatIP over the index's own
vectors), recall@10 of the index's own FAISS search against it, and the encoder's own rate against
the model's share of the build (model build wall s minus keyword-only build wall s).

CPU times are process_time (all threads) per call in the query process, and user + system time of
the whole child for builds (`qa index` start-up included; printed apart). Peak RSS comes from
os.wait4 of each child. Disk is the live generation's folder (CURRENT), hard-linked files once.

    nice -n 10 .venv/bin/python bench/scale.py [--sizes 100k,300k,1M] [--model none|default] [--quick]
        [--data ../shared/data] [--cache /tmp/qa-scale] [--work /tmp/qa-scale/work]

Prints a markdown table (copied into docs/benchmarks.md). Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth  # noqa: E402

K = 10
SQUAD_QUESTIONS, BBC_QUESTIONS = 250, 50
ENCODER_SAMPLE = 2_000
FALLBACK_BM25 = {"k1": 0.3, "b": 0.9}  # qa.index.BM25_PARAMS when this was written
FALLBACK_MODEL = "all-MiniLM-L6-v2"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- children, measured from outside -------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    cpu_s: float  # user + system of the child (and any children it waited for)
    wall_s: float
    peak_rss: int  # bytes
    returncode: int
    stdout: str
    stderr: str


def run_measured(cmd: list[str], logs: Path) -> Run:
    """Run cmd to completion with output in logs.{out,err}; its own rusage via os.wait4."""
    # The children import qa from this checkout, whatever the virtual environment has installed.
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    t0 = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss * 1024, proc.returncode,
               out.read_text(errors="replace"), err.read_text(errors="replace"))


def checked(run: Run, what: str) -> Run:
    if run.returncode != 0:
        raise SystemExit(f"{what} failed (exit {run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
    return run


def qa_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "qa"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qa.cli"]


def build(corpus: Path, index: Path, model: str, logs: Path) -> Run:
    """`qa index corpus --index index --model model` in a child."""
    cmd = [*qa_command(), "index", str(corpus), "--index", str(index), "--model", model]
    return checked(run_measured(cmd, logs), " ".join(cmd))


def child(kind: str, spec: dict, logs: Path) -> tuple[dict, Run]:
    """This script as a child (--child kind): its JSON answer and its Run."""
    run = checked(run_measured([sys.executable, __file__, "--child", kind, "--spec", json.dumps(spec)], logs),
                  f"the {kind} child")
    return json.loads(run.stdout.strip().splitlines()[-1]), run


# --- the index on disk, whatever its layout ------------------------------------------------------

def live_folder(index: Path) -> Path:
    """The live generation (qa.index.live_generation, else the folder CURRENT names), else index itself."""
    try:
        from qa.index import live_generation
        gen = live_generation(index)
    except (ImportError, AttributeError, OSError):
        gen = None
    if gen is None and (index / "CURRENT").is_file():
        named = index / (index / "CURRENT").read_text(encoding="utf-8").strip()
        gen = named if named.exists() else None
    return Path(gen) if gen is not None else index


def disk_bytes(folder: Path) -> int:
    """Bytes of the regular files under folder, each hard-linked file once."""
    seen, total = set(), 0
    for base, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(base, name))
            if os.path.isfile(os.path.join(base, name)) and not os.path.islink(os.path.join(base, name)) \
                    and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def held(index: Path, build_output: str) -> tuple[int, int]:
    """(sentences, articles) the index holds: its manifest, else what `qa index` printed."""
    try:
        from qa.index import read_manifest
        m = read_manifest(index)
        return int(m.sentences), int(m.articles)
    except Exception as e:  # the manifest's shape may change under this bench: fall back to the CLI's words
        found = re.search(r"([\d,]+) articles, ([\d,]+) sentences", build_output)
        if not found:
            raise SystemExit(f"cannot tell how many sentences {index} holds ({e}); output:\n{build_output[-2000:]}")
        return int(found[2].replace(",", "")), int(found[1].replace(",", ""))


def bm25_params(index: Path) -> dict:
    """k1 and b the index was built with."""
    try:
        from qa.index import BM25_PARAMS
        return {"k1": BM25_PARAMS["k1"], "b": BM25_PARAMS["b"]}
    except (ImportError, KeyError, TypeError):
        pass
    try:
        from qa.index import read_manifest
        bm = read_manifest(index).bm25
        return {"k1": bm["k1"], "b": bm["b"]}
    except Exception:  # no parameters to be found: the values tuned in docs/benchmarks.md
        return dict(FALLBACK_BM25)


def index_sentences(index: Path, corpus: Path) -> tuple[list[str], str]:
    """(the sentences the index holds, where they came from): its SQLite stores, else the corpus split
    with the project's splitter."""
    texts = []
    try:
        for db_file in sorted(live_folder(index).rglob("*.sqlite")):
            db = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            texts += [t for (t,) in db.execute("SELECT text FROM sentences")]
            db.close()
    except sqlite3.Error:
        texts = []
    if texts:
        return texts, "the index's store"
    from qa.sentences import load_splitter
    splitter = load_splitter()
    for file in sorted(corpus.glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            texts += [text[a:b] for a, b, _ in splitter.spans(text)]
    return texts, "the corpus, split again"


# --- child: one plain bm25s index ----------------------------------------------------------------

def child_bm25(spec: dict) -> dict:
    import bm25s

    from qa.tokens import tokenize
    texts, origin = index_sentences(Path(spec["index"]), Path(spec["corpus"]))
    c0, t0 = time.process_time(), time.perf_counter()
    bm = bm25s.BM25(**spec["params"])
    bm.index([tokenize(t) or [""] for t in texts], show_progress=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    bm.save(spec["out"], show_progress=False)
    return {"sentences": len(texts), "from": origin, "cpu_s": cpu, "wall_s": wall}


# --- child: load and ask -------------------------------------------------------------------------

def rss_now() -> int:
    """This process's resident set (bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summary(cpu: list[float], wall: list[float]) -> dict:
    return {"n": len(cpu), "cpu_p50": float(np.percentile(cpu, 50)), "cpu_p95": float(np.percentile(cpu, 95)),
            "wall_p50": float(np.percentile(wall, 50)), "wall_p95": float(np.percentile(wall, 95))}


def time_in_turn(calls: dict[str, Callable], inputs: list, errors: dict) -> dict[str, dict]:
    """Each call on each input, the calls taking turns per input (the first input once more, as a
    warm-up); ms of CPU and wall per call. A call that raises is dropped and its error kept."""
    cpu = {name: [] for name in calls}
    wall = {name: [] for name in calls}
    live = dict(calls)
    for i, x in enumerate([inputs[0], *inputs]):
        for name, fn in list(live.items()):
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                fn(x)
            except Exception as e:  # an API changed under the bench: report it, measure the rest
                errors[name] = f"{type(e).__name__}: {e}"
                del live[name]
                continue
            if i:
                cpu[name].append(1000 * (time.process_time() - c0))
                wall[name].append(1000 * (time.perf_counter() - t0))
    return {name: summary(cpu[name], wall[name]) for name in calls if cpu[name]}


def bm25_top(bm, tokenize, question: str) -> np.ndarray:
    """Positions of the K best sentences by plain bm25s scores."""
    tokens = tokenize(question)
    if not tokens:
        return np.zeros(0, dtype=np.int64)
    scores = bm.get_scores(tokens)
    k = min(K, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def child_query(spec: dict) -> dict:
    import bm25s

    from qa.answer import answer
    from qa.retrieve import Retriever
    from qa.tokens import tokenize
    questions = json.loads(Path(spec["questions"]).read_text(encoding="utf-8"))
    errors: dict[str, str] = {}
    out: dict = {"rss_imports": rss_now()}
    c0, t0 = time.process_time(), time.perf_counter()
    r = Retriever.load(spec["index"])
    out |= {"load_cpu_s": time.process_time() - c0, "load_wall_s": time.perf_counter() - t0,
            "rss_after_load": rss_now()}
    bm = bm25s.BM25.load(spec["bm25"], show_progress=False)
    since, until = spec["since"], spec["until"]
    out["calls"] = time_in_turn({
        "search": lambda q: r.search(q, k=K),
        "bm25s": lambda q: bm25_top(bm, tokenize, q),
        "search_dated": lambda q: r.search(q, k=K, since=since, until=until),
        "ask": lambda q: answer(r, q),
    }, questions, errors)
    if spec["model"] != "none":
        try:
            out["dense"] = dense_measures(r, spec, questions, errors)
        except Exception as e:  # report what broke; the keyword rows still stand
            errors["dense"] = f"{type(e).__name__}: {e}"
    out["errors"] = errors
    return out


def find_faiss(obj, depth: int = 8) -> list[tuple[object, object]]:
    """(faiss index, the object holding it) for every FAISS index reachable from obj's attributes,
    lists and dicts (a segmented index holds one per segment, in shards: Retriever -> Local ->
    Shard -> Segment)."""
    import faiss
    if isinstance(obj, dict):
        children = obj.values() if len(obj) <= 1000 else ()  # a vocabulary, not a list of parts
    elif isinstance(obj, (list, tuple)):
        children = obj if len(obj) <= 1000 else ()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = vars(obj).values()
    else:
        children = ()
    found = []
    for value in children:
        if isinstance(value, faiss.Index):
            found.append((value, obj))
        elif depth > 1 and not isinstance(value, (str, bytes, np.ndarray, int, float)):
            found += find_faiss(value, depth - 1)
    return found


def own_vectors(index, owner) -> np.ndarray:
    """(n, d) float32 the index was built from: an array beside it, else reconstructed from it."""
    n, d = index.ntotal, index.d
    for value in (vars(owner).values() if hasattr(owner, "__dict__") else ()):
        if isinstance(value, np.ndarray) and value.shape == (n, d):
            return np.ascontiguousarray(value, dtype=np.float32)
    return index.reconstruct_n(0, n)


def merged_top(results: list[tuple[np.ndarray, np.ndarray]]) -> set[tuple[int, int]]:
    """The K best (part, row) over every part's (scores, ids) of one query."""
    pool = [(float(s), p, int(i)) for p, (scores, ids) in enumerate(results) for s, i in zip(scores, ids) if i >= 0]
    return {(p, i) for _, p, i in sorted(pool, reverse=True)[:K]}


def dense_measures(r, spec: dict, questions: list[str], errors: dict) -> dict:
    """FAISS alone (exact) and the index's own FAISS search on the same query vectors, recall@10 of
    the latter, and the encoder's own rate."""
    import faiss
    encoder = getattr(r, "encoder", None)
    if encoder is None:
        from qa.embed import load_encoder
        encoder = load_encoder(spec["model"])
    qv = encoder.encode_queries(questions)
    parts = find_faiss(r)
    if not parts:
        raise RuntimeError("no FAISS index found in the loaded Retriever")
    exact = []
    for index, owner in parts:
        flat = faiss.IndexFlatIP(index.d)
        flat.add(own_vectors(index, owner))
        exact.append(flat)
    got = {"exact": [], "own": []}
    calls = {"faiss_exact": lambda i: got["exact"].append([(s[0], ids[0]) for s, ids in
                                                           (f.search(qv[i:i + 1], K) for f in exact)]),
             "faiss_own": lambda i: got["own"].append([(s[0], ids[0]) for s, ids in
                                                       (ix.search(qv[i:i + 1], K) for ix, _ in parts)])}
    out = {"calls": time_in_turn(calls, list(range(len(questions))), errors), "parts": len(parts),
           "kinds": sorted({type(ix).__name__ for ix, _ in parts}), "vectors": sum(ix.ntotal for ix, _ in parts)}
    pairs = list(zip(got["exact"][1:], got["own"][1:]))  # the first of each is the warm-up
    out["recall_at_10"] = float(np.mean([len(merged_top(e) & merged_top(o)) / max(1, len(merged_top(e)))
                                         for e, o in pairs]))
    texts, _ = index_sentences(Path(spec["index"]), Path(spec["corpus"]))
    sample = texts[::max(1, len(texts) // ENCODER_SAMPLE)][:ENCODER_SAMPLE]
    t0 = time.perf_counter()
    encoder.encode_documents(sample)
    out["encoder_rate"] = len(sample) / (time.perf_counter() - t0)
    return out


# --- the parent: one size after another ----------------------------------------------------------

def load_questions(data: Path, seed: int) -> list[str]:
    """SQuAD v1.1 dev questions of the odd-position titles (sorted), sampled, then BBC questions."""
    squad = json.load(gzip.open(data / "squad" / "dev-v1.1.json.gz", "rt", encoding="utf-8"))["data"]
    odd = set(sorted(a["title"] for a in squad)[1::2])
    pool = [q["question"] for a in squad if a["title"] in odd for p in a["paragraphs"] for q in p["qas"]]
    questions = random.Random(seed).sample(pool, min(SQUAD_QUESTIONS, len(pool)))
    bbc = ROOT / "eval" / "bbc_news.jsonl"
    if bbc.exists():
        lines = [json.loads(line) for line in bbc.read_text(encoding="utf-8").splitlines() if line.strip()]
        questions += [q["question"] for q in lines][:BBC_QUESTIONS]
    return questions


def link_corpus(archive: synth.Archive, folder: Path) -> Path:
    """folder holding the archive's corpus files as hard links (the add puts one more file beside them)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for file in sorted(archive.corpus.glob("*.jsonl")):
        try:
            os.link(file, folder / file.name)
        except OSError:  # another file system
            shutil.copyfile(file, folder / file.name)
    return folder


def startup(archive: synth.Archive, work: Path) -> Run:
    """`qa index` of a one-article corpus: what every build pays before reading anything."""
    tiny = work / "tiny"
    shutil.rmtree(tiny, ignore_errors=True)
    (tiny / "corpus").mkdir(parents=True)
    first = next(iter(sorted(archive.corpus.glob("*.jsonl")))).open(encoding="utf-8").readline()
    (tiny / "corpus" / "one.jsonl").write_text(first, encoding="utf-8")
    return build(tiny / "corpus", tiny / "index", "none", tiny / "build")


def add_1k(index: Path, corpus: Path, extra: Path, model: str, work: Path) -> dict:
    """Copy the index, add the extra articles as one new corpus file, time the incremental build."""
    copy = work / f"{index.name}-add"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(index, copy, symlinks=True)
    added = corpus / "add-1k.jsonl"
    try:
        os.link(extra, added)
    except OSError:
        shutil.copyfile(extra, added)
    try:
        run = build(corpus, copy, model, work / f"{index.name}-add")
        sentences, _ = held(copy, run.stdout)
        disk = disk_bytes(live_folder(copy))
    finally:
        added.unlink()
        shutil.rmtree(copy, ignore_errors=True)
    return {"cpu_s": run.cpu_s, "wall_s": run.wall_s, "peak_rss": run.peak_rss, "sentences": sentences,
            "disk": disk}


def measure(size: int, args, model: str, questions: Path, start_run: Run) -> dict:
    archive = synth.ensure_archive(size, args.data, args.cache, args.seed, log=say)
    work = args.work
    corpus = link_corpus(archive, work / f"corpus-{size}")
    index = work / f"index-{size}"
    res: dict = {"size": size, "archive": archive.meta, "startup_peak_rss": start_run.peak_rss}
    if model != "none":
        say(f"{size:,}: keyword-only build, for the model's share of the build")
        shutil.rmtree(work / f"index-{size}-kw", ignore_errors=True)
        kw = build(corpus, work / f"index-{size}-kw", "none", work / f"build-{size}-kw")
        res["kw_build"] = {"cpu_s": kw.cpu_s, "wall_s": kw.wall_s, "peak_rss": kw.peak_rss}
        shutil.rmtree(work / f"index-{size}-kw", ignore_errors=True)
    say(f"{size:,}: qa index --model {model}")
    shutil.rmtree(index, ignore_errors=True)
    run = build(corpus, index, model, work / f"build-{size}")
    res["build"] = {"cpu_s": run.cpu_s, "wall_s": run.wall_s, "peak_rss": run.peak_rss}
    res["sentences"], res["articles"] = held(index, run.stdout)
    res["disk"] = disk_bytes(live_folder(index))
    say(f"{size:,}: {res['sentences']:,} sentences in {run.cpu_s:.0f} CPU s; plain bm25s index")
    out = work / f"bm25-{size}"
    shutil.rmtree(out, ignore_errors=True)
    res["bm25"], bm_run = child("bm25", {"index": str(index), "corpus": str(corpus), "out": str(out),
                                         "params": bm25_params(index)}, work / f"bm25-{size}")
    res["bm25"]["peak_rss"] = bm_run.peak_rss
    say(f"{size:,}: load and ask")
    since, until = archive.meta["middle_third"]
    res["query"], _ = child("query", {"index": str(index), "corpus": str(corpus), "bm25": str(out),
                                      "questions": str(questions), "since": since, "until": until,
                                      "model": model}, work / f"query-{size}")
    shutil.rmtree(out, ignore_errors=True)
    say(f"{size:,}: add 1,000 articles")
    res["add"] = add_1k(index, corpus, archive.extra, model, work)
    return res


# --- the table -----------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def call(res: dict, name: str, key: str) -> float | None:
    """A timing of the query child: search, bm25s, search_dated, ask, faiss_exact, faiss_own."""
    calls = {**res["query"].get("calls", {}), **(res["query"].get("dense") or {}).get("calls", {})}
    return calls.get(name, {}).get(key)


def ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or not b else f" ({a / b:.1f}×)"


def rows(model: str) -> list[tuple[str, Callable[[dict], str]]]:
    mib = 2**20
    out = [
        ("sentences held (articles)", lambda r: f"{r['sentences']:,} ({r['articles']:,})"),
        ("build CPU s (× plain bm25s index)",
         lambda r: fmt(r["build"]["cpu_s"], 0) + ratio(r["build"]["cpu_s"], r["bm25"]["cpu_s"])),
        ("build wall s", lambda r: fmt(r["build"]["wall_s"], 0)),
        ("plain bm25s index CPU s (tokenize + index)", lambda r: fmt(r["bm25"]["cpu_s"], 1)),
        ("peak RSS while building, MiB (B/sentence; B/sentence above start-up)",
         lambda r: f"{r['build']['peak_rss'] / mib:,.0f} ({r['build']['peak_rss'] / r['sentences']:,.0f}; "
                   f"{(r['build']['peak_rss'] - r['startup_peak_rss']) / r['sentences']:,.0f})"),
        ("peak RSS of the plain bm25s child, MiB", lambda r: fmt(r["bm25"]["peak_rss"] / mib, 0)),
        ("disk B/sentence (live generation MB)",
         lambda r: f"{r['disk'] / r['sentences']:,.0f} ({r['disk'] / 1e6:,.0f})"),
        ("`Retriever.load` wall s (CPU s)",
         lambda r: f"{r['query']['load_wall_s']:.2f} ({r['query']['load_cpu_s']:.2f})"),
        ("RSS after load, MiB (after imports)",
         lambda r: f"{r['query']['rss_after_load'] / mib:,.0f} ({r['query']['rss_imports'] / mib:,.0f})"),
        ("`search` p50 CPU ms (× bm25s scoring + top-10 alone)",
         lambda r: fmt(call(r, "search", "cpu_p50")) + ratio(call(r, "search", "cpu_p50"),
                                                             call(r, "bm25s", "cpu_p50"))),
        ("`search` p95 CPU ms", lambda r: fmt(call(r, "search", "cpu_p95"))),
        ("`search` p50 / p95 wall ms",
         lambda r: f"{fmt(call(r, 'search', 'wall_p50'))} / {fmt(call(r, 'search', 'wall_p95'))}"),
        ("bm25s scoring + top-10 alone p50 CPU ms", lambda r: fmt(call(r, "bm25s", "cpu_p50"), 2)),
        ("`ask` p50 CPU ms (rules, k=5)", lambda r: fmt(call(r, "ask", "cpu_p50"))),
        ("date filter (middle third): `search` p50 CPU ms (extra)",
         lambda r: fmt(call(r, "search_dated", "cpu_p50")) + extra_ms(r)),
        ("add 1k articles: CPU s (× full build)",
         lambda r: fmt(r["add"]["cpu_s"], 1) + f" ({r['add']['cpu_s'] / r['build']['cpu_s']:.2f}×)"),
        ("add 1k articles: wall s; sentences after", lambda r: f"{r['add']['wall_s']:.1f}; {r['add']['sentences']:,}"),
    ]
    if model != "none":
        out += [
            ("keyword-only build wall s (same corpus)", lambda r: fmt(r["kw_build"]["wall_s"], 0)),
            ("FAISS exact search alone p50 CPU ms", lambda r: fmt(call(r, "faiss_exact", "cpu_p50"), 2)),
            ("index's own FAISS search p50 CPU ms", lambda r: fmt(call(r, "faiss_own", "cpu_p50"), 2)),
            ("dense recall@10 of the index's FAISS vs exact", lambda r: fmt(dense(r).get("recall_at_10"), 3)),
            ("encoder alone, sentences/s (2,000 sentences)", lambda r: fmt(dense(r).get("encoder_rate"), 0)),
            ("build's model share, sentences/s (× encoder alone)", embed_rate),
        ]
    return out


def dense(res: dict) -> dict:
    return res["query"].get("dense") or {}


def extra_ms(res: dict) -> str:
    a, b = call(res, "search_dated", "cpu_p50"), call(res, "search", "cpu_p50")
    return "" if a is None or b is None else f" ({a - b:+.1f})"


def embed_rate(res: dict) -> str:
    share = res["build"]["wall_s"] - res["kw_build"]["wall_s"]
    if share <= 0:
        return "n/a"
    rate = res["sentences"] / share
    own = dense(res).get("encoder_rate")
    return fmt(rate, 0) + (f" ({rate / own:.2f}×)" if own else "")


def table(results: list[dict], model: str) -> str:
    head = "| | " + " | ".join(f"{synth_label(r['size'])}" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for label, cell in rows(model):
        values = []
        for r in results:
            try:
                values.append(cell(r))
            except (KeyError, TypeError, ZeroDivisionError):
                values.append("n/a")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def synth_label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else f"{size:,}"


def header(results: list[dict], model: str, start_run: Run, n_questions: int, load0: float) -> str:
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        commit = (git("rev-parse", "--short", "HEAD") or "? (not a git checkout)") + \
            (" with uncommitted changes in qa/" if git("status", "--porcelain", "--", "qa") else "")
    except OSError:
        commit = "?"
    a = results[0]["archive"]
    return (f"Commit {commit}; {os.cpu_count()} CPU cores, load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; model {model}; splitter {a['splitter']}; "
            f"{n_questions} questions, search k={K}; date filter {a['middle_third'][0]}..{a['middle_third'][1]}. "
            f"`qa index` start-up (a one-article corpus): {start_run.cpu_s:.1f} CPU s, "
            f"peak RSS {start_run.peak_rss / 2**20:.0f} MiB.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,300k,1M", help="sentence counts, comma-separated")
    parser.add_argument("--model", default="none", help="none (keyword-only), default, or a model name")
    parser.add_argument("--quick", action="store_true", help="one 20k archive: a smoke run")
    parser.add_argument("--data", type=Path, default=synth.DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=synth.DEFAULT_CACHE, help="where archives are kept")
    parser.add_argument("--work", type=Path, default=synth.DEFAULT_CACHE / "work", help="indexes and logs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"bm25": child_bm25, "query": child_query}[args.child](json.loads(args.spec))))
        return 0
    if (need := synth.missing_data(args.data)) is not None:
        print(f"skipped: {need} not found (see ../shared/data/SOURCES.md)")
        return 0
    for folder in (args.cache, args.work):
        if folder.resolve().is_relative_to(ROOT):
            raise SystemExit(f"{folder} is inside the repository; the data may not be copied there")
    model = args.model
    if model == "default":
        try:
            from qa.embed import DEFAULT_MODEL as model
        except ImportError:
            model = FALLBACK_MODEL
    sizes = [20_000] if args.quick else [synth.parse_size(s) for s in args.sizes.split(",")]
    load0 = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    questions = load_questions(args.data, args.seed)
    qfile = args.work / "questions.json"
    qfile.write_text(json.dumps(questions), encoding="utf-8")
    start_run = startup(synth.ensure_archive(sizes[0], args.data, args.cache, args.seed, log=say), args.work)
    results = [measure(size, args, model, qfile, start_run) for size in sizes]
    (args.work / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(header(results, model, start_run, len(questions), load0))
    print(table(results, model))
    for r in results:
        for name, error in {**r["query"].get("errors", {})}.items():
            print(f"\n{synth_label(r['size'])}: {name} not measured: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
