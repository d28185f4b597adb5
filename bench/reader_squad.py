"""The reader on SQuAD dev, held-out titles only: ReQA ranking (v1.1) and answer-or-abstain (v2.0).

Every paragraph of a dev file is an article of one index, built by build_index with the default
model (all-MiniLM-L6-v2). Only questions of held-out titles are asked (qa.squad.held_out_titles:
odd positions in file order, in either file); the reader never saw them, nor was its threshold
chosen on them. Side by side, in one run:

- v1.1, ReQA: plain bm25s, keyword-only, hybrid, hybrid + reader (the reader reorders the top
  `rerank` hits): MRR@10, P@1, R@5; a hit is right when its sentence holds an answer start.
- v2.0: overall right (answered with a gold answer string in the answer, or abstained on an
  unanswerable question), answerable right, abstention precision / recall / F1, for keyword-only
  rules, hybrid rules and hybrid + reader; and the reader's threshold curve.

    python bench/reader_squad.py [--data ../shared/data/squad] [--sample N] [--work DIR]

--sample N asks every (questions / N)-th held-out question only (the same ones every run): the
reader costs ~0.1-0.5 s a question on two cores. Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa import squad  # noqa: E402
from qa.answer import REJECTED, Policy, answer, asks, fit, read  # noqa: E402
from qa.articles import load_corpus  # noqa: E402
from qa.embed import DEFAULT_MODEL, load_encoder  # noqa: E402
from qa.index import build_index  # noqa: E402
from qa.metrics import abstention_scores, contains_answer, mrr, recall_at  # noqa: E402
from qa.reader import load_reader  # noqa: E402
from qa.retrieve import Hit, Retriever  # noqa: E402
from qa.sentences import load_splitter  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad"
K = 10
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def sample(questions: list[squad.Question], n: int | None) -> list[squad.Question]:
    if not n or n >= len(questions):
        return questions
    step = len(questions) / n
    return [questions[int(i * step)] for i in range(n)]


def open_index(squad_file: Path, work: Path, encoder) -> tuple[squad.Squad, Retriever, list, float]:
    """The file's paragraphs indexed with encoder; also every sentence as the splitter cuts it."""
    data = squad.read(squad_file)
    work.mkdir(parents=True, exist_ok=True)
    corpus = squad.write_articles(data, work / "paragraphs.jsonl")
    t0 = time.perf_counter()
    splitter = load_splitter()
    build_index(corpus, work / "index", splitter, encoder, rebuild=True, progress=False)
    seconds = time.perf_counter() - t0
    sentences = [s for a in load_corpus(corpus).articles for s in splitter.split(a.id, a.text)]
    return data, Retriever.load(work / "index", encoder=encoder), sentences, seconds


def is_gold(hit: Hit, q: squad.Question) -> bool:
    p = hit.passage
    return p.article_id == q.article_id and any(p.start <= s < p.end for s in q.starts)


def rank(hits: list[Hit], q: squad.Question) -> int | None:
    return next((i for i, h in enumerate(hits[:K], start=1) if is_gold(h, q)), None)


