"""Hybrid sentence retrieval: BM25 over sentence, window and article, fused with FAISS cosine."""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from qa import models, selftrain, store
from qa.articles import Article
from qa.embed import KEYWORD_ONLY, PRETRAINED, SELF_TRAINED, Encoder, Mode
from qa.expand import WordNeighbours, expand
from qa.index import KEYWORD_LEVELS, IndexUnusable, Manifest, idf, keyword_settings, live_generation, open_segments
from qa.tokens import QUESTION_FRAME, tokenize

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
# Once k facts are found, this many more ranked sentences are looked at for their other sources.
LOOKAHEAD = 20


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
    undated: int = 0  # articles without a date


class Retriever:
    """A loaded index: its segments, searched together. Load once with Retriever.load and share it;
    search is read-only."""

    def __init__(self, gen: Path, manifest: Manifest, encoder: Encoder | None, notice: str = "",
                 weights: Weights = Weights()):
        self.manifest, self.encoder, self.weights = manifest, encoder, weights
        self.notice = notice or manifest.mode_reason
        self.segments = open_segments(gen, manifest, load_vectors=encoder is not None)
        # Keyword statistics over every segment together (deleted rows count until a merge drops
        # them, as in Lucene): scores compare across segments.
        self.docs = {"sentence": sum(s.sentences for s in self.segments),
                     "window": sum(s.sentences for s in self.segments),
                     "article": sum(s.articles for s in self.segments)}
        self.unknown_idf = math.log((manifest.sentences + 1) / 0.5)
        self._df_cache: dict[tuple[str, str], int] = {}
        self.neighbours = None
        if encoder is not None and weights.expansion > 0:
            sentences_with: dict[str, int] = {}
            for seg in self.segments:
                for t, df in zip(seg.terms, np.diff(seg.levels["sentence"].indptr)):
                    sentences_with[t] = sentences_with.get(t, 0) + int(df)
            self.neighbours = WordNeighbours.from_model(encoder.model, sentences_with)

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

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    @property
    def mode(self) -> Mode:
        if self.encoder is None:
            return Mode(KEYWORD_ONLY)
        if self.encoder.info.name == selftrain.SELF_TRAINED:
            return Mode(SELF_TRAINED)
        return Mode(PRETRAINED, self.encoder.info.name)

    def stats(self) -> Stats:
        dates = np.concatenate([s.article_date[s.live_article] for s in self.segments] or [np.zeros(0, np.int32)])
        dated = dates[dates > 0]
        sources = {seg.sources[c] for seg in self.segments
                   for c in np.unique(seg.article_source[seg.live_article])} - {""}
        return Stats(articles=self.manifest.articles, sentences=self.manifest.sentences,
                     first_date=_iso(int(dated.min())) if len(dated) else "",
                     last_date=_iso(int(dated.max())) if len(dated) else "",
                     sources=tuple(sorted(sources)), mode=self.mode, mode_reason=self.notice,
                     undated=int((dates == 0).sum()))

    @property
    def article_ids(self) -> list[str]:
        """Every live article's id, in index order."""
        return [i for seg in self.segments for i, live in zip(store.article_ids(seg.db), seg.live_article) if live]

    def article(self, article_id: str) -> Article | None:
        for seg in reversed(self.segments):
            found = store.read_article(seg.db, article_id)
            if found is not None and seg.live_article[found[0]]:
                return found[1]
        return None

    def article_with_text_key(self, key: str) -> str | None:
        """The id of the live article whose text has this text_key (qa.articles.text_key), if any."""
        for seg in self.segments:
            for row, aid in store.articles_by_text_key(seg.db, [key]):
                if seg.live_article[row]:
                    return aid
        return None

    def find_sentence(self, article_id: str, text: str) -> str | None:
        """The id of the sentence of article_id that reads exactly text, if the index holds one."""
        for seg in reversed(self.segments):
            row = store.sentence_row(seg.db, article_id, text)
            if row is not None and seg.live_article[seg.sentence_article[row]]:
                return f"{article_id}:{store.passages(seg.db, [row])[row][6]}"
        return None

    # -- whole-index views, for benchmarks and evaluation ---------------------------------------

    def offsets(self) -> list[int]:
        """Each segment's first position: a sentence's position is its segment's offset plus its row
        (deleted rows keep their positions until a merge drops them)."""
        return [0, *np.cumsum([seg.sentences for seg in self.segments]).tolist()][:len(self.segments)]

    def sentences(self) -> Iterator[tuple[int, str, str, int, int, str]]:
        """(position, sentence id, article id, start, end, text) of every live sentence, in index order."""
        for off, seg in zip(self.offsets(), self.segments):
            for row, aid, _, start, end, text in store.sentences(seg.db):
                if seg.live_article[seg.sentence_article[row]]:
                    yield off + row, f"{aid}:{row - seg.article_first[seg.sentence_article[row]]}", aid, start, end, text

    def positions(self) -> int:
        """How many positions there are (live sentences and deleted ones)."""
        return self.docs["sentence"]

    def level_scores(self, terms: list[str]) -> dict[str, np.ndarray]:
        """Raw BM25 scores of terms at each keyword level, (positions,) float32 each (the article
        level spread to its sentences; deleted rows 0): what search fuses."""
        kw = _Keyword(self, Counter(terms), None)
        out = {}
        for lv in KEYWORD_LEVELS:
            parts = []
            for i, seg in enumerate(self.segments):
                a = kw.acc[i][lv][seg.sentence_article] if lv == "article" else kw.acc[i][lv]
                parts.append(a if seg.live is None else np.where(seg.live, a, 0))
            out[lv] = np.concatenate(parts).astype(np.float32)
        return out

    def all_vectors(self) -> np.ndarray:
        """(positions, d) float32: every sentence's vector (a copy, decoded from the segments' indexes)."""
        return np.concatenate([seg.vectors(np.arange(seg.sentences)) for seg in self.segments])

    def search(self, question: str, k: int = 5, sources: list[str] | None = None,
               since: str | None = None, until: str | None = None) -> list[Hit]:
        """The k best hits for question, best first; near-identical sentences of different
        articles are merged into one hit. Filters: outlet names, ISO dates (inclusive)."""
        question = question.strip()[:MAX_QUESTION_CHARS]
        terms = tokenize(question)
        w = self.weights
        pool = max(50, 10 * k)
        allowed = self._filter(sources, since, until)
        keyword = _Keyword(self, Counter(terms), allowed)
        covered = 1.0
        if self.encoder is not None and question and (w.dense_weak is not None or self.neighbours is not None):
            covered = self._coverage(keyword, terms)
            extra = expand(terms, self.neighbours, QUESTION_FRAME) \
                if self.neighbours is not None and w.expansion > 0 and covered < w.expand_below else []
            if extra:  # the extra words count `expansion` of a question word at every level
                weights = Counter(terms)
                for t in extra:
                    weights[t] += w.expansion
                keyword = _Keyword(self, weights, allowed)
        cand = keyword.top(pool, positive=self.encoder is None)  # (segment, row) pairs, best first
        dense = None
        if self.encoder is not None and question:
            qv = self.encoder.encode_queries([question])
            found = []
            for i, seg in enumerate(self.segments):
                if seg.faiss is not None:
                    cos, rows = seg.dense_search(qv, pool, None if allowed is None
                                                 else allowed[i][seg.sentence_article])
                    found += [(float(c), i, int(r)) for c, r in zip(cos, rows)]
            found.sort(key=lambda x: -x[0])
            cand = sorted(set(cand) | {(i, r) for _, i, r in found[:pool]})
            dense = np.zeros(len(cand), np.float32)
            by_segment: dict[int, list[int]] = {}
            for j, (i, r) in enumerate(cand):
                by_segment.setdefault(i, []).append(j)
            for i, js in by_segment.items():
                rows = np.array([cand[j][1] for j in js], dtype=np.int64)
                dense[js] = self.segments[i].vectors(rows) @ qv[0]
            fused = keyword.scores(cand) + self._dense_weight(covered) * dense
        else:
            fused = keyword.scores(cand)
        order = np.argsort(-fused, kind="stable")
        ranked = [(cand[i], float(fused[i]), None if dense is None else float(dense[i])) for i in order]
        hits = self._hits(ranked, terms, k)
        places = int(w.dense_places * k) if dense is not None and covered < w.places_below else 0
        if places and len(hits) > k - places:
            head = hits[:k - places]
            seen = {p.sentence_id for h in head for p in h.sources}
            # the model's best that the head does not hold are among its best len(seen) + places
            by_dense = sorted(ranked, key=lambda r: -r[2])[:len(seen) + places]
            extra = [h for h in self._hits(by_dense, terms, len(seen) + places)
                     if not {p.sentence_id for p in h.sources} & seen][:places]
            taken = seen | {p.sentence_id for h in extra for p in h.sources}
            hits = (head + extra + [h for h in hits[k - places:] if h.passage.sentence_id not in taken])[:k]
        return hits

    def _filter(self, sources, since, until) -> list[np.ndarray] | None:
        """Per segment, a bool mask over its articles (None: no filter)."""
        if not sources and not since and not until:
            return None
        lo, hi = _date_bound(since, low=True), _date_bound(until, low=False)
        out = []
        for seg in self.segments:
            ok = np.ones(seg.articles, dtype=bool)
            if sources:
                codes = [c for c, name in enumerate(seg.sources) if name in set(sources)]
                ok &= np.isin(seg.article_source, codes)
            if lo or hi:
                ok &= seg.article_date > 0
                if lo:
                    ok &= seg.article_date >= lo
                if hi:
                    ok &= seg.article_date <= hi
            out.append(ok)
        return out

    def _hits(self, ranked: list[tuple[tuple[int, int], float, float | None]], terms: list[str], k: int) -> list[Hit]:
        """Group ranked sentences into k facts (near-identical sentences of different articles are one
        fact, found on the stored tokens), then fetch what the k facts show in one query per segment."""
        groups: list[list] = []  # per fact: (key, score, dense, tokens) of its sentences, the best first
        articles: list[set[tuple[int, int]]] = []  # per fact, its articles as (segment, article row)
        lookahead = LOOKAHEAD
        for key, score, dense in ranked:
            if len(groups) == k:  # near-identical sentences rank side by side: a few more find the sources
                lookahead -= 1
                if lookahead < 0:
                    break
            i, r = key
            toks = self._tokens(i, r)
            art = (i, int(self.segments[i].sentence_article[r]))
            for g, arts in zip(groups, articles):
                if art not in arts and same_fact(toks, g[0][3]):
                    g.append((key, score, dense, toks))
                    arts.add(art)
                    break
            else:
                if len(groups) < k:
                    groups.append([(key, score, dense, toks)])
                    articles.append({art})
        return self._make_hits(groups, terms)

    def _tokens(self, i: int, r: int) -> set[str]:
        seg = self.segments[i]
        return set(map(seg.terms.__getitem__, seg.tokens(r).tolist()))

    def _make_hits(self, groups: list[list], terms: list[str]) -> list[Hit]:
        """Hits for the grouped sentences: passages, neighbours and support, one query per segment."""
        wanted: dict[int, set[int]] = {}
        for g in groups:
            (i, r), *_ = g[0]
            wanted.setdefault(i, set()).update((r - 1, r + 1))
            for (j, q), *_ in g:
                wanted.setdefault(j, set()).add(q)
        rows = {}
        for i, want in wanted.items():
            seg = self.segments[i]
            rows.update({(i, r): row for r, row in store.passages(seg.db, [r for r in want if 0 <= r < seg.sentences]).items()})
        hits, weights = [], self._term_weights(terms)
        for g in groups:
            (i, r), score, dense, toks = g[0]
            seg = self.segments[i]
            art = seg.sentence_article[r]
            near = [(i, j) for j in (r - 1, r + 1) if (i, j) in rows and rows[(i, j)][11] == art]
            window = toks.union(*(self._tokens(*key) for key in near))
            support = _share(weights, window) if _share(weights, toks) else 0.0
            hits.append(Hit(passage=_passage(rows[(i, r)]), score=score, support=support, dense=dense,
                            before=tuple(rows[key][10] for key in near if key[1] < r),
                            after=tuple(rows[key][10] for key in near if key[1] > r),
                            sources=tuple(_passage(rows[key]) for key, *_ in g)))
        return hits

    def _coverage(self, keyword: "_Keyword", terms: list[str]) -> float:
        """Support (0..1) of the best keyword match with its neighbours: how well the words alone did."""
        best = keyword.top(1, positive=True)
        if not best:
            return 0.0
        i, r = best[0]
        seg = self.segments[i]
        present: set[str] = set()
        for j in (r - 1, r, r + 1):
            if 0 <= j < seg.sentences and seg.sentence_article[j] == seg.sentence_article[r]:
                present |= self._tokens(i, j)
        return _share(self._term_weights(terms), present)

    def _dense_weight(self, covered: float) -> float:
        w = self.weights
        if w.dense_weak is None:
            return w.dense
        return w.dense + (w.dense_weak - w.dense) * (1.0 - covered) ** 2

    def df(self, term: str, level: str = "sentence") -> int:
        """Documents of the level holding term, over every segment."""
        key = (level, term)
        if key not in self._df_cache:
            if len(self._df_cache) > 100_000:
                self._df_cache.clear()
            self._df_cache[key] = sum(seg.levels[level].df(seg.vocab[term]) for seg in self.segments
                                      if term in seg.vocab)
        return self._df_cache[key]

    def support(self, terms: list[str], text: str) -> float:
        """Share of the question terms' idf found in text (0..1): how much of the question it covers.

        Words that frame the question ("name", "date", "happen") do not count unless nothing else is left.
        """
        return _share(self._term_weights(terms), set(tokenize(text)))

    def _term_weights(self, terms: list[str]) -> dict[str, float]:
        """What each question term weighs in support: its idf; frame words only when nothing else is left."""
        terms = [t for t in terms if t not in QUESTION_FRAME] or terms
        n = self.manifest.sentences
        return {t: (math.log((n + 1) / (df + 0.5)) if (df := self.df(t)) else self.unknown_idf)
                for t in set(terms)}


