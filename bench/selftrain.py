"""What self-training costs and how big a corpus it needs.

Cost: qa.selftrain.train with the default Training on 10k, 50k and 200k sentences, each in a fresh
process: seconds, the process's peak memory, and what it adds to an index (the model folder, the
vectors and the FAISS index). The sentences are BBC News articles, then SQuAD v1.1 dev paragraphs,
then AG News test rows, repeated from the start when more are needed (about 62k are distinct).

Minimum size: indexes of growing subsets of BBC News, each holding the articles of
eval/bbc_paraphrase.jsonl plus others in a fixed random order, self-trained with no minimum; the
paraphrase questions searched hybrid against keyword-only on each. Subsets smaller than the
questions' articles (about 1,700 sentences) hold some of those articles and ask only their questions.

    python bench/selftrain.py [--data ../shared/data] [--sizes 10000,50000,200000] [--no-minimum]

Prints markdown (copied into docs/benchmarks.md). Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.articles import LoadResult, load_corpus  # noqa: E402
from qa.sentences import load_splitter  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
PARAPHRASES = ROOT / "eval" / "bbc_paraphrase.jsonl"
MINIMUM_SIZES = (500, 1_000, 2_000, 3_500, 5_000, 7_500, 10_000, 20_000, None)  # None: the whole corpus


def source_documents(data: Path, work: Path) -> list[dict]:
    """[{"title", "sentences"}] from BBC News, SQuAD v1.1 dev and AG News test, split by the project's splitter."""
    splitter = load_splitter()
    docs = []
    bbc = work / "bbc-news.csv"
    with gzip.open(data / "news" / "bbc-news.csv.gz", "rb") as src:
        bbc.write_bytes(src.read())
    for a in load_corpus(bbc).articles:
        docs.append({"title": a.title, "sentences": [s.text for s in splitter.split(a.id, a.text)]})
    squad = json.load(gzip.open(data / "squad" / "dev-v1.1.json.gz", "rt", encoding="utf-8"))["data"]
    for art in squad:
        for p in art["paragraphs"]:
            docs.append({"title": "", "sentences": [s.text for s in splitter.split("p", p["context"])]})
    ag = data / "news" / "ag_news" / "test.csv.gz"
    if ag.exists():
        for _, title, text in csv.reader(io.StringIO(gzip.open(ag, "rt", encoding="utf-8").read())):
            docs.append({"title": title, "sentences": [s.text for s in splitter.split("ag", text.replace("\\", " "))]})
    return docs


def take(docs: list[dict], n: int) -> list[dict]:
    """Whole documents, repeated from the start if need be, until exactly n sentences."""
    out, total, i = [], 0, 0
    while total < n:
        d = docs[i % len(docs)]
        s = d["sentences"][:n - total]
        out.append({"title": d["title"], "sentences": s})
        total += len(s)
        i += 1
    return out