def plain_bm25_ranks(sentences: list, questions: list[squad.Question]) -> list[int | None]:
    """Plain bm25s over sentences (qa.sentences.Sentence): k1 1.5, b 0.75, English stopwords, PyStemmer."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    bm = bm25s.BM25(k1=1.5, b=0.75)
    bm.index(bm25s.tokenize([s.text for s in sentences], stopwords="en", stemmer=stemmer, show_progress=False),
             show_progress=False)
    tokens = bm25s.tokenize([q.text for q in questions], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, _ = bm.retrieve(tokens, k=K, show_progress=False, n_threads=1)
    return [next((i for i, d in enumerate(row, start=1) if sentences[d].article_id == q.article_id
                  and any(sentences[d].start <= x < sentences[d].end for x in q.starts)), None)
            for row, q in zip(docs, questions)]


def reqa(r: Retriever, sentences: list, reader, questions: list[squad.Question], policy: Policy) -> list[str]:
    rows = ["| retriever (held-out titles) | MRR@10 | P@1 | R@5 | ms/question |", "|---|---|---|---|---|"]

    def line(name, ranks, ms):
        return f"| {name} | {mrr(ranks, K):.3f} | {recall_at(ranks, 1):.3f} | {recall_at(ranks, 5):.3f} | {ms:.1f} |"

    encoder = r.encoder
    t0 = time.perf_counter()
    rows.append(line("plain bm25s (k1 1.5, b 0.75, stopwords, PyStemmer)", plain_bm25_ranks(sentences, questions),
                     1000 * (time.perf_counter() - t0) / len(questions)))
    r.encoder = None
    t0 = time.perf_counter()
    ranks = [rank(r.search(q.text, k=K), q) for q in questions]
    rows.append(line("keyword-only", ranks, 1000 * (time.perf_counter() - t0) / len(questions)))
    r.encoder = encoder
    hybrid, reread, t_h, t_r = [], [], 0.0, 0.0
    for q in questions:
        t0 = time.perf_counter()
        hits = r.search(q.text, k=max(K, policy.rerank))
        t1 = time.perf_counter()
        ranked, _, _ = read(reader, q.text, hits[:policy.rerank], policy)
        t_h, t_r = t_h + (t1 - t0), t_r + (time.perf_counter() - t1)
        hybrid.append(rank(hits, q))
        reread.append(rank(ranked + hits[policy.rerank:], q))
    rows.append(line(f"hybrid ({DEFAULT_MODEL})", hybrid, 1000 * t_h / len(questions)))
    rows.append(line(f"hybrid + reader (top {policy.rerank} re-scored)", reread,
                     1000 * (t_h + t_r) / len(questions)))
    return rows


def answers(r: Retriever, reader, questions: list[squad.Question], policy: Policy) -> list[str]:
    """SQuAD v2.0: right answers and abstentions, rules vs reader, and the reader's threshold curve."""
    truth = [q.answerable for q in questions]
    rows = ["| answers (held-out titles) | overall right | answerable right | abstention P | R | F1 | ms/question |",
            "|---|---|---|---|---|---|---|"]
    encoder = r.encoder
    best, texts_at = [], []
    for name, use_encoder, use_reader in (("keyword-only, rules", False, False), ("hybrid, rules", True, False),
                                          ("hybrid + reader", True, True)):
        r.encoder = encoder if use_encoder else None
        t0 = time.perf_counter()
        got = []
        for q in questions:
            a = answer(r, q.text, k=5, policy=policy if not use_reader else Policy(
                rerank=policy.rerank, threshold=0.0, reader_relative=policy.reader_relative),
                reader=reader if use_reader else None)
            got.append(a)
        ms = 1000 * (time.perf_counter() - t0) / len(questions)
        if use_reader:  # answered at threshold 0: every cut is then the same answer or an abstention
            best = [a.best or 0.0 for a in got]
            texts_at = [a.text for a in got]
            got_abstained = [b < reader.threshold for b in best]
        else:
            got_abstained = [a.abstained for a in got]
        rows.append(_answer_row(f"{name}" + (f" (threshold {reader.threshold})" if use_reader else ""),
                                questions, truth, got_abstained, [a.text for a in got], ms))
    r.encoder = encoder
    # The rules' check of what the question asks for (a number for "how many"), on the reader's answer:
    # does it still add something? (Policy.reader_checks; off by default.)
    checked = []
    for q, a, b in zip(questions, got, best):
        want = asks(q.text)
        kept = [h for h in a.hits if h.passage.sentence_id in {c.passage.sentence_id for c in a.citations}
                and fit(h.text, want, q.text) > REJECTED]
        checked.append((b < reader.threshold or not kept, " ".join(h.text for h in kept)))
    rows.append(_answer_row("hybrid + reader + the rules' answer checks", questions, truth,
                            [c[0] for c in checked], [c[1] for c in checked], None) + " |")
    curve = ["| reader threshold | overall right | answerable right | abstention P | R | F1 |", "|---|---|---|---|---|---|"]
    for t in THRESHOLDS:
        curve.append(_answer_row(str(t), questions, truth, [b < t for b in best], texts_at, None))
    return rows + ["", "Threshold curve (held-out; the threshold itself was chosen on calibration data):", ""] + curve


def _answer_row(name, questions, truth, abstained, texts, ms) -> str:
    right = [(not a and contains_answer(t, [(g,) for g in q.answers])) if q.answerable else a
             for q, a, t in zip(questions, abstained, texts)]
    s = abstention_scores(truth, abstained)
    answerable = [x for x, q in zip(right, questions) if q.answerable]
    cells = [name, f"{np.mean(right):.1%}", f"{np.mean(answerable):.1%}", f"{s.precision:.3f}", f"{s.recall:.3f}",
             f"{s.f1:.3f}"] + ([f"{ms:.0f}"] if ms is not None else [])
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", type=int, help="ask only this many held-out questions per file")
    parser.add_argument("--work", type=Path, help="keep the indexes here instead of a temporary folder")
    parser.add_argument("--v1-only", action="store_true", help="ReQA on SQuAD v1.1 only (no v2.0 answers)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("bm25s", "qa.articles", "qa.index", "qa.sentences"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not (args.data / squad.V1).exists():
        print(f"skipped: {args.data / squad.V1} not found (SQuAD dev; see ../shared/data/SOURCES.md)")
        return 0
    held = squad.held_out_titles(args.data)
    encoder, reader, policy = load_encoder(DEFAULT_MODEL), load_reader(), Policy()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in (squad.V1,) if args.v1_only else (squad.V1, squad.V2):
            if not (args.data / name).exists():
                out.append(f"{name} skipped: not found")
                continue
            data, r, sentences, seconds = open_index(args.data / name, work / name.split(".json")[0], encoder)
            odd = {t for t in data.titles[1::2]}
            qs = [q for q in data.questions if q.title in odd and q.title in held]
            asked = sample(qs if name == squad.V2 else [q for q in qs if q.answerable], args.sample)
            out.append(f"### {name}: {len(data.paragraphs)} paragraphs as articles, {r.manifest.sentences} sentences, "
                       f"built in {seconds:.0f} s; {len(asked)} of the {len(qs)} questions of the "
                       f"{len(odd)} odd-position titles asked\n")
            out += reqa(r, sentences, reader, asked, policy) if name == squad.V1 else answers(r, reader, asked, policy)
            out.append("")
            print("\n".join(out), flush=True)
            out = []
    return 0


if __name__ == "__main__":
    sys.exit(main())