class _Keyword:
    """One question's BM25 scores at the three levels over every segment: each level divided by its
    best live value and weighted, then summed (the article level spread to its sentences).

    Work grows with the postings of the question's terms, not with the index: scores accumulate in
    zeroed arrays whose untouched pages cost nothing, and candidates are the postings themselves."""

    def __init__(self, r: Retriever, terms: Counter, allowed: list[np.ndarray] | None):
        self.r, self.allowed = r, allowed  # allowed: per segment, a bool mask over its articles
        w = r.weights
        self.level_weight = dict(zip(KEYWORD_LEVELS, (w.sentence, w.window, w.article)))
        idf_of = {lv: dict(zip(terms, idf([r.df(t, lv) for t in terms], r.docs[lv]).tolist())) for lv in KEYWORD_LEVELS}
        self.acc: list[dict[str, np.ndarray]] = []
        self.docs: list[np.ndarray] = []  # per segment: the live rows the terms' window postings hold (repeats kept)
        self.arts: list[np.ndarray] = []  # per segment: the live articles holding a term (repeats kept)
        self.lists = 0  # the most times a row can recur in docs (or an article in arts)
        top = dict.fromkeys(KEYWORD_LEVELS, 0.0)
        for seg in r.segments:
            acc, found = {}, {}
            for lv in KEYWORD_LEVELS:
                p = seg.levels[lv]
                a = np.zeros(p.docs, np.float32)
                hit = []
                if self.level_weight[lv] or lv == "window":
                    for t, count in terms.items():
                        tid = seg.vocab.get(t)
                        if tid is not None:
                            idx, tfc = p.of(tid)
                            a[idx] += tfc * np.float32(count * idf_of[lv][t] / 255)
                            hit.append(idx)
                acc[lv] = a
                found[lv] = _joined(hit)
                self.lists = max(self.lists, len(hit))
            if seg.live is not None:
                found["sentence"] = found["sentence"][seg.live[found["sentence"]]]
                found["window"] = found["window"][seg.live[found["window"]]]
                found["article"] = found["article"][seg.live_article[found["article"]]]
            for lv in KEYWORD_LEVELS:
                if seg.live is None:
                    top[lv] = max(top[lv], float(acc[lv].max()))
                elif len(found[lv]):
                    top[lv] = max(top[lv], float(acc[lv][found[lv]].max()))
            self.acc.append(acc)
            self.docs.append(found["window"])
            self.arts.append(found["article"])
        self.scale = {lv: (self.level_weight[lv] / top[lv] if top[lv] > 0 else 0.0) for lv in KEYWORD_LEVELS}

    def _fused(self, i: int, rows: np.ndarray) -> np.ndarray:
        acc, seg, s = self.acc[i], self.r.segments[i], self.scale
        return (s["sentence"] * acc["sentence"][rows] + s["window"] * acc["window"][rows]
                + s["article"] * acc["article"][seg.sentence_article[rows]]).astype(np.float32)

    def top(self, pool: int, positive: bool) -> list[tuple[int, int]]:
        """The pool best (segment, row) pairs by keyword score, best first; positive: only those with
        a score above 0 (else live, allowed sentences fill up the pool).

        No pass over the whole index. A row scoring above 0 holds a term in its window (it is in
        the window postings) or lies in an article holding one; of the latter only the sentences of
        the pool best articles can make the pool (each of those articles has a sentence scoring at
        least as much). A row recurs at most once per term, so the pool best distinct rows are
        among the pool × (terms + 1) best entries of the postings taken together."""
        keys, scores = [], []
        for i, seg in enumerate(self.r.segments):
            ok = None if self.allowed is None else self.allowed[i]
            parts = [self.docs[i] if ok is None else self.docs[i][ok[seg.sentence_article[self.docs[i]]]]]
            if self.scale["article"] > 0 and len(self.arts[i]):
                art, arts = self.acc[i]["article"], self.arts[i]
                arts = arts if ok is None else arts[ok[arts]]
                arts = np.unique(_best(arts, art[arts], pool * self.lists))
                arts = _best(arts, art[arts], pool)
                # every sentence of the best articles: one of them may outscore the matching sentences
                starts, counts = seg.article_first[arts], seg.article_length[arts]
                parts.append(np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum()))
            if not positive:
                filler = np.arange(min(seg.sentences, pool))
                filler = filler if seg.live is None else filler[seg.live[filler]]
                parts.append(filler if ok is None else filler[ok[seg.sentence_article[filler]]])
            marked = np.zeros(seg.sentences, bool)
            for part in parts:
                marked[part] = True
            rows = np.flatnonzero(marked)
            s = self._fused(i, rows)
            keep = _best(np.arange(len(rows)), s, pool)
            rows, s = rows[keep], s[keep]
            if positive:
                rows, s = rows[s > 0], s[s > 0]
            keys += [(i, r) for r in rows.tolist()]
            scores.append(s)
        if not keys:
            return []
        scores = np.concatenate(scores)
        order = np.lexsort((np.arange(len(keys)), -scores))[:pool]
        return [keys[j] for j in order.tolist()]

    def scores(self, keys: list[tuple[int, int]]) -> np.ndarray:
        out = np.zeros(len(keys), np.float32)
        by_segment: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(keys):
            by_segment.setdefault(i, []).append(j)
        for i, js in by_segment.items():
            out[js] = self._fused(i, np.array([keys[j][1] for j in js], dtype=np.int64))
        return out