def cost_one(docs_file: Path, n: int, out_dir: Path) -> dict:
    """Train on n sentences in this process and measure it (run as a child: --cost-one)."""
    import faiss
    import numpy as np

    from qa.index import _faiss_index
    from qa.selftrain import Document, load, save, train

    docs = take(json.loads(docs_file.read_text(encoding="utf-8")), n)
    documents = [Document(d["title"], tuple(d["sentences"])) for d in docs]
    import torch  # noqa: F401  (imported before the baseline, as `qa index` has it loaded)
    from sentence_transformers import SentenceTransformer  # noqa: F401

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    model, info = train(documents, progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    save(model, info, out_dir / "model")
    texts = [s for d in docs for s in d["sentences"]]
    t1 = time.perf_counter()
    vectors = load(out_dir / "model").encode_documents(texts, batch_size=1024)
    encode_s = time.perf_counter() - t1
    np.save(out_dir / "vectors.npy", vectors)
    faiss.write_index(_faiss_index(vectors), str(out_dir / "dense.faiss"))
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return {"sentences": len(texts), "pairs": info["pairs"], "epochs": info["epochs"], "vocab": info["vocab"],
            "train_s": round(seconds, 1), "encode_s": round(encode_s, 1), "peak_gib": round(peak, 2),
            "baseline_gib": round(base, 2), "model_mb": round(size(out_dir / "model") / 1e6, 1),
            "vectors_mb": round(size(out_dir / "vectors.npy") / 1e6, 1),
            "faiss_mb": round(size(out_dir / "dense.faiss") / 1e6, 1), "device": info["device"]}


def cost_table(docs_file: Path, sizes: list[int], work: Path, out: list[str]) -> None:
    rows = ["| sentences | pairs | epochs | vocabulary | training s | peak memory GiB (after imports) | "
            "model MB | vectors.npy MB | dense.faiss MB | embedding s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        d = work / f"cost-{n}"
        d.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, __file__, "--cost-one", str(n), "--docs", str(docs_file),
                               "--out", str(d)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"cost run for {n} sentences failed:\n{done.stderr[-3000:]}")
        c = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(f"| {c['sentences']:,} | {c['pairs']:,} | {c['epochs']} | {c['vocab']:,} | {c['train_s']} | "
                    f"{c['peak_gib']} ({c['baseline_gib']}) | {c['model_mb']} | {c['vectors_mb']} | {c['faiss_mb']} | "
                    f"{c['encode_s']} |")
        print(f"  {n}: {c}", file=sys.stderr)
    out += ["## Cost of self-training\n", f"Machine: {os.cpu_count()} CPU cores, device {c['device']}; "
            f"load average at the end {os.getloadavg()[0]:.1f}.\n", *rows, ""]


def minimum_table(data: Path, work: Path, out: list[str]) -> None:
    from qa.index import build_index
    from qa.metrics import mrr, recall_at
    from qa.retrieve import Retriever
    from qa.selftrain import Training

    splitter = load_splitter()
    csv_path = work / "bbc-news.csv"
    loaded = load_corpus(csv_path)
    by_id = {a.id: a for a in loaded.articles}
    counts = {a.id: len(splitter.spans(a.text)) for a in loaded.articles}
    questions = [json.loads(line) for line in PARAPHRASES.read_text(encoding="utf-8").splitlines()]
    gold_ids = sorted({q["article_id"] for q in questions})
    others = sorted(set(by_id) - set(gold_ids))
    random.Random(0).shuffle(others)
    shuffled_gold = list(gold_ids)
    random.Random(0).shuffle(shuffled_gold)
    rows = ["| sentences | articles | questions | keyword-only MRR@10 | hybrid MRR@10 | ratio | keyword-only R@10 | "
            "hybrid R@10 | training s |", "|---|---|---|---|---|---|---|---|---|"]
    for n in MINIMUM_SIZES:
        chosen, total = [], 0
        for i in shuffled_gold + others:
            if n is not None and total >= n:
                break
            chosen.append(i)
            total += counts[i]
        asked = [q for q in questions if q["article_id"] in set(chosen)]
        subset = LoadResult(tuple(by_id[i] for i in sorted(chosen)), (), ())
        index = work / f"min-{n}"
        report = build_index(csv_path, index, splitter, None, rebuild=True, progress=False, loaded=subset,
                             self_train=replace(Training(), min_sentences=0))
        hybrid, keyword = Retriever.load(index), Retriever.load(index, load_model=False)
        ranks = {}
        for name, r in (("keyword", keyword), ("hybrid", hybrid)):
            rk = []
            for q in asked:
                hits = r.search(q["question"], k=10)
                rk.append(next((i for i, h in enumerate(hits, 1) if (h.passage.article_id, h.passage.start,
                                h.passage.end) == (q["article_id"], q["start"], q["end"])), None))
            ranks[name] = rk
            r.close()
        k, h = ranks["keyword"], ranks["hybrid"]
        rows.append(f"| {report.manifest.sentences:,} | {report.manifest.articles:,} | {len(asked)} | {mrr(k):.3f} | "
                    f"{mrr(h):.3f} | "
                    f"{mrr(h) / max(mrr(k), 1e-9):.2f} | {recall_at(k, 10):.3f} | {recall_at(h, 10):.3f} | "
                    f"{report.trained['seconds']} |")
        print(f"  minimum: {rows[-1]}", file=sys.stderr)
    out += ["## How many sentences self-training needs\n", *rows, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="10000,50000,200000", help="sentence counts for the cost table")
    parser.add_argument("--no-minimum", action="store_true", help="skip the minimum-size table")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost table")
    parser.add_argument("--work", type=Path, help="keep files here instead of a temporary folder")
    parser.add_argument("--cost-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--docs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("qa.articles", "qa.index", "bm25s"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.cost_one:
        print(json.dumps(cost_one(args.docs, args.cost_one, args.out)))
        return 0
    for need in (args.data / "news" / "bbc-news.csv.gz", args.data / "squad" / "dev-v1.1.json.gz"):
        if not need.exists():
            print(f"skipped: {need} not found (see ../shared/data/SOURCES.md)")
            return 0
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        docs_file = work / "docs.json"
        docs = source_documents(args.data, work)
        docs_file.write_text(json.dumps(docs), encoding="utf-8")
        print(f"source: {len(docs):,} documents, {sum(len(d['sentences']) for d in docs):,} sentences",
              file=sys.stderr)
        if not args.no_cost:
            cost_table(docs_file, [int(x) for x in args.sizes.split(",")], work, out)
        if not args.no_minimum:
            minimum_table(args.data, work, out)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
