"""Hybrid sentence retrieval: BM25 over sentence, window and article, fused with FAISS cosine."""
from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from qa import models, selftrain
from qa.articles import Article
from qa.embed import KEYWORD_ONLY, PRETRAINED, SELF_TRAINED, Encoder, Mode
from qa.expand import WordNeighbours, expand
from qa.index import KEYWORD_LEVELS, IndexUnusable, Manifest, idf, keyword_settings, live_generation
from qa.shard import QuestionLost, Shard, add_counts, fuse, scale_of
from qa.tokens import QUESTION_FRAME, tokenize

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
# Once k facts are found, this many more ranked sentences are looked at for their other sources.
LOOKAHEAD = 20
# Through several Ray actors, each picks GUESS times the pool by its own scores in the call that
# scores the question: rescaled, they hold the index's pool best in most questions (_KeywordQuery._guess).
GUESS = 2


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


class Passage(NamedTuple):
    """A sentence in its article, with what a citation needs. (A named tuple, not a frozen
    dataclass: a search makes one per source, and this is a third of the cost.)"""
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


class Local:
    """Shards in this process: a call is a method call."""

    remote = False  # a call costs no round trip: ask only for what is needed, when it is needed
    whole = False  # the retriever merges the shards' answers (qa.cluster.Remote: maybe one actor does it all)

    def __init__(self, shards: list[Shard]):
        self.shards = shards

    def call(self, name: str, *args) -> list:
        """name(*args) on every shard, in shard order."""
        return [getattr(s, name)(*args) for s in self.shards]

    def call_each(self, name: str, args: list[tuple]) -> list:
        """name(*args[j]) on shard j; None for a shard given None."""
        return [None if a is None else getattr(s, name)(*a) for s, a in zip(self.shards, args)]

    def close(self) -> None:
        for s in self.shards:
            s.close()


_QUESTION_IDS = itertools.count(1)


