"""ReQA on SQuAD (Ahmad et al., 2019): sentence-level answer retrieval over every dev paragraph.

Every paragraph of SQuAD v1.1 dev is an article, indexed by the project's own build_index; a
retrieved sentence is right when its span contains an answer start. Articles are split by
SQuAD title (sorted; even positions tune, odd positions report). Keyword weights and BM25
parameters are tuned on the tune half; every reported number is on the held-out half,
measured in this run next to plain bm25s sentence BM25 (k1 1.5, b 0.75, English stopwords,
PyStemmer). SQuAD v2.0 dev adds abstention on its unanswerable questions.

    python bench/reqa_squad.py [--data ../shared/data/squad] [--model PATH | --selftrain] [--no-tune]

Prints markdown tables (copied into docs/benchmarks.md). Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa import index as qa_index  # noqa: E402
from qa.answer import Policy  # noqa: E402
from qa.evaluate import abstains, calibrate  # noqa: E402
from qa.index import build_index  # noqa: E402
from qa.metrics import abstention_scores, mrr, recall_at  # noqa: E402
from qa.retrieve import Retriever, Weights  # noqa: E402
from qa.sentences import load_splitter  # noqa: E402
from qa.tokens import tokenize  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad"
K = 10
K1_GRID = (0.15, 0.3, 0.45, 0.6, 0.9, 1.2)
B_GRID = (0.5, 0.6, 0.75, 0.9)
WINDOW_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
ARTICLE_GRID = (0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DENSE_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Question:
    text: str
    half: str  # "tune" or "test"
    gold: frozenset[int]  # positions of the sentences containing an answer start; empty: unanswerable


@dataclass(frozen=True)
class Corpus:
    index: Path
    questions: list[Question]
    build_seconds: float
    articles: int
    sentences: int


def halves(titles: list[str]) -> dict[str, str]:
    """SQuAD title -> "tune" (even position in sorted order) or "test" (odd)."""
    return {t: ("tune", "test")[i % 2] for i, t in enumerate(sorted(set(titles)))}


def build_corpus(squad_file: Path, work: Path, encoder=None) -> Corpus:
    """Write every paragraph as a .jsonl article, index it with build_index, map answers to sentences."""
    data = json.load(gzip.open(squad_file, "rt", encoding="utf-8"))["data"]
    half = halves([a["title"] for a in data])
    work.mkdir(parents=True, exist_ok=True)
    corpus_file = work / "paragraphs.jsonl"
    raw = []
    with open(corpus_file, "w", encoding="utf-8") as f:
        for ti, article in enumerate(data):
            for pi, p in enumerate(article["paragraphs"]):
                aid = f"{ti:02d}-{pi:03d}"
                f.write(json.dumps({"id": aid, "text": p["context"]}) + "\n")
                raw.append((aid, article["title"], p))
    report = build_index(corpus_file, work / "index", load_splitter(), encoder,
                         mode_reason="keyword-only: benchmark", rebuild=True, progress=False)
    kept = dict(report.duplicates)  # a skipped duplicate paragraph is answered by the kept one
    r = Retriever.load(work / "index", encoder=encoder, load_model=False)
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for pos, _, aid, start, end, _ in r.sentences():
        spans.setdefault(aid, []).append((start, end, pos))
    texts = {aid: r.article(aid).text for aid in r.article_ids}
    r.close()
    questions = []
    for aid, title, p in raw:
        aid = kept.get(aid, aid)
        lead = len(p["context"]) - len(p["context"].lstrip())  # the loader strips the text
        for q in p["qas"]:
            gold = set()
            for a in q["answers"]:
                start = a["answer_start"] - lead
                if texts[aid][start:start + len(a["text"])] != a["text"]:
                    raise SystemExit(f"answer offset mismatch in {aid}: the loader changed the text")
                gold |= {pos for s, e, pos in spans[aid] if s <= start < e}
            questions.append(Question(q["question"], half[title], frozenset(gold)))
    return Corpus(work / "index", questions, report.seconds, report.manifest.articles, report.manifest.sentences)


def rank(ranked: list[int], gold: frozenset[int]) -> int | None:
    return next((i for i, pos in enumerate(ranked, start=1) if pos in gold), None)


def product_ranks(r: Retriever, questions: list[Question]) -> tuple[list[int | None], float]:
    """Ranks of the first right sentence through Retriever.search (the hit's own sentence only,
    not the near-duplicates merged into it), and ms per question."""
    pos = {sid: p for p, sid, *_ in r.sentences()}
    ranks, t0 = [], time.perf_counter()
    for q in questions:
        ranks.append(rank([pos[h.passage.sentence_id] for h in r.search(q.text, k=K)], q.gold))
    return ranks, 1000 * (time.perf_counter() - t0) / max(len(questions), 1)


def plain_bm25_ranks(texts: list[str], questions: list[Question],
                     positions: list[int] | None = None) -> tuple[list[int | None], float]:
    """Plain bm25s over sentences: k1 1.5, b 0.75, its English stopwords and PyStemmer.

    positions: each text's index position (default: its place in texts, right for an index
    without deleted rows)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    bm = bm25s.BM25(k1=1.5, b=0.75)
    bm.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    t0 = time.perf_counter()
    q_tokens = bm25s.tokenize([q.text for q in questions], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, _ = bm.retrieve(q_tokens, k=K, show_progress=False, n_threads=1)
    ms = 1000 * (time.perf_counter() - t0) / max(len(questions), 1)
    at = positions if positions is not None else range(len(texts))
    return [rank([at[d] for d in row], q.gold) for row, q in zip(docs, questions)], ms


def row(name: str, ranks: list[int | None], ms: float) -> str:
    p1 = recall_at(ranks, 1)
    return f"| {name} | {mrr(ranks, K):.3f} | {p1:.3f} | {recall_at(ranks, 5):.3f} | {ms:.1f} |"


def level_scores(r: Retriever, questions: list[Question]) -> np.ndarray:
    """(questions, 3, sentences) float32: each keyword level's scores divided by its best, as search does."""
    out = np.zeros((len(questions), 3, r.positions()), dtype=np.float32)
    for i, q in enumerate(questions):
        terms = tokenize(q.text)
        if not terms:
            continue
        scores = r.level_scores(terms)
        for j, level in enumerate(qa_index.KEYWORD_LEVELS):
            s = scores[level]
            top = float(s.max())
            if top > 0:
                out[i, j] = s / top
    return out


def gold_mask(questions: list[Question], n: int) -> np.ndarray:
    """(questions, sentences) bool: where the right sentences are."""
    mask = np.zeros((len(questions), n), dtype=bool)
    for i, q in enumerate(questions):
        mask[i, list(q.gold)] = True
    return mask


def shortlist(levels: np.ndarray, gold: np.ndarray, per_level: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per question, the top per_level sentences of each level (a sentence outside all
    three practically never reaches the top 10 of a fusion): (questions, 3, m) scores, a sentence
    kept twice scored -1 the second time, and (questions, m) gold flags. Makes the grid fast."""
    idx = np.concatenate([np.argpartition(-levels[:, j], per_level, axis=1)[:, :per_level] for j in range(3)], axis=1)
    idx.sort(axis=1)
    repeat = np.zeros_like(idx, dtype=bool)
    repeat[:, 1:] = idx[:, 1:] == idx[:, :-1]
    vals = np.take_along_axis(levels, idx[:, None, :], axis=2)
    vals[np.broadcast_to(repeat[:, None, :], vals.shape)] = -1.0  # a repeat never outranks anything
    return vals, np.take_along_axis(gold, idx, axis=1) & ~repeat


def fused_ranks(fused: np.ndarray, gold: np.ndarray) -> list[int | None]:
    """fused: (questions, candidates) scores; gold: their gold flags. Rank of the best right
    sentence, counted as one plus the candidates scoring higher; None beyond K or at score <= 0."""
    g = np.where(gold, fused, -np.inf).max(axis=1)
    ranks = 1 + (fused > g[:, None]).sum(axis=1)
    return [int(r) if s > 0 and r <= K else None for r, s in zip(ranks, g)]


def tune(corpus: Corpus, work: Path, questions: list[Question], log: list[str]) -> tuple[dict, Weights]:
    """Grid search of BM25 k1/b and the window/article weights on the tune half, by MRR@10.

    Scores come from the product's own keyword indexes: qa.index.BM25_PARAMS is set to each k1/b
    for a build_index run and restored afterwards."""
    corpus_file = corpus.index.parent / "paragraphs.jsonl"
    original = dict(qa_index.BM25_PARAMS)
    combos = list(itertools.product(WINDOW_GRID, ARTICLE_GRID))
    w = np.array([[1.0, win, art] for win, art in combos], dtype=np.float32)  # (combos, levels)
    results = []
    try:
        for k1, b in itertools.product(K1_GRID, B_GRID):
            qa_index.BM25_PARAMS.clear()
            qa_index.BM25_PARAMS.update(k1=k1, b=b)
            build_index(corpus_file, work / "tune-index", load_splitter(), None, rebuild=True, progress=False)
            r = Retriever.load(work / "tune-index", load_model=False)
            totals = np.zeros(len(combos))
            for chunk in range(0, len(questions), 500):
                qs = questions[chunk:chunk + 500]
                levels, gold = shortlist(level_scores(r, qs), gold_mask(qs, r.positions()))
                for c in range(len(combos)):
                    fused = levels[:, 0] + w[c, 1] * levels[:, 1] + w[c, 2] * levels[:, 2]
                    totals[c] += mrr(fused_ranks(fused, gold), K) * len(qs)
            r.close()
            for c, (win, art) in enumerate(combos):
                results.append((totals[c] / len(questions), k1, b, win, art))
            best = max(x for x in results if x[1] == k1 and x[2] == b)
            print(f"  k1 {k1} b {b}: best MRR@10 {best[0]:.4f} (window {best[3]}, article {best[4]})",
                  file=sys.stderr)
    finally:
        qa_index.BM25_PARAMS.clear()
        qa_index.BM25_PARAMS.update(original)
    results.sort(reverse=True)
    log += ["| k1 | b | window | article | MRR@10 (tune half) |", "|---|---|---|---|---|"]
    log += [f"| {k1} | {b} | {win} | {art} | {m:.4f} |" for m, k1, b, win, art in results[:8]]
    cur = Weights()
    mine = [m for m, k1, b, win, art in results if (k1, b, win, art) == (
        original["k1"], original["b"], cur.window / cur.sentence, cur.article / cur.sentence)]
    log.append(f"\nProduct defaults (k1 {original['k1']}, b {original['b']}, {cur}): "
               + (f"MRR@10 {mine[0]:.4f} on the tune half." if mine else "not on the grid."))
    m, k1, b, win, art = results[0]
    return {"k1": k1, "b": b}, Weights(sentence=1.0, window=win, article=art, dense=cur.dense)


def tune_dense(r: Retriever, questions: list[Question], keyword: Weights) -> float:
    """The dense weight with the best MRR@10 on the tune half (keyword part as given)."""
    levels_w = np.array([keyword.sentence, keyword.window, keyword.article], dtype=np.float32)
    vectors = r.all_vectors()
    totals = np.zeros(len(DENSE_GRID))
    for chunk in range(0, len(questions), 500):
        qs = questions[chunk:chunk + 500]
        levels = level_scores(r, qs)
        kw = levels[:, 0] * levels_w[0] + levels[:, 1] * levels_w[1] + levels[:, 2] * levels_w[2]
        gold = gold_mask(qs, r.positions())
        dense = r.encoder.encode_queries([q.text for q in qs]) @ vectors.T
        for i, wd in enumerate(DENSE_GRID):
            totals[i] += mrr(fused_ranks(kw + wd * dense + 10.0, gold), K) * len(qs)  # +10: keep scores > 0
    best = int(np.argmax(totals))
    print("  dense weight MRR@10 (tune half): " + ", ".join(
        f"{wd}: {t / len(questions):.4f}" for wd, t in zip(DENSE_GRID, totals)), file=sys.stderr)
    return DENSE_GRID[best]


def selftrain(r: Retriever, path: Path, log: list[str]) -> Path:
    """A model trained by qa.selftrain on the indexed sentences (each paragraph a document, in order)."""
    from qa.selftrain import Document, Training, train

    docs: dict[str, list[str]] = {}
    for _, _, aid, _, _, text in r.sentences():
        docs.setdefault(aid, []).append(text)
    model, info = train([Document("", tuple(s)) for s in docs.values()], Training(), progress=False)
    model.save(str(path))
    log.append(f"Self-trained model (qa.selftrain, {Training()}): {info['pairs']} pairs, {info['epochs']} epochs, "
               f"{info['seconds']} s on {info['device']}; trained on the sentences only, never on questions.\n")
    return path


def abstention_table(corpus: Corpus, log: list[str]) -> None:
    """SQuAD v2.0: the best hit's support decides, as in qa.answer; calibrated on the tune half."""
    r = Retriever.load(corpus.index, load_model=False)
    best = {}
    t0 = time.perf_counter()
    for half in ("tune", "test"):
        qs = [q for q in corpus.questions if q.half == half]
        best[half] = ([bool(q.gold) for q in qs], [next(iter(r.search(q.text, k=1)), None) for q in qs])
    ms = 1000 * (time.perf_counter() - t0) / len(corpus.questions)
    cal = calibrate(*best["tune"])
    log += ["| policy | min_support | abstention precision | recall | F1 | false-abstention rate |",
            "|---|---|---|---|---|---|"]
    truth, hits = best["test"]
    for name, policy in (("default Policy()", Policy()),
                         ("calibrated on the tune half", Policy(min_support=cal.min_support))):
        s = abstention_scores(truth, [abstains(h, policy) for h in hits])
        log.append(f"| {name} | {policy.min_support} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | "
                   f"{s.false_abstention_rate:.3f} |")
    answerable = sum(truth)
    log.append(f"\nHeld-out half: {len(truth)} questions ({answerable} answerable, {len(truth) - answerable} "
               f"unanswerable); {corpus.articles} paragraphs, {corpus.sentences} sentences indexed; "
               f"{ms:.1f} ms per question (search, k=1).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with dev-v1.1.json.gz, dev-v2.0.json.gz")
    parser.add_argument("--model", help="sentence-transformers folder: adds dense and hybrid rows")
    parser.add_argument("--selftrain", action="store_true",
                        help="train a model on the paragraphs' sentences with qa.selftrain (no questions) and use it")
    parser.add_argument("--no-tune", action="store_true", help="skip the grid search (about 3 minutes)")
    parser.add_argument("--work", type=Path, help="keep the indexes here instead of a temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("bm25s", "qa.articles", "qa.index"):  # the HTML warning for one paragraph, per build
        logging.getLogger(name).setLevel(logging.ERROR)
    v1, v2 = args.data / "dev-v1.1.json.gz", args.data / "dev-v2.0.json.gz"
    if not v1.exists():
        print(f"skipped: {v1} not found (SQuAD v1.1 dev; see ../shared/data/SOURCES.md)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        out: list[str] = []
        corpus = build_corpus(v1, work / "v1")
        tune_qs = [q for q in corpus.questions if q.half == "tune"]
        test_qs = [q for q in corpus.questions if q.half == "test"]
        out.append(f"SQuAD v1.1 dev: {corpus.articles} paragraphs as articles, {corpus.sentences} sentences "
                   f"(project splitter), index built by build_index in {corpus.build_seconds:.1f} s "
                   f"(keyword-only). Tune half: {len(tune_qs)} questions; held-out half: {len(test_qs)} questions.\n")
        if not args.no_tune:
            out.append("### Tuning (tune half, MRR@10, best first)\n")
            params, weights = tune(corpus, work, tune_qs, out)
            out.append(f"Best: BM25_PARAMS {params}, {weights}.\n")
        r = Retriever.load(corpus.index, load_model=False)
        live = list(r.sentences())
        texts, positions = [t for *_, t in live], [p for p, *_ in live]
        rows = ["| retriever (held-out half) | MRR@10 | P@1 | R@5 | ms/query |", "|---|---|---|---|---|"]
        rows.append(row("plain bm25s sentence BM25 (k1 1.5, b 0.75, stopwords en, PyStemmer)",
                        *plain_bm25_ranks(texts, test_qs, positions)))
        w, bm = Weights(), qa_index.BM25_PARAMS
        rows.append(row(f"keyword-only: qa.retrieve, sentence + window + article BM25 (k1 {bm['k1']}, b {bm['b']}; "
                        f"weights {w.sentence}/{w.window}/{w.article})", *product_ranks(r, test_qs)))
        label = args.model
        if args.selftrain:
            args.model, label = str(selftrain(r, work / "selftrained", out)), "self-trained by qa.selftrain"
        if args.model:
            from qa.embed import load_encoder
            encoder = load_encoder(args.model)
            t0 = time.perf_counter()
            hybrid = build_corpus(v1, work / "v1-hybrid", encoder)
            out.append(f"Hybrid index ({label}) built in {time.perf_counter() - t0:.1f} s.\n")
            rh = Retriever.load(hybrid.index, encoder=encoder)
            wd = tune_dense(rh, [q for q in hybrid.questions if q.half == "tune"], Weights())
            out.append(f"Dense weight tuned on the tune half: {wd} (product default {Weights().dense}).\n")
            hq = [q for q in hybrid.questions if q.half == "test"]
            rh.weights = Weights(sentence=0.0, window=0.0, article=0.0, dense=1.0)
            rows.append(row(f"dense only ({label})", *product_ranks(rh, hq)))
            rh.weights = replace(Weights(), dense=wd)
            rows.append(row(f"hybrid: keyword + {wd} x dense", *product_ranks(rh, hq)))
        out += ["### Held-out half\n", *rows, ""]
        if v2.exists():
            out.append("### SQuAD v2.0 dev: abstention (held-out half)\n")
            abstention_table(build_corpus(v2, work / "v2"), out)
        else:
            out.append(f"SQuAD v2.0 skipped: {v2} not found.")
        print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
