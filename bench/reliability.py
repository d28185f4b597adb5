"""Acceptance runs for "nothing lost" (issue 10): concurrent builds, builds racing uploads, SIGKILLs, bad files.

    .venv/bin/python bench/reliability.py [--races 10] [--upload-races 5] [--kills 5]

Everything runs in a temporary folder, through the real `qa` command and `qa serve` (keyword-only,
--model none: what is tested is the writing, not the search). The corpus is the default one plus
400 made-up articles, so that a build lasts long enough to be raced and killed. Prints one line
per run and the totals; exits 1 if any run lost data or left the index unusable.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.answer import answer  # noqa: E402
from qa.articles import load_corpus  # noqa: E402
from qa.index import generation_name  # noqa: E402
from qa.retrieve import Retriever  # noqa: E402

QA = [sys.executable, "-m", "qa.cli"]
SCHOOL = "Which school was hit with cluster munitions?"
THINGS = "bridge harbour school market bakery tram library stadium clinic ferry".split()


def town(i: int, rng: random.Random) -> str:
    return " ".join(f"The {rng.choice(THINGS)} of Town{i} reopened in {2000 + rng.randrange(20)} after "
                    f"{rng.randrange(2, 90)} days." for _ in range(6))


def make_corpus(folder: Path, n: int) -> Path:
    shutil.copytree(ROOT / "corpus", folder)
    rng = random.Random(0)
    for i in range(n):
        (folder / f"town{i:04d}.txt").write_text(f"title: Town {i}\n\n{town(i, rng)}\n", encoding="utf-8")
    return folder


def upload_file(path: Path, first: int, n: int = 300) -> Path:
    rng = random.Random(first)
    path.write_text("".join(json.dumps({"id": f"up{first + i:05d}", "text": town(first + i, rng)}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def orphans(index: Path) -> int:
    keep = {generation_name(index), (index / "PREVIOUS").read_text().strip() if (index / "PREVIOUS").exists() else ""}
    return len({p.name for p in index.glob("gen-*")} - keep)


def answers(index: Path) -> bool:
    return not answer(Retriever.load(index), SCHOOL).abstained


def consistent(corpus: Path, index: Path) -> bool:
    """Every article in the corpus folder is in the index, and nothing else from it."""
    return {a.id for a in load_corpus(corpus).articles} == set(Retriever.load(index).article_ids)


def qa_index(corpus: Path, index: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*QA, "index", str(corpus), "--index", str(index), "--model", "none", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Server:
    def __init__(self, corpus: Path, index: Path, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(log, "a")
        self.proc = subprocess.Popen([*QA, "serve", "--corpus", str(corpus), "--index", str(index), "--model", "none",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        from gradio_client import Client
        for _ in range(300):
            try:
                self.client = Client(f"http://127.0.0.1:{self.port}/", verbose=False)
                return
            except Exception:  # not up yet
                if self.proc.poll() is not None:
                    raise SystemExit(f"qa serve exited with {self.proc.returncode}; see {log}")
                time.sleep(0.5)
        raise SystemExit("qa serve did not come up")

    def upload(self, path: Path):
        from gradio_client import handle_file
        return self.client.submit([handle_file(str(path))], api_name="/on_upload")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def races(work: Path, runs: int) -> int:
    corpus, index = make_corpus(work / "races", 400), work / "races-index"
    failures = 0
    for run in range(runs):
        (corpus / f"new{run}.txt").write_text(f"title: New {run}\n\nThe bakery of Newtown{run} opened on Monday.")
        procs = [qa_index(corpus, index, *(("--rebuild",) if run % 2 and k else ())) for k in range(2)]
        outs = [p.communicate() for p in procs]
        codes = [p.returncode for p in procs]
        waited = sum("waiting for another build" in err for _, err in outs)
        ok = codes == [0, 0] and answers(index) and consistent(corpus, index) and not orphans(index)
        failures += not ok
        print(f"  race {run + 1}: exit codes {codes}, {waited} waited, index answers and holds the corpus: "
              f"{ok}, orphans {orphans(index)}", flush=True)
    return failures


def upload_races(work: Path, runs: int) -> int:
    corpus, index = make_corpus(work / "upraces", 400), work / "upraces-index"
    server = Server(corpus, index, work / "upraces-server.log")
    failures = 0
    try:
        for run in range(runs):
            (corpus / f"cli{run}.txt").write_text(f"title: CLI {run}\n\nThe tram of Clitown{run} ran again on Friday.")
            job = server.upload(upload_file(work / f"race{run}.jsonl", 10_000 * (run + 1)))
            time.sleep(random.uniform(0, 0.5))
            cli = qa_index(corpus, index)
            _, err = cli.communicate()
            status = job.result()[0]
            added = "Added" in status
            ok = cli.returncode == 0 and added and answers(index) and consistent(corpus, index)
            failures += not ok
            print(f"  upload race {run + 1}: qa index exit {cli.returncode}, upload added: {added}, index "
                  f"answers and holds the corpus (CLI's file and the upload): {ok}", flush=True)
    finally:
        server.stop()
    return failures


def build_kills(work: Path, runs: int) -> int:
    corpus, index = make_corpus(work / "kills", 400), work / "kills-index"
    qa_index(corpus, index).communicate()
    before = Retriever.load(index)
    expected = [h.passage.sentence_id for h in before.search(SCHOOL)]
    t0 = time.monotonic()
    qa_index(corpus, index, "--rebuild").communicate()
    full = time.monotonic() - t0
    failures = 0
    for run in range(runs):
        proc = qa_index(corpus, index, "--rebuild")
        delay = random.uniform(0, full)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered = [h.passage.sentence_id for h in Retriever.load(index).search(SCHOOL)] == expected
        (corpus / f"after{run}.txt").write_text(f"title: After {run}\n\nThe clinic of Aftertown{run} closed.")
        code = qa_index(corpus, index).wait()
        ok = answered and code == 0 and not orphans(index) and consistent(corpus, index)
        failures += not ok
        print(f"  build kill {run + 1} at {delay:.1f} s of {full:.1f} s: index answered as before: {answered}; "
              f"next qa index exit {code}, orphans {orphans(index)}, holds the corpus: {ok}", flush=True)
    return failures


LONG_FLUSH = 1_000  # sentences per segment in long_build_kills: a short build writes and publishes a dozen


def long_build_kills(work: Path, runs: int) -> int:
    """A build of 2,000 more articles (12,026 sentences, a segment published every 1,000), SIGKILLed
    and run again, again and again; once everything is in, 500 more articles come, so that each run
    has work to be killed in. Each time, what was published answers and holds each article once; at
    the end, one more run completes the corpus into what one uninterrupted build makes of it."""
    corpus, index = make_corpus(work / "long", 2000), work / "long-index"
    command = [sys.executable, "-c", f"import sys; from qa import cli, index; index.FLUSH_SENTENCES = {LONG_FLUSH}; "
               "sys.exit(cli.main(sys.argv[1:]))", "index", str(corpus), "--model", "none", "--index"]
    t0 = time.monotonic()
    subprocess.run([*command, str(work / "long-timing")], capture_output=True, check=True)
    full = time.monotonic() - t0
    failures, rng, added = 0, random.Random(1), 0
    for run in range(runs):
        corpus_ids = {a.id for a in load_corpus(corpus).articles}
        if generation_name(index) and set(Retriever.load(index).article_ids) == corpus_ids:
            for i in range(500):  # all in: more work for the next run to be killed in
                n = 10_000 + added + i
                (corpus / f"more{n}.txt").write_text(f"title: Town {n}\n\n{town(n, rng)}\n", encoding="utf-8")
            added += 500
            corpus_ids = {a.id for a in load_corpus(corpus).articles}
        proc = subprocess.Popen([*command, str(index)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = random.uniform(0.5, full)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not generation_name(index):
            print(f"  long build kill {run + 1} at {delay:.1f} s of {full:.1f} s: nothing published yet", flush=True)
            continue
        ids = Retriever.load(index).article_ids
        ok = len(ids) == len(set(ids)) and set(ids) <= corpus_ids and answers(index)
        failures += not ok
        print(f"  long build kill {run + 1} at {delay:.1f} s of {full:.1f} s: {len(set(ids)):,} of {len(corpus_ids):,} "
              f"articles published, each once, and it answers: {ok}", flush=True)
    code = subprocess.run([*command, str(index)], capture_output=True).returncode
    subprocess.run([*command, str(work / "long-whole")], capture_output=True, check=True)
    ok = code == 0 and consistent(corpus, index) and not orphans(index) and \
        Retriever.load(index).manifest.sentences == Retriever.load(work / "long-whole").manifest.sentences
    failures += not ok
    print(f"  then qa index once more: exit {code}; holds the corpus ({len(corpus_ids):,} articles), no orphans, "
          f"the sentences of one uninterrupted build: {ok}", flush=True)
    return failures


def upload_kills(work: Path, runs: int) -> int:
    corpus, index = make_corpus(work / "upkills", 400), work / "upkills-index"
    failures, landed = 0, 0
    for run in range(runs):
        server = Server(corpus, index, work / "upkills-server.log")
        delay = random.uniform(0, 2.0)
        server.upload(upload_file(work / f"kill{run}.jsonl", 100_000 * (run + 1)))
        time.sleep(delay)
        server.kill()
        staged = (corpus / ".staging").exists()
        restarted = Server(corpus, index, work / "upkills-server.log")  # indexes the corpus, drops staged files
        restarted.stop()
        in_corpus = any(f.name.startswith(f"kill{run}") for f in corpus.iterdir())
        in_index = f"up{100_000 * (run + 1):05d}" in Retriever.load(index).article_ids
        ok = in_corpus == in_index and consistent(corpus, index) and not (corpus / ".staging").exists() \
            and not orphans(index)
        landed += in_corpus
        failures += not ok
        print(f"  upload kill {run + 1} at {delay:.1f} s: staged files when killed: {staged}; after restart in "
              f"corpus {in_corpus}, in index {in_index}; consistent, nothing staged, no orphans: {ok}", flush=True)
    print(f"  uploads that landed: {landed} of {runs} (a kill after publishing lands, before it does not)")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--races", type=int, default=10)
    p.add_argument("--upload-races", type=int, default=5)
    p.add_argument("--kills", type=int, default=5, help="builds killed, and as many uploads killed")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    failures = {}
    print(f"two qa index at once, {args.races} runs:", flush=True)
    failures["races"] = races(work, args.races)
    print(f"qa index racing a chat upload, {args.upload_races} runs:", flush=True)
    failures["upload races"] = upload_races(work, args.upload_races)
    print(f"SIGKILL during qa index --rebuild, {args.kills} runs:", flush=True)
    failures["build kills"] = build_kills(work, args.kills)
    print(f"SIGKILL during a long qa index, run again each time, {2 * args.kills} runs:", flush=True)
    failures["long build kills"] = long_build_kills(work, 2 * args.kills)
    print(f"SIGKILL of qa serve during an upload, {args.kills} runs:", flush=True)
    failures["upload kills"] = upload_kills(work, args.kills)
    print("failed runs: " + ", ".join(f"{k} {v}" for k, v in failures.items()))
    if any(failures.values()):
        print(f"kept {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