class Retriever:
    """A loaded index: its segments, searched together. Load once with Retriever.load and share it;
    search is read-only.

    The segments' work is done by shards (qa.shard): one in this process, or Ray actors
    (qa.cluster); the retriever merges their answers the same way in both cases."""

    def __init__(self, gen: Path, manifest: Manifest, encoder: Encoder | None, notice: str = "",
                 weights: Weights = Weights(), shards=None, dense: bool | None = None):
        """dense: the segments' vectors are searched (default: when there is an encoder; a Ray actor
        searching for the driver holds the vectors and is sent each question's vector)."""
        self.manifest, self.encoder, self.weights = manifest, encoder, weights
        self.dense = encoder is not None if dense is None else dense
        self.notice = notice or manifest.mode_reason
        self.ray: str | None = None  # the Ray cluster serving the shards (Retriever.load), None: this process
        self.actors: int | None = None
        names = [s["name"] for s in manifest.segments]
        self.shards = shards if shards is not None else Local([Shard(gen, names, 0, load_vectors=self.dense)])
        parts = self.shards.call("counts")
        counts = [c for part in parts for c in part]
        self.owner = [j for j, part in enumerate(parts) for _ in part]  # which shard holds segment i
        self.shard_count = len(parts)
        # Keyword statistics over every segment together (deleted rows count until a merge drops
        # them, as in Lucene): scores compare across segments.
        self.docs = {"sentence": sum(s for s, _ in counts), "window": sum(s for s, _ in counts),
                     "article": sum(a for _, a in counts)}
        self.segment_sentences = [s for s, _ in counts]
        self.unknown_idf = math.log((manifest.sentences + 1) / 0.5)
        self._df_cache: dict[tuple[str, str], int] = {}
        # Every term's df, kept here through Ray (one round trip less per question) and for query
        # expansion's word list; else summed over the segments when a question first needs it.
        expanding = encoder is not None and weights.expansion > 0
        self._df_table: dict[str, list[int]] | None = None
        if self.shards.remote or expanding:
            self._df_table = {}
            for part in self.shards.call("df_table"):
                add_counts(self._df_table, part.items())
        self.neighbours = None
        if expanding:
            self.neighbours = WordNeighbours.from_model(encoder.model, {t: c[0] for t, c in self._df_table.items()})

    @classmethod
    def load(cls, index_dir: str | Path, encoder: Encoder | None = None, load_model: bool = True,
             weights: Weights | None = None, ray: str | None = None, actors: int | None = None) -> "Retriever":
        """Open the live index in index_dir; loads its model unless one is given or load_model is False.

        weights: None picks them for the index's model (SELF_TRAINED_WEIGHTS for a self-trained one).
        ray: serve the segments from Ray actors (qa.cluster) on this cluster: 'local', 'auto' or the
        head's address; actors: how many (default one per node). None: in this process.
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
        shards = None
        if ray:
            from qa import cluster
            # one actor holding every segment runs whole searches; with query expansion it needs the
            # model's word vectors: a self-trained model it loads from the generation, another not at all
            expanding = encoder is not None and weights.expansion > 0
            own_model = expanding and manifest.model == selftrain.SELF_TRAINED
            shards = cluster.serve(gen, manifest.segments, encoder is not None, ray, actors,
                                   whole=(weights, own_model) if own_model or not expanding else None)
        r = cls(gen, manifest, encoder, notice, weights, shards)
        r.ray, r.actors = ray, actors
        return r

    def close(self) -> None:
        self.shards.close()

    @property
    def mode(self) -> Mode:
        if self.encoder is None:
            return Mode(KEYWORD_ONLY)
        if self.encoder.info.name == selftrain.SELF_TRAINED:
            return Mode(SELF_TRAINED)
        return Mode(PRETRAINED, self.encoder.info.name)

    def stats(self) -> Stats:
        parts = self.shards.call("facts")
        dates = np.concatenate([d for d, _ in parts])
        dated = dates[dates > 0]
        return Stats(articles=self.manifest.articles, sentences=self.manifest.sentences,
                     first_date=_iso(int(dated.min())) if len(dated) else "",
                     last_date=_iso(int(dated.max())) if len(dated) else "",
                     sources=tuple(sorted(set().union(*(s for _, s in parts)))), mode=self.mode,
                     mode_reason=self.notice, undated=int((dates == 0).sum()))

    @property
    def article_ids(self) -> list[str]:
        """Every live article's id, in index order."""
        return [a for part in self.shards.call("article_ids") for a in part]

    def article(self, article_id: str) -> Article | None:
        """The live article with this id, or None (the newest segment holding it wins)."""
        return next((a for a in reversed(self.shards.call("article", article_id)) if a is not None), None)

    def article_with_text_key(self, key: str) -> str | None:
        """The id of the live article whose text has this text_key (qa.articles.text_key), if any."""
        return next((a for a in self.shards.call("article_with_text_key", key) if a is not None), None)

    def find_sentence(self, article_id: str, text: str) -> str | None:
        """The id of the sentence of article_id that reads exactly text, if the index holds one."""
        return next((s for s in reversed(self.shards.call("find_sentence", article_id, text)) if s is not None), None)

    # -- whole-index views, for benchmarks and evaluation ---------------------------------------

    def offsets(self) -> list[int]:
        """Each segment's first position: a sentence's position is its segment's offset plus its row
        (deleted rows keep their positions until a merge drops them)."""
        return [0, *np.cumsum(self.segment_sentences).tolist()][:len(self.segment_sentences)]

    def sentences(self) -> Iterator[tuple[int, str, str, int, int, str]]:
        """(position, sentence id, article id, start, end, text) of every live sentence, in index order."""
        offsets = self.offsets()
        mine = [[o for o, owner in zip(offsets, self.owner) if owner == j] for j in range(self.shard_count)]
        for part in self.shards.call_each("sentences", [(o,) for o in mine]):  # in one process: generators
            yield from part

    def positions(self) -> int:
        """How many positions there are (live sentences and deleted ones)."""
        return self.docs["sentence"]

    def level_scores(self, terms: list[str]) -> dict[str, np.ndarray]:
        """Raw BM25 scores of terms at each keyword level, (positions,) float32 each (the article
        level spread to its sentences; deleted rows 0): what search fuses."""
        spec = _KeywordQuery.spec_for(self, Counter(terms), None)
        parts = self.shards.call("level_scores", spec)
        return {lv: np.concatenate([a for part in parts for a in part[lv]]) for lv in KEYWORD_LEVELS}

    def all_vectors(self) -> np.ndarray:
        """(positions, d) float32: every sentence's vector (a copy, decoded from the segments' indexes)."""
        return np.concatenate(self.shards.call("vectors"))

    # -- search ---------------------------------------------------------------------------------

    def search(self, question: str, k: int = 5, sources: list[str] | None = None,
               since: str | None = None, until: str | None = None) -> list[Hit]:
        """The k best hits for question, best first; near-identical sentences of different
        articles are merged into one hit. Filters: outlet names, ISO dates (inclusive)."""
        filt = _filter(sources, since, until)
        question = question.strip()[:MAX_QUESTION_CHARS]
        qv = self.encoder.encode_queries([question]) if self.encoder is not None and question else None
        if self.shards.whole:  # one Ray actor holds every segment: the whole search runs there, one call
            return self.shards.call("search", question, k, filt, qv)[0]
        return self.search_with(question, k, filt, qv)

    def search_with(self, question: str, k: int, filt, qv: np.ndarray | None) -> list[Hit]:
        """search for a stripped question, a filter (qa.shard.Filter) and its vector (with dense)."""
        try:
            return self._search(question, k, filt, qv)
        except QuestionLost:  # a restarted actor, or a burst of questions: once more, from the start
            return self._search(question, k, filt, qv)

    def _search(self, question: str, k: int, filt, qv: np.ndarray | None) -> list[Hit]:
        terms = tokenize(question)
        w = self.weights
        pool = max(50, 10 * k)
        rows_for = 2 * k + LOOKAHEAD  # through Ray, the rows that grouping usually reads come with the candidates
        positive = not self.dense
        # how well the words alone did decides the model's weight or the expansion, before candidates
        check_coverage = self.dense and bool(question) and (w.dense_weak is not None or self.neighbours is not None)
        first = None if check_coverage else (pool, positive, rows_for)  # the first candidates asked for, when known now
        keyword = _KeywordQuery(self, Counter(terms), filt, rows_for, first)
        try:
            covered = 1.0
            if check_coverage:
                covered = self._coverage(keyword, terms)
                extra = expand(terms, self.neighbours, QUESTION_FRAME) \
                    if self.neighbours is not None and w.expansion > 0 and covered < w.expand_below else []
                if extra:  # the extra words count `expansion` of a question word at every level
                    weights = Counter(terms)
                    for t in extra:
                        weights[t] += w.expansion
                    keyword.close()
                    keyword = _KeywordQuery(self, weights, filt, rows_for)
            cand, fused = keyword.top(pool, positive)  # (segment, row) pairs, best first
            dense = None
            if self.dense and qv is not None:
                found = sorted((x for part in self.shards.call("dense", qv, pool, filt) for x in part),
                               key=lambda x: -x[0])
                cand = sorted(set(cand) | {(i, r) for _, i, r in found[:pool]})
                fused, dense = keyword.scores(cand, qv)
                fused = fused + self._dense_weight(covered) * dense
        finally:
            keyword.close()
        order = np.argsort(-fused, kind="stable")
        ranked = [(cand[i], float(fused[i]), None if dense is None else float(dense[i])) for i in order.tolist()]
        info = dict(keyword.rows)
        hits = self._hits(ranked, terms, k, info, keyword.passages)
        places = int(w.dense_places * k) if dense is not None and covered < w.places_below else 0
        if places and len(hits) > k - places:
            head = hits[:k - places]
            seen = {p.sentence_id for h in head for p in h.sources}
            # the model's best that the head does not hold are among its best len(seen) + places
            by_dense = sorted(ranked, key=lambda r: -r[2])[:len(seen) + places]
            extra = [h for h in self._hits(by_dense, terms, len(seen) + places, info, keyword.passages)
                     if not {p.sentence_id for p in h.sources} & seen][:places]
            taken = seen | {p.sentence_id for h in extra for p in h.sources}
            hits = (head + extra + [h for h in hits[k - places:] if h.passage.sentence_id not in taken])[:k]
        return hits

    def by_owner(self, keys) -> list[list[tuple[int, int]]]:
        """keys split by the shard holding them, in shard order."""
        mine: list[list] = [[] for _ in range(self.shard_count)]
        for key in keys:
            mine[self.owner[key[0]]].append(key)
        return mine

    def _each_key(self, name: str, keys: list[tuple[int, int]], per_shard: list | None = None) -> list:
        """name(keys of shard j[, per_shard[j]]) on each shard holding some of keys."""
        return self.shards.call_each(name, [None if not m else (m,) if per_shard is None else (m, per_shard[j])
                                            for j, m in enumerate(self.by_owner(keys))])

    def _rows(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, frozenset[str]]]:
        """(article row, stored tokens) of each key."""
        out = {}
        for part in self._each_key("rows", keys):
            out.update(part or {})
        return out

    def _hits(self, ranked: list[tuple[tuple[int, int], float, float | None]], terms: list[str], k: int,
              info: dict, passages: dict) -> list[Hit]:
        """Group ranked sentences into k facts (near-identical sentences of different articles are one
        fact, found on the stored tokens), then fetch what the k facts show. info and passages:
        (article row, tokens) and passages of sentences already known (through Ray, the shards send
        those of their best candidates and neighbours with them)."""
        groups: list[list] = []  # per fact: (key, score, dense, tokens) of its sentences, the best first
        articles: list[set[tuple[int, int]]] = []  # per fact, its articles as (segment, article row)
        lookahead = LOOKAHEAD
        batch = 2 * k + LOOKAHEAD  # rows whose tokens are fetched at once
        for n, (key, score, dense) in enumerate(ranked):
            if len(groups) == k:  # near-identical sentences rank side by side: a few more find the sources
                lookahead -= 1
                if lookahead < 0:
                    break
            if key not in info:
                info.update(self._rows([x for x, *_ in ranked[n:n + batch]]))
            art_row, toks = info[key]
            art = (key[0], art_row)
            for g, arts in zip(groups, articles):
                if art not in arts and same_fact(toks, g[0][3]):
                    g.append((key, score, dense, toks))
                    arts.add(art)
                    break
            else:
                if len(groups) < k:
                    groups.append([(key, score, dense, toks)])
                    articles.append({art})
        return self._make_hits(groups, terms, info, passages)

    def _make_hits(self, groups: list[list], terms: list[str], info: dict, known: dict) -> list[Hit]:
        """Hits for the grouped sentences: passages, neighbours and support."""
        wanted: set[tuple[int, int]] = set()
        for g in groups:
            (i, r), *_ = g[0]
            wanted.update(((i, r - 1), (i, r + 1)))
            wanted.update(key for key, *_ in g)
        wanted = {(i, r) for i, r in wanted if 0 <= r < self.segment_sentences[i]}
        rows = {key: known[key] for key in wanted if key in known}
        fetch = sorted(wanted - rows.keys())
        if fetch:
            unknown = sorted(key for g in groups for key in ((g[0][0][0], g[0][0][1] - 1), (g[0][0][0], g[0][0][1] + 1))
                             if key in wanted and key not in info)
            for part in self._each_key("passages", fetch, self.by_owner(unknown)):
                if part:
                    rows.update(part[0])
                    info.update(part[1])
        hits, weights = [], self._term_weights(terms)
        for g in groups:
            (i, r), score, dense, toks = g[0]
            art = rows[(i, r)][11]
            near = [(i, j) for j in (r - 1, r + 1) if (i, j) in rows and rows[(i, j)][11] == art]
            missing = [key for key in near if key not in info]
            if missing:
                info.update(self._rows(missing))
            window = toks.union(*(info[key][1] for key in near))
            support = _share(weights, window) if _share(weights, toks) else 0.0
            head = _passage(rows[(i, r)])
            hits.append(Hit(passage=head, score=score, support=support, dense=dense,
                            before=tuple(rows[key][10] for key in near if key[1] < r),
                            after=tuple(rows[key][10] for key in near if key[1] > r),
                            sources=(head, *(_passage(rows[key]) for key, *_ in g[1:]))))
        return hits

    def _coverage(self, keyword: "_KeywordQuery", terms: list[str]) -> float:
        """Support (0..1) of the best keyword match with its neighbours: how well the words alone did."""
        best, _ = keyword.top(1, positive=True)
        if not best:
            return 0.0
        i, r = best[0]
        info = self._rows([(i, r - 1), (i, r), (i, r + 1)])
        art = info[(i, r)][0]
        present = set().union(*(toks for a, toks in info.values() if a == art))
        return _share(self._term_weights(terms), present)

    def _dense_weight(self, covered: float) -> float:
        w = self.weights
        if w.dense_weak is None:
            return w.dense
        return w.dense + (w.dense_weak - w.dense) * (1.0 - covered) ** 2

    def df(self, term: str, level: str = "sentence") -> int:
        """Documents of the level holding term, over every segment."""
        return self.dfs([term], level)[0]

    def dfs(self, terms: list[str], level: str) -> list[int]:
        """df of each term (cached: the shards are asked, for every level at once, only about terms
        not seen before)."""
        if self._df_table is not None:
            at = KEYWORD_LEVELS.index(level)
            return [self._df_table[t][at] if t in self._df_table else 0 for t in terms]
        new = [t for t in dict.fromkeys(terms) if (level, t) not in self._df_cache]
        if new:
            if len(self._df_cache) > 100_000:
                self._df_cache.clear()
            parts = self.shards.call("df", new)
            for lv in KEYWORD_LEVELS:
                for t, *counts in zip(new, *(part[lv] for part in parts)):
                    self._df_cache[(lv, t)] = sum(counts)
        return [self._df_cache[(level, t)] for t in terms]

    def support(self, terms: list[str], text: str) -> float:
        """Share of the question terms' idf found in text (0..1): how much of the question it covers.

        Words that frame the question ("name", "date", "happen") do not count unless nothing else is left.
        """
        return _share(self._term_weights(terms), set(tokenize(text)))

    def _term_weights(self, terms: list[str]) -> dict[str, float]:
        """What each question term weighs in support: its idf; frame words only when nothing else is left."""
        terms = list(dict.fromkeys(t for t in terms if t not in QUESTION_FRAME)) or list(dict.fromkeys(terms))
        n = self.manifest.sentences
        return {t: (math.log((n + 1) / (df + 0.5)) if df else self.unknown_idf)
                for t, df in zip(terms, self.dfs(terms, "sentence"))}


