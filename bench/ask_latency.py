"""How long `Assistant.ask` takes over a whole archive: search alone, the reader, the whole answer.

Asks every question of a set (default eval/bbc_news.jsonl) against an index (default: BBC News
indexed with the default model into --work), one at a time, after one warm-up question; prints
p50 / p95 wall time and CPU time per question for search only, and for ask with and without the
reader, measured in the same run (the machine is shared: compare the rows, not runs).

    python bench/ask_latency.py [--index DIR] [--set eval/bbc_news.jsonl] [--data ../shared/data] [--work DIR]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.answer import Assistant  # noqa: E402
from qa.evaluate import load_set  # noqa: E402


def timed(fn, questions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(wall ms, CPU ms) per question."""
    fn(questions[0])
    wall, cpu = [], []
    for q in questions:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(q)
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
    return np.array(wall), np.array(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="an index to ask (default: build BBC News into --work)")
    parser.add_argument("--set", type=Path, default=ROOT / "eval" / "bbc_news.jsonl")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/qa-ask-latency"))
    args = parser.parse_args(argv)
    index = args.index
    if index is None:
        csv_gz = args.data / "news" / "bbc-news.csv.gz"
        if not csv_gz.exists():
            print(f"skipped: {csv_gz} not found (see ../shared/data/SOURCES.md)")
            return 0
        from qa.cli import index_corpus
        args.work.mkdir(parents=True, exist_ok=True)
        with gzip.open(csv_gz, "rb") as src, open(args.work / "bbc-news.csv", "wb") as dst:
            shutil.copyfileobj(src, dst)
        index = args.work / "index"
        index_corpus(str(args.work / "bbc-news.csv"), str(index), progress=False)
    questions = [i.question for i in load_set(args.set)]
    a = Assistant.load(index)
    rules = Assistant(a.retriever, None)
    m = a.retriever.manifest
    print(f"{m.articles:,} articles, {m.sentences:,} sentences, {a.retriever.mode}; {len(questions)} questions "
          f"from {args.set.name}; reader re-scores the top {a.policy.rerank}\n")
    print("| step | wall p50 ms | wall p95 ms | CPU p50 ms | CPU p95 ms |\n|---|---|---|---|---|")
    for name, fn in (("search (k=12)", lambda q: a.search(q, k=a.policy.rerank)),
                     ("ask, rules (no reader)", rules.ask), ("ask, reader", a.ask)):
        wall, cpu = timed(fn, questions)
        print(f"| {name} | {np.percentile(wall, 50):.0f} | {np.percentile(wall, 95):.0f} | "
              f"{np.percentile(cpu, 50):.0f} | {np.percentile(cpu, 95):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