def _share(weights: dict[str, float], present: set[str]) -> float:
    """The share of the weights whose terms are present (0 without weights)."""
    total = sum(weights.values())
    return sum(v for t, v in weights.items() if t in present) / total if total else 0.0


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _best(rows: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """The rows with the n highest scores (in no order)."""
    return rows if len(rows) <= n else rows[np.argpartition(-scores, n)[:n]]


def _passage(row: tuple) -> Passage:
    _, aid, title, source, published, url, idx, paragraph, start, end, text, _ = row
    return Passage(f"{aid}:{idx}", aid, title, source, published, url, idx, paragraph, start, end, text)


def _iso(date: int) -> str:
    return f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"


def _date_bound(value: str | None, low: bool) -> int:
    """An ISO date (or a year, or a year and month) as YYYYMMDD: the first or last day it covers."""
    if not value:
        return 0
    digits = "".join(c for c in value[:10] if c.isdigit())
    if len(digits) not in (4, 6, 8):
        raise ValueError(f"not a date: {value!r}; use YYYY-MM-DD")
    pad = "0101" if low else "1231"
    return int((digits + pad[len(digits) - 4:]) if len(digits) < 8 else digits)


def same_fact(a: set[str], b: set[str], threshold: float = 0.6) -> bool:
    """Two sentences state the same fact when most content words of the shorter one recur in the other."""
    if min(len(a), len(b)) < 4:
        return a == b and bool(a)
    return len(a & b) / min(len(a), len(b)) >= threshold
