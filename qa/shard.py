"""The search work over some of an index's segments: keyword scores and candidates, vectors, stored
tokens and passages.

One process holds every segment of the live generation in one Shard. A Ray deployment
(qa.cluster) spreads consecutive segments over actors, each holding a Shard; the calls and
their answers are the same plain values either way, and qa.retrieve.Retriever merges them, so a
search gives the same hits in one process and through Ray.

A segment is named by its position i in the manifest; a sentence by (i, row).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from qa import store
from qa.index import KEYWORD_LEVELS, Segment

# How many questions' keyword scores a shard keeps between a search's calls: in one process a search
# ends its own; an actor keeps the last ones (questions asked at once by the chat's 4 workers, and
# more). A search whose scores are gone is asked again (QuestionLost).
KEPT_QUERIES = 16

# A question's keyword part: (term weights, idf per level and term, level weights, filter).
KeywordSpec = tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float], "Filter | None"]
# A filter: outlet names (empty: any) and YYYYMMDD bounds (0: open).
Filter = tuple[tuple[str, ...], int, int]
Key = tuple[int, int]


class QuestionLost(RuntimeError):
    """The shard no longer holds the question's scores (its actor was restarted, or more questions
    came meanwhile than it keeps): ask again from start."""


class Shard:
    """Segments first, first + 1, ... of one generation, opened read-only."""

    def __init__(self, gen: str | Path, names: list[str], first: int = 0, load_vectors: bool = True):
        self.first = first
        self.segments = [Segment(Path(gen) / name, load_vectors) for name in names]
        self._queries: OrderedDict[int, _Scores] = OrderedDict()
        self._lock = threading.Lock()

    def _seg(self, i: int) -> Segment:
        return self.segments[i - self.first]

    def _own(self) -> range:
        return range(self.first, self.first + len(self.segments))

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    # -- what the retriever keeps --------------------------------------------------------------

    def counts(self) -> list[tuple[int, int]]:
        """(sentences, articles) of each segment, deleted rows included."""
        return [(seg.sentences, seg.articles) for seg in self.segments]

    def facts(self) -> tuple[np.ndarray, set[str]]:
        """The live articles' dates (YYYYMMDD, 0: none) and the outlets they name."""
        dates = [seg.article_date[seg.live_article] for seg in self.segments]
        sources = {seg.sources[c] for seg in self.segments for c in np.unique(seg.article_source[seg.live_article])}
        return np.concatenate(dates or [np.zeros(0, np.int32)]), sources - {""}

    def df(self, terms: list[str]) -> dict[str, list[int]]:
        """Per level, the documents holding each term, over this shard's segments."""
        return {lv: [sum(seg.levels[lv].df(seg.vocab[t]) for seg in self.segments if t in seg.vocab) for t in terms]
                for lv in KEYWORD_LEVELS}

    def df_table(self) -> dict[str, list[int]]:
        """Every term's df at each level (KEYWORD_LEVELS order), over this shard's segments."""
        out: dict[str, list[int]] = {}
        for seg in self.segments:
            add_counts(out, zip(seg.terms, zip(*(np.diff(seg.levels[lv].indptr).tolist() for lv in KEYWORD_LEVELS))))
        return out

    # -- keyword scores ------------------------------------------------------------------------

    def start(self, qid: int, spec: KeywordSpec, then: tuple | None = None) -> tuple[dict[str, float], tuple | None]:
        """Score the question's terms at every level and keep the scores under qid; the best live
        score per level. then: (pool, positive, rows_for): also top() of them by this shard's own
        best scores, in the same call, with each key's raw level scores (3 arrays) and the bar
        (the lowest score of a segment that gave pool keys, None: every segment gave all it has).
        When this shard holds every segment its best are the index's; else the retriever rescales
        them, and keeps them when no key left out can reach its pool (Retriever: _KeywordQuery)."""
        found = _Scores(self.segments, spec)
        with self._lock:
            self._queries[qid] = found
            while len(self._queries) > KEPT_QUERIES:
                self._queries.popitem(last=False)
        if then is None:
            return found.top, None
        keys, scores, rows, passages = self.top(qid, scale_of(spec[2], found.top), *then)
        counts = _by_segment(keys)
        bars = [float(scores[js[-1]]) for js in counts.values() if len(js) == then[0]]  # best first per segment
        return found.top, (keys, scores, rows, passages, found.raw(keys, self.first), max(bars, default=None))

    def top(self, qid: int, scale: dict[str, float], pool: int, positive: bool,
            rows_for: int = 0) -> tuple[list[Key], np.ndarray, dict[Key, tuple[int, frozenset[str]]], dict[Key, tuple]]:
        """This shard's pool best sentences by fused keyword score (exact; see _Scores.best); and
        for its rows_for best and their neighbours, rows() and passages(), and rows() of the next
        2 * rows_for: through Ray, the retriever groups the candidates and makes hits of them
        without asking again. (Grouping reads 80 to 120 candidates of a 1M archive for k=10:
        copies of a sentence rank side by side.)"""
        keys, scores = self._held(qid).best(scale, pool, positive, self.first)
        if not rows_for:  # in one process: the retriever asks for what grouping reads
            return keys, scores, {}, {}
        order = np.argsort(-scores, kind="stable")
        best = [keys[j] for j in order[:rows_for].tolist()]
        near = sorted({(i, r + d) for i, r in best for d in (-1, 0, 1)})
        more = [keys[j] for j in order[rows_for:3 * rows_for].tolist()]
        return keys, scores, self.rows(near + more), self.passages(near)[0] if near else {}

    def score(self, qid: int, scale: dict[str, float], keys: list[Key], query: np.ndarray | None = None,
              with_rows: bool = False) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Fused keyword scores of keys, their cosines to query (with a vector) and (with_rows) their rows."""
        kw = self._held(qid).fused_keys(scale, keys, self.first)
        dense = None
        if query is not None:
            dense = np.zeros(len(keys), np.float32)
            for i, js in _by_segment(keys).items():
                dense[js] = self._seg(i).vectors(np.array([keys[j][1] for j in js], np.int64)) @ query[0]
        return kw, dense, self.rows(keys) if with_rows else {}

    def finish(self, qid: int) -> None:
        with self._lock:
            self._queries.pop(qid, None)

    def level_scores(self, spec: KeywordSpec) -> dict[str, list[np.ndarray]]:
        """Raw scores at each level of every row (the article level spread to its sentences; deleted
        rows 0), per segment: what search fuses. For benchmarks."""
        s = _Scores(self.segments, spec)
        out: dict[str, list[np.ndarray]] = {lv: [] for lv in KEYWORD_LEVELS}
        for seg, acc in zip(self.segments, s.acc):
            for lv in KEYWORD_LEVELS:
                a = acc[lv][seg.sentence_article] if lv == "article" else acc[lv]
                out[lv].append((a if seg.live is None else np.where(seg.live, a, 0)).astype(np.float32))
        return out

    def _held(self, qid: int) -> "_Scores":
        with self._lock:
            found = self._queries.get(qid)
        if found is None:
            raise QuestionLost(f"question {qid} is not held by this shard")
        return found

    # -- vectors -------------------------------------------------------------------------------

    def dense(self, query: np.ndarray, k: int, filt: Filter | None) -> list[tuple[float, int, int]]:
        """(cosine, i, row) of each segment's k nearest live, allowed sentences."""
        found = []
        for i in self._own():
            seg = self._seg(i)
            if seg.faiss is not None:
                ok = _allowed(seg, filt)
                cos, rows = seg.dense_search(query, k, None if ok is None else ok[seg.sentence_article])
                found += [(float(c), i, int(r)) for c, r in zip(cos.tolist(), rows.tolist())]
        return found

    def vectors(self) -> np.ndarray:
        return np.concatenate([seg.vectors(np.arange(seg.sentences)) for seg in self.segments])

    # -- rows and passages ---------------------------------------------------------------------

    def rows(self, keys: list[Key]) -> dict[Key, tuple[int, frozenset[str]]]:
        """(article row, its stored tokens as a set) of each existing key."""
        out = {}
        for i, r in keys:
            seg = self._seg(i)
            if 0 <= r < seg.sentences:
                out[(i, r)] = (int(seg.sentence_article[r]), frozenset(map(seg.terms.__getitem__, seg.tokens(r).tolist())))
        return out

    def passages(self, keys: list[Key], rows_of: list[Key] = ()) -> tuple[dict[Key, tuple], dict[Key, tuple[int, frozenset[str]]]]:
        """qa.store.passages rows of each existing key (one query per segment), and rows(rows_of)."""
        out = {}
        for i, js in _by_segment(keys).items():
            seg = self._seg(i)
            rows = [keys[j][1] for j in js if 0 <= keys[j][1] < seg.sentences]
            out.update({(i, r): row for r, row in store.passages(seg.db, rows).items()})
        return out, self.rows(rows_of)

    # -- articles ------------------------------------------------------------------------------

    def article(self, article_id: str):
        """The live article with this id (qa.articles.Article), or None; the newest segment first."""
        for seg in reversed(self.segments):
            found = store.read_article(seg.db, article_id)
            if found is not None and seg.live_article[found[0]]:
                return found[1]
        return None

    def article_ids(self) -> list[str]:
        return [a for seg in self.segments for a, live in zip(store.article_ids(seg.db), seg.live_article) if live]

    def article_with_text_key(self, key: str) -> str | None:
        for seg in self.segments:
            for row, aid in store.articles_by_text_key(seg.db, [key]):
                if seg.live_article[row]:
                    return aid
        return None

    def find_sentence(self, article_id: str, text: str) -> str | None:
        for seg in reversed(self.segments):
            row = store.sentence_row(seg.db, article_id, text)
            if row is not None and seg.live_article[seg.sentence_article[row]]:
                return f"{article_id}:{store.passages(seg.db, [row])[row][6]}"
        return None

    def sentences(self, offsets: list[int]):
        """(position, sentence id, article id, start, end, text) of every live sentence (offsets:
        each own segment's first position)."""
        for off, seg in zip(offsets, self.segments):
            for row, aid, _, start, end, text in store.sentences(seg.db):
                art = seg.sentence_article[row]
                if seg.live_article[art]:
                    yield off + row, f"{aid}:{row - seg.article_first[art]}", aid, start, end, text


