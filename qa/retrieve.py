"""Hybrid sentence retrieval: BM25 over sentence, window and article, fused with FAISS cosine."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import bm25s
import faiss
import numpy as np

from qa import models, selftrain, store
from qa.articles import Article
from qa.embed import KEYWORD_ONLY, PRETRAINED, SELF_TRAINED, Encoder, Mode
from qa.expand import WordNeighbours, expand
from qa.index import KEYWORD_LEVELS, IndexUnusable, Manifest, keyword_settings, live_generation
from qa.tokens import QUESTION_FRAME, tokenize

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class Weights:
    """How much each signal counts; keyword scores are divided by their best value per question.

    Keyword weights and BM25_PARAMS fitted together on half of SQuAD v1.1 dev by MRR@10
    (bench/reqa_squad.py); see docs/benchmarks.md. dense stays 1.0: it depends on the model (a
    self-trained one fitted 1.5 there, only +0.001 MRR@10 better); refit it for a real model.
    """
    sentence: float = 1.0
    window: float = 0.75
    article: float = 2.0
    dense: float = 1.0
    # None: dense always counts `dense`. A number: dense counts `dense` when the best keyword match
    # (with its neighbours) holds all of the question's keywords, rising to `dense_weak` as it
    # holds fewer, by (1 - support) ** 2: the model decides where the words do not.
    dense_weak: float | None = None
    # With a static model (a self-trained one) loaded and the best keyword match (with its
    # neighbours) holding less than `expand_below` of the question's keywords: each keyword also
    # looks for its 3 nearest corpus words by the model's token vectors ("film" -> "movi", "cinema"),
    # each counting `expansion` of a question word in BM25. 0: the question's words only.
    expansion: float = 0.0
    expand_below: float = 0.6
    # When the best keyword match holds less than `places_below` of the question's keywords, this
    # share of the k places (rounded down: 3 of 10) goes to the model's own best matches that the
    # fused ranking left out: where the words say little, the model's candidates get places in the
    # list, not only weight in the sum.
    dense_places: float = 0.0
    places_below: float = 0.8


# A model self-trained on the corpus (qa.selftrain) finds paraphrases that keyword search misses
# but is weaker than keywords where the question repeats the article's words. Fitted on half of the
# BBC paraphrase set and half of SQuAD v1.1 dev together (docs/benchmarks.md, "Self-trained embeddings").
SELF_TRAINED_WEIGHTS = Weights(dense=1.0, dense_weak=8.0, expansion=0.3, dense_places=0.3)


@dataclass(frozen=True)
class Passage:
    """A sentence in its article, with what a citation needs."""
    sentence_id: str
    article_id: str
    title: str
    source: str
    published: str
    url: str
    index: int  # position of the sentence in its article
    paragraph: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    """One retrieved fact: the best passage, every article that reports it, and its context."""
    passage: Passage
    score: float  # fused score; comparable within one question only
    # Share of the question's keyword weight (idf) found in the sentence and its neighbours (they say
    # who "it" is), 0..1; 0 when the sentence itself holds none of it: a neighbour is no answer.
    support: float
    dense: float | None  # cosine similarity to the question, None in keyword-only mode
    before: tuple[str, ...]  # the preceding sentence(s) of the same article
    after: tuple[str, ...]
    sources: tuple[Passage, ...]  # every article reporting this fact, the best first (passage included)

    @property
    def text(self) -> str:
        return self.passage.text

    @property
    def article_id(self) -> str:
        return self.passage.article_id


@dataclass(frozen=True)
class Stats:
    articles: int
    sentences: int
    first_date: str
    last_date: str
    sources: tuple[str, ...]
    mode: Mode
    mode_reason: str


class Retriever:
    """A loaded index. Load once with Retriever.load and share it; search is read-only."""

    def __init__(self, gen: Path, manifest: Manifest, encoder: Encoder | None, notice: str = "",
                 weights: Weights = Weights()):
        self.manifest, self.encoder, self.weights = manifest, encoder, weights
        self.notice = notice or manifest.mode_reason
        self.db = store.connect(gen / "store.sqlite", readonly=True)
        self.bm25 = {lv: bm25s.BM25.load(gen / f"bm25-{lv}", show_progress=False) for lv in KEYWORD_LEVELS}
        self.sentence_article = np.load(gen / "sentence_article.npy")
        df = np.diff(self.bm25["sentence"].scores["indptr"]).astype(np.float64)
        n = manifest.sentences
        self.idf = dict(zip(self.bm25["sentence"].vocab_dict, np.log((n + 1) / (df + 0.5))))
        self.unknown_idf = math.log((n + 1) / 0.5)
        rows = self.db.execute("SELECT id, source, published FROM articles ORDER BY rowid").fetchall()
        self.article_ids = [r[0] for r in rows]
        self.article_source = np.array([r[1] for r in rows], dtype=object)
        self.article_date = np.array([r[2][:10] for r in rows], dtype=object)
        self.faiss = self.vectors = self.neighbours = None
        if encoder is not None:
            if weights.expansion > 0:
                vocab = self.bm25["sentence"].vocab_dict  # may hold one id past df: bm25s's empty token
                sentences_with = {t: int(df[i]) for t, i in vocab.items() if i < len(df)}
                self.neighbours = WordNeighbours.from_model(encoder.model, sentences_with)
            self.faiss = faiss.read_index(str(gen / "dense.faiss"))
            if hasattr(self.faiss, "hnsw"):
                self.faiss.hnsw.efSearch = 128
            self.vectors = np.load(gen / "vectors.npy", mmap_mode="r")

    @classmethod
    def load(cls, index_dir: str | Path, encoder: Encoder | None = None, load_model: bool = True,
             weights: Weights | None = None) -> "Retriever":
        """Open the live index in index_dir; loads its model unless one is given or load_model is False.

        weights: None picks them for the index's model (SELF_TRAINED_WEIGHTS for a self-trained one).
        """
        gen = live_generation(Path(index_dir))
        if gen is None:
            raise IndexUnusable(f"no index in {index_dir}. Build one: qa index CORPUS --index {index_dir}")
        manifest = Manifest.read(gen / "manifest.json")
        if manifest.bm25 != keyword_settings():
            raise IndexUnusable(f"the keyword indexes in {index_dir} were built with other settings "
                                f"({manifest.bm25}); update them with: qa index CORPUS --index {index_dir}")
        notice = ""
        if manifest.model is None:
            encoder = None
        elif encoder is not None and manifest.model_fingerprint and encoder.info.fingerprint \
                and encoder.info.fingerprint != manifest.model_fingerprint:
            raise IndexUnusable(f"the index in {index_dir} was built with other weights than {encoder.info.name}'s "
                                f"now (sha256 {manifest.model_fingerprint[:12]}…, not {encoder.info.fingerprint[:12]}…): "
                                f"rebuild with qa index CORPUS --index {index_dir} --rebuild")
        elif encoder is not None and (encoder.info.name, encoder.info.dim) != (manifest.model, manifest.dim):
            raise IndexUnusable(f"the index in {index_dir} was built with {manifest.model} ({manifest.dim} d), "
                                f"not {encoder.info.name} ({encoder.info.dim} d): pass --model {manifest.model} "
                                f"or rebuild with qa index CORPUS --index {index_dir} --rebuild")
        elif encoder is None and load_model:
            encoder, notice = models.for_index(manifest.model, manifest.model_path, gen, Path(index_dir),
                                               manifest.model_fingerprint)
            if notice:
                log.warning(notice)
        elif encoder is None:
            notice = "keyword-only: model not loaded"
        if weights is None:
            weights = SELF_TRAINED_WEIGHTS if manifest.model == selftrain.SELF_TRAINED else Weights()
        return cls(gen, manifest, encoder, notice, weights)

    @property
    def mode(self) -> Mode:
        if self.encoder is None:
            return Mode(KEYWORD_ONLY)
        if self.encoder.info.name == selftrain.SELF_TRAINED:
            return Mode(SELF_TRAINED)
        return Mode(PRETRAINED, self.encoder.info.name)

    def stats(self) -> Stats:
        dates = sorted(d for d in self.article_date if d)
        return Stats(articles=len(self.article_ids), sentences=self.manifest.sentences,
                     first_date=dates[0] if dates else "", last_date=dates[-1] if dates else "",
                     sources=tuple(sorted({s for s in self.article_source if s})), mode=self.mode,
                     mode_reason=self.notice)

    def article(self, article_id: str) -> Article | None:
        return store.read_article(self.db, article_id)

    def search(self, question: str, k: int = 5, sources: list[str] | None = None,
               since: str | None = None, until: str | None = None) -> list[Hit]:
        """The k best hits for question, best first; near-identical sentences of different
        articles are merged into one hit. Filters: outlet names, ISO dates (inclusive)."""
        question = question.strip()[:MAX_QUESTION_CHARS]
        terms = tokenize(question)
        w = self.weights
        n = self.manifest.sentences
        allowed = self._filter(sources, since, until)
        levels = self._level_scores(terms)
        scores = self._keyword_scores(levels, allowed)
        covered = 1.0
        if self.encoder is not None and question and (w.dense_weak is not None or self.neighbours is not None):
            covered = self._coverage(scores, terms)
            extra = expand(terms, self.neighbours, QUESTION_FRAME) \
                if self.neighbours is not None and w.expansion > 0 and covered < w.expand_below else []
            if extra:  # the extra words count `expansion` of a question word at every level
                more = self._level_scores(extra)
                scores = self._keyword_scores({lv: s + w.expansion * more[lv] for lv, s in levels.items()}, allowed)
        pool = max(50, 10 * k)
        cand = np.argsort(-scores)[:pool]
        cand = cand[scores[cand] > 0] if self.encoder is None else cand[np.isfinite(scores[cand])]
        dense = None
        if self.encoder is not None and question:
            qv = self.encoder.encode_queries([question])
            _, ids = self.faiss.search(qv, pool if allowed is None else min(n, pool * 20))
            ids = ids[0][ids[0] >= 0]
            if allowed is not None:
                ids = ids[allowed[ids]]
            cand = np.unique(np.concatenate([cand, ids[:pool]]))  # sorted, which suits the memmap
            dense = np.asarray(self.vectors[cand] @ qv[0], dtype=np.float32)
            fused = scores[cand] + self._dense_weight(covered) * dense
        else:
            fused = scores[cand]
        order = np.argsort(-fused, kind="stable")
        ranked = [(int(cand[i]), float(fused[i]), None if dense is None else float(dense[i])) for i in order]
        hits = self._hits(ranked, terms, k)
        places = int(w.dense_places * k) if dense is not None and covered < w.places_below else 0
        if places and len(hits) > k - places:
            head = hits[:k - places]
            seen = {p.sentence_id for h in head for p in h.sources}
            # the model's best that the head does not hold are among its best len(seen) + places
            by_dense = sorted(ranked, key=lambda r: -r[2])[:len(seen) + places]
            extra = self._hits([r for r in by_dense if self._sentence_id(r[0]) not in seen], terms, places)
            taken = seen | {p.sentence_id for h in extra for p in h.sources}
            hits = (head + extra + [h for h in hits[k - places:] if h.passage.sentence_id not in taken])[:k]
        return hits

    def _filter(self, sources, since, until) -> np.ndarray | None:
        if not sources and not since and not until:
            return None
        ok = np.ones(len(self.article_ids), dtype=bool)
        if sources:
            ok &= np.isin(self.article_source, list(sources))
        if since:
            ok &= np.array([bool(d) and d >= since for d in self.article_date])
        if until:
            ok &= np.array([bool(d) and d <= until for d in self.article_date])
        return ok[self.sentence_article]

    def _hits(self, ranked: list[tuple[int, float, float | None]], terms: list[str], k: int) -> list[Hit]:
        groups: list[list[tuple[Passage, float, float | None, set[str]]]] = []
        for pos, score, dense in ranked:
            p = self._passage(pos)
            toks = set(tokenize(p.text))
            for g in groups:
                if p.article_id not in {q.article_id for q, *_ in g} and same_fact(toks, g[0][3]):
                    g.append((p, score, dense, toks))
                    break
            else:
                if len(groups) == k:
                    continue
                groups.append([(p, score, dense, toks)])
        return [self._hit(g, terms) for g in groups]

    def _hit(self, group, terms: list[str]) -> Hit:
        p, score, dense, _ = group[0]
        before = [t for (t,) in self.db.execute(
            "SELECT text FROM sentences WHERE article_id = ? AND idx = ?", (p.article_id, p.index - 1))]
        after = [t for (t,) in self.db.execute(
            "SELECT text FROM sentences WHERE article_id = ? AND idx = ?", (p.article_id, p.index + 1))]
        support = self.support(terms, " ".join([*before, p.text, *after])) if self.support(terms, p.text) else 0.0
        return Hit(passage=p, score=score, support=support,
                   dense=dense, before=tuple(before), after=tuple(after),
                   sources=tuple(q for q, *_ in group))

    def _level_scores(self, terms: list[str]) -> dict[str, np.ndarray]:
        """Raw BM25 scores of terms per keyword level with a weight, each (n,) over sentences (the
        article level's spread to its sentences)."""
        w = self.weights
        out = {}
        for level, weight in zip(KEYWORD_LEVELS, (w.sentence, w.window, w.article)):
            if terms and weight:
                s = self.bm25[level].get_scores(terms)
                out[level] = s[self.sentence_article] if level == "article" else s
        return out

    def _keyword_scores(self, levels: dict[str, np.ndarray], allowed: np.ndarray | None) -> np.ndarray:
        """(n,) float32: each level divided by its best and weighted, summed; -inf where filtered out."""
        w = dict(zip(KEYWORD_LEVELS, (self.weights.sentence, self.weights.window, self.weights.article)))
        scores = np.zeros(self.manifest.sentences, dtype=np.float32)
        for level, s in levels.items():
            top = float(s.max())
            if top > 0:
                scores += w[level] * s / top
        if allowed is not None:
            scores[~allowed] = -np.inf
        return scores

    def _coverage(self, keyword_scores: np.ndarray, terms: list[str]) -> float:
        """Support (0..1) of the best keyword match with its neighbours: how well the words alone did."""
        top = int(np.argmax(keyword_scores))
        covered = 0.0
        if keyword_scores[top] > 0:
            p = self._passage(top)
            around = [t for (t,) in self.db.execute(
                "SELECT text FROM sentences WHERE article_id = ? AND idx BETWEEN ? AND ? ORDER BY idx",
                (p.article_id, p.index - 1, p.index + 1))]
            covered = self.support(terms, " ".join(around))
        return covered

    def _dense_weight(self, covered: float) -> float:
        w = self.weights
        if w.dense_weak is None:
            return w.dense
        return w.dense + (w.dense_weak - w.dense) * (1.0 - covered) ** 2

    def support(self, terms: list[str], text: str) -> float:
        """Share of the question terms' idf found in text (0..1): how much of the question it covers.

        Words that frame the question ("name", "date", "happen") do not count unless nothing else is left.
        """
        terms = [t for t in terms if t not in QUESTION_FRAME] or terms
        if not terms:
            return 0.0
        present = set(tokenize(text))
        weights = {t: self.idf.get(t, self.unknown_idf) for t in set(terms)}
        return sum(v for t, v in weights.items() if t in present) / sum(weights.values())

    def _sentence_id(self, pos: int) -> str:
        return self.db.execute("SELECT id FROM sentences WHERE pos = ?", (pos,)).fetchone()[0]

    def _passage(self, pos: int) -> Passage:
        row = self.db.execute(
            "SELECT s.id, s.article_id, a.title, a.source, a.published, a.url, s.idx, s.paragraph, s.start, "
            "s.end, s.text FROM sentences s JOIN articles a ON a.id = s.article_id WHERE s.pos = ?",
            (pos,)).fetchone()
        return Passage(*row)


def same_fact(a: set[str], b: set[str], threshold: float = 0.6) -> bool:
    """Two sentences state the same fact when most content words of the shorter one recur in the other."""
    if min(len(a), len(b)) < 4:
        return a == b and bool(a)
    return len(a & b) / min(len(a), len(b)) >= threshold
