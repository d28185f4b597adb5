"""Self-trained embeddings, in one run: paraphrased questions over BBC News, and SQuAD v1.1 dev.

BBC: the corpus (../shared/data/news/bbc-news.csv.gz, gunzipped into a temporary folder, never into
the repository) is indexed the way a user would, with `qa index --model self-trained` (what `qa index`
does by itself when no pretrained model can be loaded). Each question of eval/bbc_paraphrase.jsonl
(questions and gold sentence spans only) is searched with the product's Retriever, hybrid (the
index's model, SELF_TRAINED_WEIGHTS) against keyword-only (the same index without its model); a
hit is right when its own sentence is the gold one. eval/bbc_paraphrase_limits.jsonl, questions
only a pretrained model should get, is reported question by question.

SQuAD v1.1 dev, ReQA protocol as in bench/reqa_squad.py: every paragraph an article (no titles),
right when the hit's sentence contains an answer start; halves by sorted title (even positions
tune, odd held-out). The same self-training and weights; hybrid against keyword-only.

    python bench/bbc_paraphrase.py [--data ../shared/data] [--no-squad] [--work DIR]

Prints markdown (copied into docs/benchmarks.md). Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.cli import index_corpus  # noqa: E402
from qa.metrics import mrr, recall_at  # noqa: E402
from qa.retrieve import Retriever  # noqa: E402
from qa.selftrain import SELF_TRAINED  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
PARAPHRASES = ROOT / "eval" / "bbc_paraphrase.jsonl"
LIMITS = ROOT / "eval" / "bbc_paraphrase_limits.jsonl"
K = 10


def load_questions(path: Path, r: Retriever) -> list[tuple[str, str, int]]:
    """(id, question, position of the gold sentence), checking each span against the index."""
    at = {(aid, start, end): (pos, text) for pos, _, aid, start, end, text in r.sentences()}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        row = at.get((q["article_id"], q["start"], q["end"]))
        if row is None or hashlib.sha1(row[1].encode()).hexdigest()[:12] != q["sentence_sha1"]:
            raise SystemExit(f"{path.name} {q['id']}: no sentence {q['article_id']}[{q['start']}:{q['end']}] with "
                             "that text; the BBC data or the sentence splitter changed")
        out.append((q["id"], q["question"], row[0]))
    return out


def ranks(r: Retriever, questions: list[tuple[str, frozenset[int]]]) -> tuple[list[int | None], float]:
    """Rank of the first hit whose own sentence is gold (None beyond K), and ms per question."""
    pos = {sid: p for p, sid, *_ in r.sentences()}
    out, t0 = [], time.perf_counter()
    for text, gold in questions:
        hits = r.search(text, k=K)
        out.append(next((i for i, h in enumerate(hits, 1) if pos[h.passage.sentence_id] in gold), None))
    return out, 1000 * (time.perf_counter() - t0) / max(1, len(questions))


def row(name: str, rk: list[int | None], ms: float) -> str:
    return (f"| {name} | {len(rk)} | {mrr(rk, K):.3f} | {recall_at(rk, 1):.3f} | {recall_at(rk, 5):.3f} | "
            f"{recall_at(rk, K):.3f} | {ms:.1f} |")


HEADER = ["| retriever | questions | MRR@10 | P@1 | R@5 | R@10 | ms/query |", "|---|---|---|---|---|---|---|"]


def index_offline(corpus: Path, index: Path) -> tuple[Retriever, Retriever, str, dict[str, str]]:
    """Build with self-training: (hybrid, keyword-only) retrievers on it, a summary line, and
    duplicate article id -> the id of the article indexed in its place."""
    t0 = time.perf_counter()
    report = index_corpus(str(corpus), str(index), model=SELF_TRAINED, rebuild=True, progress=False)
    m, t = report.manifest, report.trained
    if m.model != SELF_TRAINED:
        raise SystemExit(f"expected a self-trained model, got mode {m.mode}: {m.mode_reason}")
    hybrid, keyword = Retriever.load(index), Retriever.load(index, load_model=False)
    line = (f"{m.articles:,} articles, {m.sentences:,} sentences; index built in {time.perf_counter() - t0:.1f} s, "
            f"of which training {t['seconds']} s ({t['pairs']:,} pairs, {t['epochs']} epochs, {t['steps']} steps, "
            f"vocabulary {t['vocab']:,}, on {t['device']}). Mode: {hybrid.mode}; weights {hybrid.weights}.")
    return hybrid, keyword, line, dict(report.duplicates)


def bbc(data: Path, work: Path, out: list[str]) -> None:
    csv_gz = data / "news" / "bbc-news.csv.gz"
    if not csv_gz.exists():
        out.append(f"BBC skipped: {csv_gz} not found (see ../shared/data/SOURCES.md).")
        return
    (work / "bbc").mkdir(parents=True, exist_ok=True)
    with gzip.open(csv_gz, "rb") as src, open(work / "bbc" / "bbc-news.csv", "wb") as dst:
        shutil.copyfileobj(src, dst)
    hybrid, keyword, line, _ = index_offline(work / "bbc" / "bbc-news.csv", work / "bbc-index")
    out += ["## BBC paraphrase set\n", f"BBC News: {line}\n"]
    qs = load_questions(PARAPHRASES, hybrid)
    tune = [i for i, (qid, *_) in enumerate(qs) if int(qid.split("-")[1]) % 2 == 0]
    held = [i for i in range(len(qs)) if i not in set(tune)]
    rows = list(HEADER)
    for part, idx in (("all", range(len(qs))), ("tune half (even ids)", tune), ("held-out half (odd ids)", held)):
        sel = [(qs[i][1], frozenset([qs[i][2]])) for i in idx]
        kr, kms = ranks(keyword, sel)
        hr, hms = ranks(hybrid, sel)
        rows += [row(f"keyword-only, {part}", kr, kms), row(f"**hybrid, self-trained**, {part}", hr, hms)]
        if part == "all":
            summary = (f"All {len(sel)} questions: hybrid MRR@10 {mrr(hr, K):.3f} = {mrr(hr, K) / mrr(kr, K):.2f} x "
                       f"keyword-only {mrr(kr, K):.3f}; R@10 {recall_at(hr, K):.3f} vs {recall_at(kr, K):.3f} "
                       f"({recall_at(hr, K) - recall_at(kr, K):+.3f}).")
    out += [*rows, "", summary, ""]
    limits = load_questions(LIMITS, hybrid)
    sel = [(q, frozenset([p])) for _, q, p in limits]
    kr, _ = ranks(keyword, sel)
    hr, _ = ranks(hybrid, sel)
    out += ["### Questions only a pretrained model should get (eval/bbc_paraphrase_limits.jsonl)\n",
            "| id | question | keyword-only rank | hybrid rank |", "|---|---|---|---|"]
    out += [f"| {qid} | {q} | {a or '-'} | {b or '-'} |" for (qid, q, _), a, b in zip(limits, kr, hr)]
    out.append(f"\nFound in the top 10: keyword-only {sum(x is not None for x in kr)}/10, "
               f"hybrid {sum(x is not None for x in hr)}/10.\n")
    hybrid.close()
    keyword.close()


def squad(data: Path, work: Path, out: list[str]) -> None:
    v1 = data / "squad" / "dev-v1.1.json.gz"
    if not v1.exists():
        out.append(f"SQuAD skipped: {v1} not found (see ../shared/data/SOURCES.md).")
        return
    articles = json.load(gzip.open(v1, "rt", encoding="utf-8"))["data"]
    half = {t: ("tune", "test")[i % 2] for i, t in enumerate(sorted({a["title"] for a in articles}))}
    corpus = work / "squad" / "paragraphs.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with open(corpus, "w", encoding="utf-8") as f:
        for ti, a in enumerate(articles):
            for pi, p in enumerate(a["paragraphs"]):
                f.write(json.dumps({"id": f"{ti:02d}-{pi:03d}", "text": p["context"]}) + "\n")
    hybrid, keyword, line, kept = index_offline(corpus, work / "squad-index")
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for pos, _, aid, s, e, _ in hybrid.sentences():
        spans.setdefault(aid, []).append((s, e, pos))
    qs: dict[str, list[tuple[str, frozenset[int]]]] = {"tune": [], "test": []}
    for ti, a in enumerate(articles):
        for pi, p in enumerate(a["paragraphs"]):
            aid = f"{ti:02d}-{pi:03d}"
            aid = kept.get(aid, aid)  # a paragraph repeating an earlier one is indexed once
            lead = len(p["context"]) - len(p["context"].lstrip())  # the loader strips the text
            for q in p["qas"]:
                starts = {x["answer_start"] - lead for x in q["answers"]}
                gold = frozenset(pos for s, e, pos in spans[aid] if any(s <= x < e for x in starts))
                qs[half[a["title"]]].append((q["question"], gold))
    out += ["## SQuAD v1.1 dev (ReQA)\n", f"SQuAD v1.1 dev paragraphs: {line}\n", *HEADER]
    for name, part in (("held-out half", "test"), ("tune half", "tune")):
        kr, kms = ranks(keyword, qs[part])
        hr, hms = ranks(hybrid, qs[part])
        out += [row(f"keyword-only, {name}", kr, kms), row(f"**hybrid, self-trained**, {name}", hr, hms)]
    out.append("")
    hybrid.close()
    keyword.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with news/ and squad/")
    parser.add_argument("--no-squad", action="store_true", help="only the BBC part (about 2 minutes)")
    parser.add_argument("--work", type=Path, help="keep the corpora and indexes here instead of a temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("qa.articles", "qa.index", "qa.cli", "bm25s"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bbc(args.data, work, out)
        if not args.no_squad:
            squad(args.data, work, out)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