class _KeywordQuery:
    """One question's BM25 scores at the three levels over every shard: each level divided by its
    best live value and weighted, then summed (the article level spread to its sentences)."""

    def __init__(self, r: Retriever, terms: Counter, filt, rows_for: int = 0, first: tuple | None = None):
        self.r, self.qid, self.rows_for = r, next(_QUESTION_IDS), rows_for
        self.rows: dict = {}  # (article row, tokens) of the sentences the shards named
        self.passages: dict = {}  # and their passages (qa.store.passages rows)
        self.spec = self.spec_for(r, terms, filt)
        # Through Ray the shards pick candidates in the same call, by their own best scores (see _guess)
        then = None
        if first is not None and r.shards.remote:
            pool, positive, rows_for = first
            then = (pool if r.shard_count == 1 else GUESS * pool, positive, rows_for)
        answers = r.shards.call("start", self.qid, self.spec, then)
        top = dict.fromkeys(KEYWORD_LEVELS, 0.0)
        for best, _ in answers:
            top = {lv: max(top[lv], best[lv]) for lv in KEYWORD_LEVELS}
        self.scale = scale_of(self.spec[2], top)
        self._first = None
        if then is not None:
            for *_, rows, passages, _, _ in (picked for _, picked in answers):
                self.rows.update(rows)
                self.passages.update(passages)
            picked = self._guess([picked for _, picked in answers], first)
            self._first = None if picked is None else (first, picked)

    def _guess(self, picked: list[tuple], first: tuple) -> tuple | None:
        """The pool best candidates of the whole index from the shards' own picks (start), or None
        when they may not be.

        A shard picked by its own scale, each level divided by its own best; the index's best is at
        least as high, so a key's fused score can only drop: a key a shard left out scores at most
        its bar. Rescaled, the picks hold the index's pool best when the pool-th of them scores
        above every bar (or no shard left any key out)."""
        pool, positive, _ = first
        if len(picked) == 1:  # one shard: its best are the index's
            return picked[0][:4]
        keys = [key for p in picked for key in p[0]]
        raw = np.concatenate([p[4] for p in picked], axis=1)
        scores = fuse(raw[0], raw[1], raw[2], self.scale)
        at = np.array(keys, np.int64).reshape(-1, 2)
        order = np.lexsort((at[:, 1], at[:, 0], -scores))
        if positive:
            order = order[scores[order] > 0]
        bars = [p[5] for p in picked if p[5] is not None]
        if bars and (len(order) < pool or float(scores[order[pool - 1]]) <= max(bars)):
            return None
        order = order[:pool]
        return [keys[j] for j in order.tolist()], scores[order], {}, {}

    @staticmethod
    def spec_for(r: Retriever, terms: Counter, filt):
        w = r.weights
        idf_of = {lv: dict(zip(terms, idf(r.dfs(list(terms), lv), r.docs[lv]).tolist())) for lv in KEYWORD_LEVELS}
        return dict(terms), idf_of, dict(zip(KEYWORD_LEVELS, (w.sentence, w.window, w.article))), filt

    def top(self, pool: int, positive: bool) -> tuple[list[tuple[int, int]], np.ndarray]:
        """The pool best (segment, row) pairs by keyword score and their scores, best first (ties:
        index order). Their rows (article row, tokens) are kept in .rows."""
        keys, scores = [], []
        rows_for = self.rows_for if self.r.shards.remote else 0
        if self._first is not None and self._first[0] == (pool, positive, rows_for):
            parts, self._first = [self._first[1]], None  # picked with the scores (start)
        else:
            parts = self.r.shards.call("top", self.qid, self.scale, pool, positive, rows_for)
        for part_keys, part_scores, rows, passages in parts:
            keys += part_keys
            scores.append(part_scores)
            self.rows.update(rows)
            self.passages.update(passages)
        if not keys:
            return [], np.zeros(0, np.float32)
        scores = np.concatenate(scores)
        order = np.lexsort((np.arange(len(keys)), -scores))[:pool]
        return [keys[j] for j in order.tolist()], scores[order]

    def scores(self, keys: list[tuple[int, int]], query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Keyword scores of keys, and their cosines to query when one is given."""
        kw = np.zeros(len(keys), np.float32)
        dense = None if query is None else np.zeros(len(keys), np.float32)
        at = {key: j for j, key in enumerate(keys)}
        mine = self.r.by_owner(keys)
        for m, part in zip(mine, self.r.shards.call_each("score", [
                (self.qid, self.scale, m, query, self.r.shards.remote) if m else None for m in mine])):
            if part is not None:
                js = [at[key] for key in m]
                kw[js] = part[0]
                if dense is not None:
                    dense[js] = part[1]
                self.rows.update(part[2])
        return kw, dense

    def close(self) -> None:
        if not self.r.shards.remote:  # an actor keeps its last few questions' scores (qa.shard.KEPT_QUERIES): no call
            self.r.shards.call("finish", self.qid)


def _filter(sources, since, until):
    """A shard filter (qa.shard.Filter) for outlet names and ISO dates, or None."""
    if not sources and not since and not until:
        return None
    return tuple(sources or ()), _date_bound(since, low=True), _date_bound(until, low=False)


def _share(weights: dict[str, float], present: set[str]) -> float:
    """The share of the weights whose terms are present (0 without weights)."""
    total = sum(weights.values())
    return sum(v for t, v in weights.items() if t in present) / total if total else 0.0


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