class _Scores:
    """One question's BM25 scores at the three levels over some segments, accumulated in zeroed
    arrays from the question terms' postings: work grows with those postings, not the index."""

    def __init__(self, segments: list[Segment], spec: KeywordSpec):
        terms, idf_of, level_weight, filt = spec
        self.segments = segments
        self.acc: list[dict[str, np.ndarray]] = []
        self.docs: list[np.ndarray] = []  # per segment: live, allowed rows of the terms' window postings (repeats kept)
        self.arts: list[np.ndarray] = []  # per segment: live, allowed articles holding a term
        self.allowed: list[np.ndarray | None] = []
        self.lists = 0  # the most times a row can recur in docs
        self.top = dict.fromkeys(KEYWORD_LEVELS, 0.0)  # the best live score per level (filters aside)
        for seg in segments:
            acc, found = {}, {}
            for lv in KEYWORD_LEVELS:
                p = seg.levels[lv]
                a = np.zeros(p.docs, np.float32)
                hit = []
                if level_weight[lv] or lv == "window":
                    for t, count in terms.items():
                        tid = seg.vocab.get(t)
                        if tid is not None:
                            idx, tfc = p.of(tid)
                            np.add.at(a, idx, tfc * np.float32(count * idf_of[lv][t] / 255))
                            hit.append(idx)
                acc[lv] = a
                found[lv] = hit
                self.lists = max(self.lists, len(hit))
            # the rows (articles) holding a term; the sentence level's are needed only to find its
            # best live score where rows were deleted
            found = {lv: _joined(hit) for lv, hit in found.items() if lv != "sentence" or seg.live is not None}
            if seg.live is not None:
                found = {"sentence": found["sentence"][seg.live[found["sentence"]]],
                         "window": found["window"][seg.live[found["window"]]],
                         "article": found["article"][seg.live_article[found["article"]]]}
            for lv in KEYWORD_LEVELS:
                if seg.live is None:
                    self.top[lv] = max(self.top[lv], float(acc[lv].max(initial=0.0)))
                elif len(found[lv]):
                    self.top[lv] = max(self.top[lv], float(acc[lv][found[lv]].max()))
            ok = _allowed(seg, filt)
            self.allowed.append(ok)
            docs, arts = found["window"], found["article"]
            self.acc.append(acc)
            self.docs.append(docs if ok is None else docs[ok[seg.sentence_article[docs]]])
            held = np.zeros(seg.articles, bool)
            held[arts if ok is None else arts[ok[arts]]] = True
            self.arts.append(np.flatnonzero(held))

    def levels(self, n: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw sentence, window and article scores of rows of the n-th segment (fresh arrays)."""
        acc, seg = self.acc[n], self.segments[n]
        return (np.take(acc["sentence"], rows), np.take(acc["window"], rows),
                np.take(acc["article"], np.take(seg.sentence_article, rows)))

    def fused(self, n: int, scale: dict[str, float], rows: np.ndarray) -> np.ndarray:
        """Fused scores of rows of the n-th segment: each level divided by its best and weighted (scale)."""
        return fuse(*self.levels(n, rows), scale)

    def raw(self, keys: list[Key], first: int) -> np.ndarray:
        """(3, len(keys)) float32: the raw level scores of (i, row) keys of segments numbered from first."""
        out = np.zeros((3, len(keys)), np.float32)
        for i, js in _by_segment(keys).items():
            out[:, js] = self.levels(i - first, np.array([keys[j][1] for j in js], np.int64))
        return out

    def fused_keys(self, scale: dict[str, float], keys: list[Key], first: int) -> np.ndarray:
        """Fused scores of (i, row) keys whose segments are numbered from first."""
        sentence, window, article = self.raw(keys, first)
        return fuse(sentence, window, article, scale)

    def best(self, scale: dict[str, float], pool: int, positive: bool, first: int = 0) -> tuple[list[Key], np.ndarray]:
        """The pool best (first + n, row) pairs of these segments (n: the n-th) by fused score, best
        first per segment (positive: only those above 0; else live, allowed sentences fill up the pool).

        No pass over the whole index. A row scoring above 0 holds a term in its window (it is in
        the window postings) or lies in an article holding one; of the latter only the sentences of
        the pool best articles can make the pool (each of those articles has a sentence scoring at
        least as much). So the pool best rows are among the window postings' rows (each there
        once per term at most), those articles' sentences and, unless positive, the filler.

        The best articles' sentences are scored first; the pool-th best of them is a bar that a
        posting's row can only reach when its article part plus the most its sentence and window
        parts can add (each level's best here, weighted) reaches it: only those rows are scored.
        Exact: a row left out scores below pool rows already scored."""
        found = []  # per segment: (the window postings' rows, the best articles' sentences, filler)
        for n, seg in enumerate(self.segments):
            ok = self.allowed[n]
            sure = np.zeros(0, np.int64)
            if scale["article"] > 0 and len(self.arts[n]):
                arts = self.arts[n]
                # every sentence of the best articles: one of them may outscore the matching sentences
                sure = _sentences(seg, _top_distinct(arts, self.acc[n]["article"][arts], pool, 1)[0])
            filler = np.zeros(0, np.int64)
            if not positive:
                filler = np.arange(min(seg.sentences, pool))
                filler = filler if seg.live is None else filler[seg.live[filler]]
                filler = filler if ok is None else filler[ok[seg.sentence_article[filler]]]
            found.append((self.docs[n], sure, filler))
        sure_scores = [self.fused(n, scale, sure) for n, (_, sure, _) in enumerate(found)]
        every = np.concatenate(sure_scores) if sure_scores else np.zeros(0, np.float32)
        bar = float(np.partition(every, len(every) - pool)[len(every) - pool]) if len(every) >= pool else 0.0
        room = scale["sentence"] * self.top["sentence"] + scale["window"] * self.top["window"]
        keys: list[Key] = []
        scores = []
        for n, ((docs, sure, filler), s_sure) in enumerate(zip(found, sure_scores)):
            repeats = self.lists + 2  # a row: once per term in docs, once in sure, once in filler
            if bar > 0 and len(docs) and scale["article"] > 0:
                seg, art, arts = self.segments[n], self.acc[n]["article"], self.arts[n]
                cut = (bar - room - 1e-4 * max(1.0, bar)) / scale["article"]  # the margin: float32 rounding
                # the articles that can reach the bar: all their sentences when they are fewer than the
                # postings' rows (a sentence without a term in its window scores its article part)
                good = arts[art[arts] >= cut]
                if seg.article_length[good].sum() < len(docs):
                    docs, repeats = _sentences(seg, good), 3
                else:
                    docs = docs[np.take(art, np.take(seg.sentence_article, docs)) >= cut]
            rows = _joined([docs, filler])
            s = np.concatenate([self.fused(n, scale, rows), s_sure])
            rows, s = _top_distinct(np.concatenate([rows, sure]), s, pool, repeats)
            if positive:
                rows, s = rows[s > 0], s[s > 0]
            keys += [(first + n, r) for r in rows.tolist()]
            scores.append(s)
        return keys, (np.concatenate(scores) if scores else np.zeros(0, np.float32))


def fuse(sentence: np.ndarray, window: np.ndarray, article: np.ndarray, scale: dict[str, float]) -> np.ndarray:
    """The fused score from raw level scores (overwritten): every fused score is computed here, the
    same float32 operations in the same order, so scores compare exactly wherever they were made.
    In-place products: a third faster than a sum of gathers."""
    sentence *= np.float32(scale["sentence"])
    window *= np.float32(scale["window"])
    sentence += window
    article *= np.float32(scale["article"])
    sentence += article
    return sentence


def add_counts(into: dict[str, list[int]], counts) -> None:
    """Add (term, per-level counts) pairs into a df table."""
    for t, c in counts:
        have = into.get(t)
        into[t] = list(c) if have is None else [a + b for a, b in zip(have, c)]


def scale_of(level_weight: dict[str, float], top: dict[str, float]) -> dict[str, float]:
    """What each level's scores are multiplied by in the fused score: its weight over its best."""
    return {lv: (level_weight[lv] / top[lv] if top[lv] > 0 else 0.0) for lv in KEYWORD_LEVELS}


def _allowed(seg: Segment, filt: Filter | None) -> np.ndarray | None:
    """A bool mask over the segment's articles (None: no filter)."""
    if filt is None:
        return None
    sources, lo, hi = filt
    ok = np.ones(seg.articles, dtype=bool)
    if sources:
        ok &= np.isin(seg.article_source, [c for c, name in enumerate(seg.sources) if name in set(sources)])
    if lo or hi:
        ok &= seg.article_date > 0
        if lo:
            ok &= seg.article_date >= lo
        if hi:
            ok &= seg.article_date <= hi
    return ok


def _by_segment(keys: list[Key]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for j, (i, _) in enumerate(keys):
        out.setdefault(i, []).append(j)
    return out


def _sentences(seg: Segment, arts: np.ndarray) -> np.ndarray:
    """The rows of the live sentences of articles arts (article rows) of seg."""
    counts = seg.article_length[arts]
    rows = np.repeat(seg.article_first[arts] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return rows if seg.live is None else rows[seg.live[rows]]


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _top_distinct(rows: np.ndarray, scores: np.ndarray, n: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best distinct rows and their scores, best first (ties: the lower row first), of rows
    that each recur at most repeats times with the same score: the n * repeats best entries (every
    entry tied with the last of them too) hold them. Partial selection, no sort of them all."""
    repeats = max(repeats, 1)
    if len(rows) > n * repeats:
        cut = np.partition(scores, len(scores) - n * repeats)[len(scores) - n * repeats]
        keep = scores >= cut
        rows, scores = rows[keep], scores[keep]
    rows, first = np.unique(rows, return_index=True)
    scores = scores[first]
    order = np.lexsort((rows, -scores))[:n]
    return rows[order], scores[order]
