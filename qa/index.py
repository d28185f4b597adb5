"""The on-disk index: immutable segments listed by a manifest, published one generation at a time.

A segment (``seg-*``) holds a batch of articles: its SQLite store (qa.store), its keyword
postings at three levels (each sentence, the sentence with its neighbours, its article), its
sentence tokens and, with a model, its vectors in a FAISS index. A segment is written once and
never changed, the way Lucene and Elasticsearch keep theirs; it describes itself in
``segment.json``. An add writes new segments; a changed or removed article is masked out of
the segment that holds it (``deleted.npy``, the one file of a segment that belongs to a
generation); a merge policy folds small segments together at the end of a build.

Layout: ``index/CURRENT`` names the live generation ``index/gen-*``: its ``manifest.json`` and
one folder per segment, whose files are hard links to the same files in the generation before,
so a generation costs nothing but its new segments. Publishing is one atomic rename of CURRENT;
a build that dies midway leaves the previous generation usable.

One writer at a time: a build holds an OS lock on ``index/LOCK`` from reading the corpus to
publishing. ``index/PREVIOUS`` names the generation that was live before, kept because readers
may still have it open; every other generation (a killed build's) is deleted by the next build.

faiss is imported here only; bm25s only as the reference the keyword postings are tested against.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import faiss
import numpy as np
from tqdm.auto import tqdm

from qa import selftrain, store
from qa import articles
from qa.articles import Article, Problem, text_key
from qa.embed import Encoder, ModelUnavailable
from qa.sentences import Sentence, Splitter
from qa.tokens import VERSION as TOKENS_VERSION, tokenize

log = logging.getLogger(__name__)

FORMAT = "newsqa-index v2"
SEGMENT_FORMAT = "newsqa-segment v1"
BM25_PARAMS = {"k1": 0.3, "b": 0.9}  # tuned on half of SQuAD v1.1 dev: bench/reqa_squad.py, docs/benchmarks.md
KEYWORD_LEVELS = ("sentence", "window", "article")
# A build writes a segment every FLUSH_SENTENCES sentences: its memory grows with a batch, not the corpus.
FLUSH_SENTENCES = 100_000
# Merge policy (merge_plan): MERGE_FACTOR segments of one size tier are merged into one of at most
# MAX_MERGED sentences, repeatedly; a segment with more than EXPUNGE_SHARE of its articles deleted
# is rewritten without them. A million sentences end up in four segments; a merge of MAX_MERGED
# sentences peaks under 1 GB.
MERGE_FACTOR = 4
MAX_MERGED = 500_000
EXPUNGE_SHARE = 0.3
# Vectors: exact inner product below EXACT_BELOW sentences per segment (20k × 384 d: under 2 ms),
# HNSW over 8-bit scalar-quantized vectors above (a quarter of the bytes; recall in bench/scale.py).
EXACT_BELOW = 20_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
LOCK_FILE = "LOCK"
DELETED_FILE = "deleted.npy"
# How long a second writer waits for the first: a self-trained build of 50k sentences takes minutes.
LOCK_TIMEOUT = 1800.0


class IndexUnusable(RuntimeError):
    """The index is missing, damaged or built with other settings; the message says how to fix it."""


class IndexBusy(IndexUnusable):
    """Another build of the same index did not finish within the wait allowed."""


@dataclass(frozen=True)
class Manifest:
    format: str
    model: str | None  # None: keyword-only
    dim: int | None
    mode: str  # "hybrid" or "keyword-only"
    mode_reason: str  # why keyword-only, and how to get the model
    splitter: str
    articles: int  # live ones
    sentences: int  # live ones
    corpus_fingerprint: str  # of the live articles' ids and contents, whatever segments hold them
    built_at: str
    faiss_index: str | None  # the kinds of the segments' vector indexes
    bm25: dict = field(default_factory=dict)
    model_path: str | None = None  # a self-trained model's folder inside the generation
    model_fingerprint: str | None = None  # sha256 of the model's weights: the same name may be other weights
    segments: tuple = ()  # ({name, sentences, articles, deleted}, …) in the order they were written

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IndexUnusable(f"{path} cannot be read ({e}). Rebuild: qa index CORPUS --index "
                                f"{path.parent.parent} --rebuild") from e
        if data.get("format") != FORMAT:
            raise IndexUnusable(f"{path.parent} has index format {data.get('format')!r}, this program reads "
                                f"{FORMAT!r}. Rebuild it: qa index CORPUS --index {path.parent.parent} --rebuild")
        data["segments"] = tuple(data.get("segments", ()))
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**self.__dict__, "segments": list(self.segments)}, indent=2), encoding="utf-8")


@dataclass(frozen=True)
class BuildReport:
    manifest: Manifest
    added: int
    updated: int
    removed: int
    unchanged: int
    embedded: int  # sentences embedded in this build
    problems: tuple[Problem, ...]
    duplicates: tuple[tuple[str, str], ...]
    seconds: float
    trained: dict | None = None  # what qa.selftrain.train reported, when this build trained a model
    merged: int = 0  # segments folded into others by the merge policy


def keyword_settings() -> dict:
    """What the keyword indexes are built with; an index built otherwise gets them rebuilt."""
    return {**BM25_PARAMS, "levels": list(KEYWORD_LEVELS), "tokens": TOKENS_VERSION}


# -- generations and the writer lock -------------------------------------------------------------

def generation_name(index_dir: str | Path) -> str:
    """The live generation's folder name ('' when there is none): cheap enough to check per request."""
    return _read_name(Path(index_dir) / "CURRENT")


def _read_name(path: Path) -> str:
    """The generation named in path ('' when there is none, or path holds no generation's name)."""
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (UnicodeDecodeError, IsADirectoryError):
        name = "?"
    if name and not re.fullmatch(r"gen-[\w.-]+", name, re.ASCII):
        raise IndexUnusable(f"{path} is damaged: it names no generation of the index. Rebuild the index with "
                            f"qa index CORPUS --index {path.parent} --rebuild, or write the name of one of its "
                            "gen-… folders into it")
    return name


def live_generation(index_dir: Path) -> Path | None:
    name = generation_name(index_dir)
    gen = Path(index_dir) / name
    return gen if name and (gen / "manifest.json").exists() else None


def read_manifest(index_dir: str | Path) -> Manifest:
    gen = live_generation(Path(index_dir))
    if gen is None:
        raise IndexUnusable(f"no index in {index_dir}. Build one: qa index CORPUS --index {index_dir}")
    return Manifest.read(gen / "manifest.json")


@contextmanager
def writer_lock(index_dir: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Be the only writer of index_dir while inside; wait up to timeout seconds for another one.

    An flock on index_dir/LOCK: shared by processes and by threads (each call opens the file anew),
    and released by the kernel when its holder dies, so a killed build never blocks the next.
    Raises IndexBusy when the other writer holds on longer than timeout.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            log.warning("waiting for another build of %s to finish (up to %.0f s)…", index_dir, timeout)
            deadline = time.monotonic() + timeout
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise IndexBusy(f"another build of {index_dir} was still running after {timeout:.0f} s; "
                                    "nothing was changed: try again when it has finished")
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


# -- keyword postings ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Postings:
    """One keyword level of a segment, term by term (CSC): for term t, the documents
    indices[indptr[t]:indptr[t+1]] and BM25's term-frequency part of their score (Lucene's
    variant, as bm25s computes it) in tfc. The idf part is applied at query time from the
    document frequencies of every segment together, so scores compare across segments."""
    tfc: np.ndarray  # uint8: the tf part (0..1) in 255ths
    indices: np.ndarray  # int32
    indptr: np.ndarray  # int64, one per term + 1
    docs: int

    def df(self, term: int) -> int:
        return int(self.indptr[term + 1] - self.indptr[term])

    def of(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, tf part in 255ths, uint8) of term."""
        a, b = self.indptr[term], self.indptr[term + 1]
        return self.indices[a:b], self.tfc[a:b]


def bm25_postings(doc: np.ndarray, term: np.ndarray, docs: int, terms: int, k1: float, b: float) -> Postings:
    """Postings of the bag of (doc, term) occurrences: tf per (doc, term), Lucene BM25's
    tf / (tf + k1 (1 - b + b dl / avgdl)) with dl the document's token count."""
    if len(doc) == 0:
        return Postings(np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(terms + 1, np.int64), docs)
    dl = np.bincount(doc, minlength=docs).astype(np.float32)
    avgdl = max(float(dl.mean()), 1e-9)
    keys, tf = np.unique(term.astype(np.int64) * docs + doc, return_counts=True)  # sorted by term, then doc
    t, d = keys // docs, (keys % docs).astype(np.int32)
    tf = tf.astype(np.float32)
    tfc = tf / (tf + k1 * (1 - b + b * dl[d] / avgdl))
    indptr = np.zeros(terms + 1, np.int64)
    np.cumsum(np.bincount(t, minlength=terms), out=indptr[1:])
    # a byte each: 255 steps over 0..1 move a score by under 0.2% (ReQA unchanged, docs/benchmarks.md)
    return Postings(np.clip(np.rint(tfc * 255), 1, 255).astype(np.uint8), d, indptr, docs)


def idf(df: np.ndarray | float, docs: int) -> np.ndarray:
    """Lucene's idf, as bm25s computes it: log(1 + (N - df + 0.5) / (df + 0.5))."""
    return np.log1p((docs - np.asarray(df, np.float64) + 0.5) / (np.asarray(df, np.float64) + 0.5))


# -- a segment, read ---------------------------------------------------------------------------

class Segment:
    """One published segment, opened read-only: arrays memory-mapped, vectors in FAISS."""

    def __init__(self, path: Path, load_vectors: bool = True):
        self.path, self.name = path, path.name
        try:
            self.meta = json.loads((path / "segment.json").read_text(encoding="utf-8"))
            if self.meta.get("format") != SEGMENT_FORMAT:
                raise IndexUnusable(f"segment {path} has format {self.meta.get('format')!r}, not {SEGMENT_FORMAT!r}")
            self.db = store.connect(path / "store.sqlite", readonly=True)
            self.sentences = int(self.meta["sentences"])
            self.articles = int(self.meta["articles"])
            self.terms = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:self.meta["terms"]]
            self.vocab = {t: i for i, t in enumerate(self.terms)}
            self.levels = {lv: Postings(_mapped(path / f"{lv}.tfc.npy"), _mapped(path / f"{lv}.indices.npy"),
                                        np.load(path / f"{lv}.indptr.npy"),
                                        self.articles if lv == "article" else self.sentences)
                           for lv in KEYWORD_LEVELS}
            self.token_ptr = np.load(path / "tokens_ptr.npy").astype(np.int64)
            self.token_ids = np.load(path / "tokens.npy")  # in memory: a search reads a few hundred rows
            self.article_first = np.load(path / "article_first.npy").astype(np.int64)
            self.article_length = np.diff(self.article_first)  # sentences per article
            self.sentence_article = np.repeat(np.arange(self.articles, dtype=np.int32), self.article_length)
            self.article_date = np.load(path / "article_date.npy")
            self.sources = list(self.meta["sources"])
            self.article_source = np.load(path / "article_source.npy")
            deleted = path / DELETED_FILE
            self.deleted_articles = np.load(deleted) if deleted.exists() else np.zeros(0, np.int64)
            self.faiss = None
            if load_vectors and (path / "dense.faiss").exists():
                self.faiss = faiss.read_index(str(path / "dense.faiss"))
                if hasattr(self.faiss, "hnsw"):
                    self.faiss.hnsw.efSearch = HNSW_EF_SEARCH
        except (OSError, ValueError, KeyError, store.StoreError) as e:
            raise IndexUnusable(f"segment {path} cannot be read ({e}); rebuild the index with --rebuild") from e
        self.live_article = np.ones(self.articles, dtype=bool)
        self.live_article[self.deleted_articles] = False
        self.live = self.live_article[self.sentence_article] if len(self.deleted_articles) else None

    def tokens(self, row: int) -> np.ndarray:
        return self.token_ids[self.token_ptr[row]:self.token_ptr[row + 1]]

    def dense_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, rows) of the k nearest live sentences allowed (a bool mask over rows, or None)."""
        mask = self.live if allowed is None else (allowed if self.live is None else allowed & self.live)
        k = min(k, self.sentences)
        if mask is None:
            scores, rows = self.faiss.search(query, k)
        else:
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH) \
                if hasattr(self.faiss, "hnsw") else faiss.SearchParameters(sel=selector)
            scores, rows = self.faiss.search(query, k, params=params)
        keep = rows[0] >= 0
        return scores[0][keep], rows[0][keep]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, self.faiss.d), np.float32)
        return self.faiss.reconstruct_batch(np.asarray(rows, dtype=np.int64))

    def close(self) -> None:
        self.db.close()


def _mapped(path: Path) -> np.ndarray:
    """An array file memory-mapped, as a plain ndarray (slices of a np.memmap cost microseconds each)."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


def open_segments(gen: Path, manifest: Manifest, load_vectors: bool = True) -> list[Segment]:
    return [Segment(gen / s["name"], load_vectors) for s in manifest.segments]


# -- writing a segment ---------------------------------------------------------------------------

def _date_number(published: str) -> int:
    """YYYYMMDD of an ISO date (0 when there is none, or it is no day: '2020-13-45' kept as given), for
    date filters as integer comparisons."""
    d = published[:10]
    try:
        return int(datetime.date.fromisoformat(d).strftime("%Y%m%d")) if len(d) == 10 else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class Prepared:
    """An article made ready for a segment: its sentences, their keyword tokens and its title's."""
    sentences: list[Sentence]
    tokens: list[list[str]]  # per sentence
    title_tokens: list[str]


def prepare(article: Article, splitter: Splitter) -> Prepared:
    """Split an article into sentences and tokenize them and its title (the work a build spreads
    over Ray actors; the segment writer only numbers the tokens)."""
    sentences = splitter.split(article.id, article.text)
    return Prepared(sentences, [tokenize(s.text) for s in sentences], tokenize(article.title))


@dataclass(frozen=True)
class Columns:
    """Articles prepared together, as arrays, in article order: per article, its sentences' token counts
    and then its title's (lengths), and those tokens in that order (ids: into terms, the distinct tokens
    in order of first use); its sentence count, their paragraphs and character spans; their vectors."""
    terms: list[str]
    ids: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    paragraphs: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    vectors: np.ndarray | None  # (sentences, d) float32, or None when not embedded


@dataclass(frozen=True)
class Deferred:
    """An article prepared among others whose arrays are taken together (qa.distributed: a row of a Ray
    block): its sentence count and text_key now, its arrays when the writer asks source.columns(rows)."""
    source: Any  # has columns(rows: list[int]) -> Columns
    row: int
    sentences: int
    key: str  # its text_key


# How a build reads and prepares its articles when not in this process: called with (reader, files,
# splitter, encoder or None, known), it yields (article, its file, Prepared, Deferred or None) in the
# order reader.articles(files) would, admitting each with reader.admit and reporting problems with
# reader.report; embedded when given an encoder. known (known_keys): the articles the index holds
# already, which come with None, not prepared: the build keeps them where they are.
# qa.distributed.RayIngest is one.
Ingest = Callable[["articles.CorpusReader", list, Splitter, "Encoder | None", np.ndarray],
                  Iterator[tuple[Article, "articles.CorpusFile", "Prepared | Deferred | None"]]]


def known_key(article_id: str, content_hash: str) -> bytes:
    """An article version in 16 bytes (of a sha1 of its id and content hash): known_keys of the
    articles a build keeps are sent to where articles are prepared (16 MB a million)."""
    return sha1(f"{article_id}\0{content_hash}".encode()).digest()[:16]


def known_keys(pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """The sorted known_key of (article id, content hash) pairs; is_known tells membership."""
    return np.unique(np.array([known_key(a, h) for a, h in pairs], dtype="S16"))


def is_known(keys: np.ndarray, article_id: str, content_hash: str) -> bool:
    k = np.array(known_key(article_id, content_hash), dtype="S16")  # numpy reads both back without trailing NULs
    at = int(np.searchsorted(keys, k))
    return at < len(keys) and keys[at] == k[()]


class SegmentWriter:
    """Collects articles, then writes them as one segment folder: store, postings, tokens, vectors."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True)
        self.db = store.connect(folder / "store.sqlite")
        self.vocab: dict[str, int] = {}
        self.file_ids: dict[str, int] = {}  # origin -> its row in the store's files
        # in chunks (an article's, or a merged segment's): token ids in self.vocab, tokens per sentence,
        # the article of each sentence; the same for titles, per article
        self.tokens: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.sentence_article: list[np.ndarray] = []
        self.titles: list[np.ndarray] = []
        self.title_lengths: list[np.ndarray] = []
        self.dates: list[np.ndarray] = []
        self.sources: dict[str, int] = {}
        self.article_source: list[np.ndarray] = []
        self.texts: list[str] = []  # sentences to embed, when the segment gets vectors from an encoder
        self.vectors: list[np.ndarray] = []  # vectors carried over (a merge) or deferred, in sentence order
        self.fingerprint = 0
        self.n_sentences = self.n_articles = 0
        self.pending: list[tuple[Article, str, Deferred]] = []  # deferred articles of one source, not yet taken
        self.pending_sentences = 0
        self.pending_embedded = False  # whether they come with vectors

    @property
    def sentences(self) -> int:
        """Sentences added so far, deferred ones included."""
        return self.n_sentences + self.pending_sentences

    def _file(self, origin: str) -> int:
        if origin not in self.file_ids:
            self.file_ids[origin] = store.file_id(self.db, origin)
        return self.file_ids[origin]

    def _ids(self, terms: list[str]) -> np.ndarray:
        v = self.vocab
        return np.fromiter((v.setdefault(t, len(v)) for t in terms), dtype=np.int32, count=len(terms))

    def add(self, article: Article, origin: str, prepared: Prepared | Deferred, keep_texts: bool) -> None:
        """Add a new article, split and tokenized; with keep_texts, its sentences are embedded when the
        segment is finished, unless it is Deferred, which comes with its vectors. Deferred articles are
        taken a source at a time, in the order added."""
        if self.pending and (not isinstance(prepared, Deferred) or prepared.source is not self.pending[0][2].source):
            self._take_pending()
        if isinstance(prepared, Deferred):
            self.pending_embedded = keep_texts
            self.pending.append((article, origin, prepared))
            self.pending_sentences += prepared.sentences
            return
        sentences, row = prepared.sentences, self.n_articles
        store.insert_article(self.db, row, self.n_sentences, article, self._file(origin), text_key(article.text),
                             sentences)
        self.tokens.append(self._ids([t for sentence in prepared.tokens for t in sentence]))  # numbered at once
        self.lengths.append(np.fromiter(map(len, prepared.tokens), dtype=np.int64, count=len(sentences)))
        self.sentence_article.append(np.full(len(sentences), row, dtype=np.int32))
        self._articles([self._ids(prepared.title_tokens)], [article.source], [_date_number(article.published)])
        self.fingerprint = (self.fingerprint + article_fingerprint(article.id, article.content_hash)) % FINGERPRINT_MOD
        self.n_sentences += len(sentences)
        if keep_texts:
            self.texts += [s.text for s in sentences]

    def _take_pending(self) -> None:
        """Write the deferred articles: their arrays asked of their source at once, numbered and stored
        as add would have, one by one."""
        arts = [a for a, _, _ in self.pending]
        cols = self.pending[0][2].source.columns([d.row for _, _, d in self.pending])
        if self.pending_embedded and cols.vectors is None:
            raise ValueError("deferred articles for a segment with vectors come without theirs")
        rows = np.arange(self.n_articles, self.n_articles + len(arts))
        store.insert_articles(self.db, rows.tolist(), self.n_sentences, arts,
                              [self._file(o) for _, o, _ in self.pending], [d.key for _, _, d in self.pending],
                              cols.counts, cols.paragraphs, cols.starts, cols.ends)
        v = self.vocab
        ids = np.fromiter((v.setdefault(t, len(v)) for t in cols.terms), dtype=np.int32,
                          count=len(cols.terms))[cols.ids]
        title_at = np.cumsum(cols.counts + 1) - 1  # each article's last length is its title's
        is_title = np.zeros(len(cols.lengths), dtype=bool)
        is_title[title_at] = True
        token_of_title = np.repeat(is_title, cols.lengths)
        self.tokens.append(ids[~token_of_title])
        self.lengths.append(cols.lengths[~is_title].astype(np.int64))
        self.sentence_article.append(np.repeat(rows.astype(np.int32), cols.counts))
        titles = np.split(ids[token_of_title], np.cumsum(cols.lengths[is_title])[:-1])
        self._articles(titles, [a.source for a in arts], [_date_number(a.published) for a in arts])
        for a in arts:
            self.fingerprint += article_fingerprint(a.id, a.content_hash)
        self.fingerprint %= FINGERPRINT_MOD
        self.n_sentences += int(cols.counts.sum())
        if cols.vectors is not None:
            self.vectors.append(cols.vectors)
        self.pending, self.pending_sentences = [], 0

    def _articles(self, titles: list[np.ndarray], sources: list[str], dates) -> None:
        """titles: each article's title as token ids."""
        self.titles += titles
        self.title_lengths.append(np.fromiter(map(len, titles), dtype=np.int64, count=len(titles)))
        self.dates.append(np.asarray(dates, dtype=np.int32))
        self.article_source.append(np.fromiter((self.sources.setdefault(x, len(self.sources)) for x in sources),
                                               dtype=np.int32, count=len(sources)))
        self.n_articles += len(titles)

    def merge(self, seg: Segment, vectors: bool) -> None:
        """Add every live article of seg (a merge): stored rows copied by SQLite, tokens and vectors
        carried over as arrays; only the titles are tokenized again."""
        arts = np.flatnonzero(seg.live_article)
        counts = seg.article_length[arts]
        new_first = self.n_sentences + np.cumsum(counts) - counts
        store.copy_articles(self.db, seg.path / "store.sqlite", list(zip(
            arts.tolist(), range(self.n_articles, self.n_articles + len(arts)), seg.article_first[arts].tolist(),
            new_first.tolist(), counts.tolist())))
        columns = store.article_columns(seg.db)
        live = seg.live if seg.live is not None else np.ones(seg.sentences, dtype=bool)
        lengths = np.diff(seg.token_ptr)
        remap = np.fromiter((self.vocab.setdefault(t, len(self.vocab)) for t in seg.terms), dtype=np.int32,
                            count=len(seg.terms))
        self.tokens.append(remap[seg.token_ids[np.repeat(live, lengths)].astype(np.int64)])
        self.lengths.append(lengths[live])
        self.sentence_article.append(np.repeat(np.arange(self.n_articles, self.n_articles + len(arts), dtype=np.int32),
                                               counts))
        self._articles([self._ids(tokenize(columns[a][1])) for a in arts],
                       [seg.sources[c] for c in seg.article_source[arts]], seg.article_date[arts])
        for a in arts:
            self.fingerprint += article_fingerprint(columns[a][0], columns[a][2])
        self.fingerprint %= FINGERPRINT_MOD
        self.n_sentences += int(counts.sum())
        if vectors:
            self.vectors.append(seg.vectors(np.flatnonzero(live)))

    def finish(self, encoder: Encoder | None, files: Iterable[store.FileRecord] = (), progress: bool = False) -> dict:
        """Write everything; returns the segment's entry for the manifest."""
        if self.pending:
            self._take_pending()
        store.insert_files(self.db, files)
        self.db.commit()
        self.db.close()
        f, n, n_art = self.folder, self.n_sentences, self.n_articles
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        ptr = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        ids = np.concatenate(self.tokens) if self.tokens else np.zeros(0, np.int32)
        sa = np.concatenate(self.sentence_article) if self.sentence_article else np.zeros(0, np.int32)
        self.tokens = []
        np.save(f / "tokens_ptr.npy", ptr.astype(np.uint32 if ptr[-1] < 2**32 else np.int64))
        np.save(f / "tokens.npy", ids.astype(np.uint16 if len(self.vocab) <= 2**16 else np.int32))
        np.save(f / "article_first.npy", np.searchsorted(sa, np.arange(n_art + 1)).astype(np.uint32))
        np.save(f / "article_date.npy", np.concatenate(self.dates) if self.dates else np.zeros(0, np.int32))
        np.save(f / "article_source.npy", np.concatenate(self.article_source) if self.article_source
                else np.zeros(0, np.int32))
        (f / "vocab.txt").write_text("\n".join(self.vocab), encoding="utf-8")
        doc = np.repeat(np.arange(n, dtype=np.int32), lengths)
        terms = len(self.vocab)
        k1, b = BM25_PARAMS["k1"], BM25_PARAMS["b"]
        same_prev = np.zeros(n, bool)
        same_prev[1:] = sa[1:] == sa[:-1]
        # window: the sentence's own tokens, its previous sentence's and its next one's, in one article
        from_prev = same_prev[np.minimum(doc + 1, n - 1)] & (doc + 1 < n)  # token of doc feeds doc + 1
        from_next = same_prev[doc]  # token of doc feeds doc - 1
        title_lengths = np.concatenate(self.title_lengths) if self.title_lengths else np.zeros(0, np.int64)
        title_ids = np.concatenate(self.titles) if self.titles else np.zeros(0, np.int32)
        levels = {
            "sentence": (doc, ids, n),
            "window": (np.concatenate([doc, doc[from_prev] + 1, doc[from_next] - 1]),
                       np.concatenate([ids, ids[from_prev], ids[from_next]]), n),
            "article": (np.concatenate([sa[doc], np.repeat(np.arange(n_art, dtype=np.int32), title_lengths)]),
                        np.concatenate([ids, title_ids]), n_art),
        }
        for level, (d, t, docs) in levels.items():
            p = bm25_postings(d, t, docs, terms, k1, b)
            np.save(f / f"{level}.tfc.npy", p.tfc)
            np.save(f / f"{level}.indices.npy", p.indices)
            np.save(f / f"{level}.indptr.npy", p.indptr)
        del levels, doc
        kind = None
        if encoder is not None or self.vectors:
            if self.vectors:
                vectors = np.concatenate(self.vectors).astype(np.float32)
            else:
                vectors = encoder.encode_documents(self.texts, progress=progress) if self.texts \
                    else np.zeros((0, encoder.info.dim), np.float32)
            index, kind = dense_index(np.ascontiguousarray(vectors, dtype=np.float32))
            faiss.write_index(index, str(f / "dense.faiss"))
        meta = {"format": SEGMENT_FORMAT, "sentences": n, "articles": n_art, "terms": terms,
                "sources": list(self.sources), "faiss": kind, "bm25": keyword_settings(),
                "fingerprint": f"{self.fingerprint:040x}", "written_at": _now()}
        (f / "segment.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return {"name": f.name, "sentences": n, "articles": n_art, "deleted": 0, "faiss": kind,
                "fingerprint": meta["fingerprint"]}


FINGERPRINT_MOD = 1 << 160


def article_fingerprint(article_id: str, content_hash: str) -> int:
    """An article's share of the corpus fingerprint: the fingerprint is the sum of its articles' shares
    (mod 2^160), so an add or a delete updates it without reading the other articles."""
    return int(sha1(f"{article_id}\x1f{content_hash}".encode()).hexdigest(), 16)


def dense_index(vectors: np.ndarray) -> tuple["faiss.Index", str]:
    """The segment's one copy of its vectors: exact below EXACT_BELOW sentences, else HNSW over
    8-bit scalar-quantized vectors. Vectors are unit length, so inner product is cosine."""
    n, d = vectors.shape
    if n < EXACT_BELOW:
        index, kind = faiss.IndexFlatIP(d), "IndexFlatIP"
    else:
        index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.train(vectors)
        kind = "IndexHNSWSQ8"
    index.add(vectors)
    return index, kind


# -- building ------------------------------------------------------------------------------------

def _origin(rel: str, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    return str((base / rel).resolve()) if rel else ""


def _in_scope(origin: str, root: Path) -> bool:
    r = str(root.resolve())
    return origin == r or origin.startswith(r.rstrip(os.sep) + os.sep)


def check_compatible(manifest: Manifest, model: str | None, splitter: Splitter, index_dir: Path,
                     fingerprint: str = "") -> None:
    fix = "rebuild it with --rebuild, or index into another folder with --index DIR"
    if manifest.model == model and fingerprint and manifest.model_fingerprint not in (None, "", fingerprint):
        raise IndexUnusable(f"the index in {index_dir} was built with other weights under the name {model} "
                            f"(sha256 {manifest.model_fingerprint[:12]}…, now {fingerprint[:12]}…): {fix}")
    if manifest.splitter != splitter.name:
        raise IndexUnusable(f"the index in {index_dir} was split with {manifest.splitter!r}, "
                            f"now the splitter is {splitter.name!r}: {fix}")
    if manifest.model != model:
        raise IndexUnusable(f"the index in {index_dir} was built with model {manifest.model or 'none (keyword-only)'}, "
                            f"now it is {model or 'none (keyword-only)'}: {fix}, or pass --model {manifest.model or 'none'}")


def build_index(corpus: str | Path, index_dir: str | Path, splitter: Splitter, encoder: Encoder | None,
                mode_reason: str = "", rebuild: bool = False, progress: bool = True,
                staged: Iterable[Path] = (), self_train: selftrain.Training | None = None,
                retrain: bool = False, lock_timeout: float = LOCK_TIMEOUT,
                caller_holds_lock: bool = False, ingest: Ingest | None = None) -> BuildReport:
    """Bring the index in index_dir up to date with corpus (a folder or a file).

    Files under corpus whose size and time (or else content) are unchanged are not read again;
    articles of new and changed files that are new or changed go into new segments, ones whose
    file is gone are removed; articles indexed from elsewhere are kept. An article whose text
    repeats one already indexed is listed in duplicates and not indexed again. staged: files that
    count as being directly in the corpus folder under their names (an upload not yet moved there).

    With no encoder and self_train given, the dense half comes from a model trained on the indexed
    sentences themselves (qa.selftrain) and kept inside the index: the index's own model is reused
    (retrain: a new one is trained), and an index with fewer than self_train.min_sentences
    sentences stays keyword-only, mode_reason saying so.

    The whole build holds writer_lock(index_dir) (waiting up to lock_timeout seconds, then raising
    IndexBusy), unless caller_holds_lock says the caller took it already.

    ingest: where articles are read, split, tokenized and embedded (qa.distributed.RayIngest: on a
    Ray cluster); None: here. This process plans, writes the segments and publishes either way, so
    the index is the same.
    """
    with nullcontext() if caller_holds_lock else writer_lock(index_dir, lock_timeout):
        _remove_orphans(Path(index_dir))
        return _Build(Path(corpus), Path(index_dir), splitter, encoder, mode_reason, rebuild, progress,
                      list(staged), self_train, retrain, ingest).run()


class _Build:
    """One build: plan (what changed), write segments, train and merge if needed, publish."""

    def __init__(self, root: Path, index_dir: Path, splitter: Splitter, encoder: Encoder | None, mode_reason: str,
                 rebuild: bool, progress: bool, staged: list[Path], self_train: selftrain.Training | None,
                 retrain: bool, ingest: Ingest | None = None):
        self.root, self.index_dir, self.splitter, self.encoder = root, index_dir, splitter, encoder
        self.mode_reason, self.rebuild, self.progress = mode_reason, rebuild, progress
        self.staged, self.self_train, self.retrain, self.ingest = staged, self_train, retrain, ingest
        self.t0 = time.perf_counter()
        self.problems: list[Problem] = []
        self.duplicates: list[tuple[str, str]] = []
        self.written: list[dict] = []  # new segments' manifest entries
        self.embedded = 0

    def run(self) -> BuildReport:
        if not self.root.exists():
            raise FileNotFoundError(f"corpus path {str(self.root)!r} does not exist; pass a folder of articles "
                                    "or one file")
        self.old_gen = None if self.rebuild else live_generation(self.index_dir)
        try:
            self.old = Manifest.read(self.old_gen / "manifest.json") if self.old_gen else None
        except IndexUnusable as e:  # an older format: the corpus is here, so build it anew
            log.warning("%s; indexing everything anew", e)
            self.rebuild, self.old_gen, self.old = True, None, None
        if self.old is not None and self.old.bm25 != keyword_settings():
            log.warning("the keyword indexes in %s were built with other settings (%s): indexing everything anew",
                        self.index_dir, self.old.bm25)
            self.rebuild, self.old_gen, self.old = True, None, None
        self._decide_model()
        self.segments = open_segments(self.old_gen, self.old, load_vectors=self.encoder is not None
                                      and not self.train_model) if self.old else []
        try:
            return self._run()
        except BaseException:  # a killed or failed build leaves nothing behind but the index it found
            if hasattr(self, "new_gen"):
                shutil.rmtree(self.new_gen, ignore_errors=True)
            raise
        finally:
            for s in self.segments:
                s.close()

    def _decide_model(self) -> None:
        old, st = self.old, self.self_train
        self.model = self.encoder.info.name if self.encoder else None
        self.reuse_model = self.train_model = False
        if self.encoder is None and st is not None:
            old_model = old.model if old else None
            if old_model == selftrain.SELF_TRAINED and not self.retrain:
                try:
                    self.encoder = selftrain.load(self.old_gen / (old.model_path or selftrain.MODEL_DIR))
                    self.model, self.reuse_model = self.encoder.info.name, True
                except ModelUnavailable as e:
                    log.warning("training a new model: %s", e)
                    self.train_model = True
            else:  # a pretrained model's index is only retrained when asked: check_compatible says how
                self.train_model = old_model in (None, selftrain.SELF_TRAINED) or self.retrain
        # The index's own model, handed in already loaded (an upload into a self-trained index): copied along.
        self.carry_model = (self.encoder is not None and st is None and old is not None
                            and old.model_path is not None and self.model == old.model)
        if old is not None:
            # A model trained in this build embeds every sentence anew, whatever embedded them before.
            check_compatible(old, old.model if self.train_model else self.model, self.splitter, self.index_dir,
                             "" if self.train_model or self.encoder is None else self.encoder.info.fingerprint)

    # the plan: which files to read, which stored articles go

    def _run(self) -> BuildReport:
        # an index kept inside its corpus folder is not read as articles
        readers = [articles.CorpusReader(self.root, exclude=(self.index_dir,))] + \
            [articles.CorpusReader(p) for p in self.staged]
        for r in readers:
            self.problems += r.problems
        files = [(f, _origin(f.rel, self.root)) for f in readers[0].files] + \
                [(f, str((self.root / f.rel).resolve())) for r in readers[1:] for f in r.files]
        records = store.latest(store.file_records(seg.db) for seg in self.segments)
        live_origins = {o for seg in self.segments for o in store.origins(seg.db)}
        present = {o for _, o in files}
        changed = []
        for f, o in files:
            try:
                if not self._unchanged(f, records.get(o)):
                    f.sha1()  # read now: a file that cannot be read is left as it was indexed
                    changed.append((f, o))
            except OSError as e:  # unreadable, or gone since the folder was listed
                self.problems.append(Problem(f.rel, f"skipped: cannot read file ({e.strerror or e}); what was "
                                                    "indexed from it is kept"))
        gone = sorted(o for o in live_origins if o not in present and _in_scope(o, self.root))
        self.deleted: dict[int, set[int]] = {i: set() for i in range(len(self.segments))}
        removed = self._delete_from(gone)
        old_articles = self._live_articles_from([o for _, o in changed])
        new_records = [store.FileRecord(o, f.size, f.mtime_ns, f.sha1()) for f, o in changed]
        added, updated, seen = self._write_new(readers, changed, old_articles, new_records)
        gone_from_changed = [a for i, a in old_articles.items() if i not in seen]
        for a in gone_from_changed:
            self.deleted[a[0]].add(a[1].row)
        removed += len(gone_from_changed)
        removed += sum(1 for a in self.repeated_ids if a in old_articles)
        must_train = self.train_model and self.old is not None and (
            self.retrain or self.old.sentences >= self.self_train.min_sentences)
        nothing = not self.written and not any(self.deleted.values()) and not must_train and self.old is not None
        if nothing:
            return BuildReport(self.old, 0, 0, 0, self.old.articles, 0, tuple(self.problems),
                               tuple(self.duplicates), time.perf_counter() - self.t0)
        manifest, trained, merged = self._finish()
        return BuildReport(manifest, added=added, updated=updated, removed=removed,
                           unchanged=manifest.articles - added - updated, embedded=self.embedded,
                           problems=tuple(self.problems), duplicates=tuple(self.duplicates),
                           seconds=time.perf_counter() - self.t0, trained=trained, merged=merged)

    def _unchanged(self, f, record: store.FileRecord | None) -> bool:
        if record is None or self.rebuild:
            return False
        if (record.size, record.mtime_ns) == (f.size, f.mtime_ns):
            return True
        return record.size == f.size and record.sha1 == f.sha1()

    def _delete_from(self, origins: list[str]) -> int:
        n = 0
        for (i, a) in self._live_articles_from(origins).values():
            self.deleted[i].add(a.row)
            n += 1
        return n

    def _live_articles_from(self, origins: list[str]) -> dict[str, tuple[int, store.StoredArticle]]:
        """id -> (segment number, stored article) of the live articles that came from origins."""
        out = {}
        for i, seg in enumerate(self.segments):
            for a in store.articles_from(seg.db, origins):
                if seg.live_article[a.row]:
                    out[a.id] = (i, a)
        return out

    def _find_live(self, query, values) -> list[tuple[int, tuple]]:
        out = []
        for i, seg in enumerate(self.segments):
            for r in query(seg.db, values):
                row = r[0] if isinstance(r, tuple) else r.row
                if seg.live_article[row] and row not in self.deleted[i]:
                    out.append((i, r))
        return out

    # writing new segments

    def _write_new(self, readers, changed, old_articles, records) -> tuple[int, int, set[str]]:
        """Stream the changed files' articles into new segments; returns (added, updated, ids seen)."""
        by_reader: dict[int, list] = {}
        origin_of = dict(changed)
        for f, o in changed:
            for i, r in enumerate(readers):
                if f in r.files:
                    by_reader.setdefault(i, []).append(f)
        keys_here: dict[str, str] = {}
        seen: set[str] = set()
        indexed_from: set[str] = set()  # files an article is indexed from, written now or kept where it is
        self.repeated_ids: set[str] = set()
        added = updated = 0
        writer = None
        keep_texts = self.encoder is not None and not self.train_model
        # the changed files' articles the index holds as they are: not prepared again (through Ray)
        known = None if self.ingest is None else known_keys((aid, a.content_hash) for aid, (_, a) in old_articles.items())
        bar = tqdm(desc="indexing", unit=" articles", disable=not self.progress, dynamic_ncols=True)
        sentences_done = 0
        for i, files in sorted(by_reader.items()):
            for article, f, prepared in self._stream(readers[i], files, keep_texts, known):
                origin = origin_of[f]
                seen.add(article.id)
                old = old_articles.get(article.id)
                if old is not None and old[1].content_hash == article.content_hash:
                    indexed_from.add(origin)
                    continue  # unchanged, where it is
                if old is None:
                    clash = self._find_live(store.articles_by_id, [article.id])
                    if clash and (not clash[0][1].origin or os.path.exists(clash[0][1].origin)):
                        self.problems.append(Problem(f.rel, f"skipped {article.id!r}: the id is already used by an "
                                                            "article of another file; give one of them another id"))
                        continue
                    if clash:  # its file is gone (the corpus folder moved or was renamed): this one replaces it
                        old = clash[0]
                key = prepared.key if isinstance(prepared, Deferred) else text_key(article.text)
                # an article of a file being read again is no repeat: that file decides what it holds now
                repeat = keys_here.get(key) or next(
                    (r[1] for _, r in self._find_live(store.articles_by_text_key, [key])
                     if r[1] != article.id and r[1] not in old_articles), None)
                if repeat is not None:
                    log.info("%s: skipped, same text as %r already in the index", article.id, repeat)
                    self.duplicates.append((article.id, repeat))
                    self.repeated_ids.add(article.id)
                    if old is not None:
                        self.deleted[old[0]].add(old[1].row)
                    continue
                if old is not None:
                    self.deleted[old[0]].add(old[1].row)
                    updated += 1
                else:
                    added += 1
                keys_here[key] = article.id
                indexed_from.add(origin)
                if writer is None:
                    writer = SegmentWriter(self._new_folder())
                before = writer.sentences
                writer.add(article, origin, prepared or prepare(article, self.splitter), keep_texts)
                sentences_done += writer.sentences - before
                bar.update(1)
                bar.set_postfix_str(f"{sentences_done:,} sentences", refresh=False)
                if writer.sentences >= FLUSH_SENTENCES:
                    self._flush(writer, [])
                    writer = None
                    self._checkpoint()
        bar.close()
        if writer is not None:  # the changed files' records go with the last segment: now they are indexed
            # but not those of files none of whose articles is indexed (each was a repeat of another
            # file's, an id clash, or unreadable): they are read again next time, when the article they
            # repeat may be gone
            self._flush(writer, [r for r in records if r.origin in indexed_from])
        return added, updated, seen

    def _stream(self, reader: "articles.CorpusReader", files, embed: bool, known: np.ndarray | None) -> Iterator[
            tuple[Article, object, Prepared | Deferred | None]]:
        """(article, its file, Prepared or None: prepared only when written) in stream order."""
        if self.ingest is not None:
            before = len(reader.problems)
            yield from self.ingest(reader, files, self.splitter, self.encoder if embed else None, known)
            self.problems += reader.problems[before:]
        else:
            for f in files:
                before = len(reader.problems)
                for a in reader.articles([f]):
                    yield a, f, None
                self.problems += reader.problems[before:]
        self.duplicates += reader.duplicates

    def _new_folder(self) -> Path:
        if not hasattr(self, "new_gen"):
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self.new_gen = self.index_dir / _fresh("gen")
            self.new_gen.mkdir()
        return self.new_gen / _fresh("seg")

    def _flush(self, writer: SegmentWriter, records) -> None:
        encoder = None if self.train_model else self.encoder
        entry = writer.finish(encoder, records, self.progress)
        if encoder is not None:
            self.embedded += entry["sentences"]
        self.written.append(entry)

    # training, merging, publishing

    def _checkpoint(self) -> None:
        """Publish what is written so far, so that a long build that is killed keeps it and the next
        one goes on from there (a file is read again, but its articles already indexed are not written
        or embedded again). The live segments with the deletions that written articles made, then the
        new segments, unmerged. Not in a rebuild (the index it replaces stays whole until the end), nor
        when the build trains a model or carries the index's own (the model comes with the last
        generation)."""
        if self.rebuild or self.train_model or self.reuse_model or self.carry_model:
            return
        gen = self.index_dir / _fresh("gen")
        gen.mkdir()
        manifest = self._manifest(self._carry_segments(gen), self.mode_reason)
        manifest.write(gen / "manifest.json")
        _sync_tree(gen)
        _publish(self.index_dir, gen, keep=(self.old_gen, self.new_gen))
        log.info("published %s articles, %s sentences so far (%s)", f"{manifest.articles:,}",
                 f"{manifest.sentences:,}", gen.name)

    def _finish(self) -> tuple[Manifest, dict | None, int]:
        self._new_folder()
        entries = self._carry_segments(self.new_gen)
        live = sum(e["sentences"] - e["deleted_sentences"] for e in entries)
        if live == 0:
            raise IndexUnusable(f"nothing to index: no readable article in {self.root}"
                                + "".join(f"\n  {p.path}: {p.message}" for p in self.problems))
        trained, why = None, self.mode_reason.removeprefix("keyword-only: ")
        mode_reason = self.mode_reason
        st = self.self_train
        if self.train_model and live >= st.min_sentences:
            self.encoder, trained = self._train(entries)
            self.model = self.encoder.info.name
            mode_reason = selftrain.describe(trained) + (f"; a pretrained model would do better: {why}" if why else "")
            entries = self._embed_all(entries)
        elif self.train_model:
            mode_reason = "; ".join(x for x in (
                f"keyword-only: {live:,} sentences are too few to train a model on this corpus "
                f"(it takes {st.min_sentences:,})", why) if x)
            self.model = None
            entries = self._drop_vectors(entries)
        elif self.reuse_model or self.carry_model:
            _link_tree(self.old_gen / (self.old.model_path or selftrain.MODEL_DIR),
                       self.new_gen / selftrain.MODEL_DIR)
            mode_reason = self.old.mode_reason
        if self.model == selftrain.SELF_TRAINED and not (self.new_gen / selftrain.MODEL_DIR).is_dir():
            raise IndexUnusable(f"the self-trained model's files are not in {self.old_gen or self.index_dir}, "
                                f"so this index would lose its model; train it again: qa index CORPUS --index "
                                f"{self.index_dir} --retrain")
        entries, merged = self._merge(entries)
        manifest = self._manifest(entries, mode_reason)
        manifest.write(self.new_gen / "manifest.json")
        _sync_tree(self.new_gen)
        _publish(self.index_dir, self.new_gen)
        return manifest, trained, merged

    def _carry_segments(self, gen: Path) -> list[dict]:
        """The old segments, linked into generation gen with this build's deletions so far, then the
        new ones (linked there too when gen is not the build's own); a segment left with nothing live
        is dropped. (A changed file that gave no new article has its record in no segment: it is read
        again next time, and found unchanged.)"""
        entries = []
        for i, seg in enumerate(self.segments):
            entry = dict(self.old.segments[i])
            gone = set(int(r) for r in seg.deleted_articles) | self.deleted[i]
            if len(gone) >= seg.articles:
                continue
            target = gen / seg.name
            _link_tree(seg.path, target, skip=(DELETED_FILE,))
            if gone:
                rows = np.array(sorted(gone), dtype=np.int64)
                np.save(target / DELETED_FILE, rows)
                counts = seg.article_length
                entry["deleted_sentences"] = int(counts[rows].sum())
            else:
                entry["deleted_sentences"] = 0
            entry["deleted"] = len(gone)
            entry["fingerprint_live"] = self._live_fingerprint(seg, gone)
            entries.append(entry)
        for e in self.written:
            if gen != self.new_gen:
                _link_tree(self.new_gen / e["name"], gen / e["name"])
            entries.append({**e, "deleted_sentences": 0, "fingerprint_live": e["fingerprint"]})
        return entries

    def _live_fingerprint(self, seg: Segment, gone: set[int]) -> str:
        total = int(seg.meta["fingerprint"], 16)
        if gone:
            rows = sorted(gone)
            for r in rows:
                aid, _, _, _, h = store.article_fields(seg.db, r)
                total -= article_fingerprint(aid, h)
        return f"{total % FINGERPRINT_MOD:040x}"

    def _train(self, entries: list[dict]) -> tuple[Encoder, dict]:
        """Train a model on the live articles of every segment (in index order), save it in the
        generation and load it from there."""
        docs: list[selftrain.Document] = []
        for e in entries:
            seg = Segment(self.new_gen / e["name"], load_vectors=False)
            current, title, sents = None, "", []
            for row, aid, t, _, _, text in store.sentences(seg.db):
                if not seg.live_article[seg.sentence_article[row]]:
                    continue
                if aid != current:
                    if current is not None:
                        docs.append(selftrain.Document(title, tuple(sents)))
                    current, title, sents = aid, t, []
                sents.append(text)
            if current is not None:
                docs.append(selftrain.Document(title, tuple(sents)))
            seg.close()
        model, info = selftrain.train(docs, self.self_train, self.progress)
        selftrain.save(model, info, self.new_gen / selftrain.MODEL_DIR)
        return selftrain.load(self.new_gen / selftrain.MODEL_DIR), info

    def _embed_all(self, entries: list[dict]) -> list[dict]:
        """Give every segment vectors from the model just trained: each becomes a new segment sharing
        all its files but the vectors."""
        out = []
        for e in entries:
            old = self.new_gen / e["name"]
            seg = Segment(old, load_vectors=False)
            texts = [t for *_, t in store.sentences(seg.db)]
            seg.close()
            name = _fresh("seg")
            new = self.new_gen / name
            _link_tree(old, new, skip=("dense.faiss", "segment.json"))
            vectors = self.encoder.encode_documents(texts, progress=self.progress) if texts \
                else np.zeros((0, self.encoder.info.dim), np.float32)
            index, kind = dense_index(np.ascontiguousarray(vectors, dtype=np.float32))
            faiss.write_index(index, str(new / "dense.faiss"))
            meta = json.loads((old / "segment.json").read_text(encoding="utf-8"))
            meta["faiss"] = kind
            (new / "segment.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            shutil.rmtree(old)
            self.embedded += len(texts)
            out.append({**e, "name": name, "faiss": kind})
        return out

    def _drop_vectors(self, entries: list[dict]) -> list[dict]:
        for e in entries:
            (self.new_gen / e["name"] / "dense.faiss").unlink(missing_ok=True)
            e["faiss"] = None
        return entries

    def _merge(self, entries: list[dict]) -> tuple[list[dict], int]:
        merged = 0
        while plan := merge_plan(entries):
            group = plan[0]
            names = {e["name"] for e in group}
            folder = self.new_gen / _fresh("seg")
            log.info("merging %d segments (%s sentences) into %s", len(group),
                     f"{sum(e['sentences'] for e in group):,}", folder.name)
            writer = SegmentWriter(folder)
            found = []
            with_vectors = self.model is not None
            for e in sorted(group, key=entries.index):
                seg = Segment(self.new_gen / e["name"], load_vectors=with_vectors)
                found.append(store.file_records(seg.db))
                writer.merge(seg, with_vectors)
                seg.close()
            entry = writer.finish(None, store.latest(found).values())
            entry.update(deleted_sentences=0, fingerprint_live=entry["fingerprint"])
            at = min(i for i, e in enumerate(entries) if e["name"] in names)
            rest = [e for e in entries if e["name"] not in names]
            entries = rest[:at] + [entry] + rest[at:]
            for name in names:
                shutil.rmtree(self.new_gen / name)
            merged += len(group)
        return entries, merged

    def _manifest(self, entries: list[dict], mode_reason: str) -> Manifest:
        encoder = self.encoder if self.model is not None else None
        kinds = sorted({e["faiss"] for e in entries if e.get("faiss")})
        fp = sum(int(e["fingerprint_live"], 16) for e in entries) % FINGERPRINT_MOD
        segs = tuple({"name": e["name"], "sentences": e["sentences"], "articles": e["articles"],
                      "deleted": e["deleted"], "deleted_sentences": e["deleted_sentences"], "faiss": e.get("faiss"),
                      "fingerprint": e["fingerprint"], "fingerprint_live": e["fingerprint_live"]} for e in entries)
        return Manifest(
            format=FORMAT, model=self.model, dim=encoder.info.dim if encoder else None,
            mode="hybrid" if encoder else "keyword-only",
            mode_reason=mode_reason if encoder is None or self.model == selftrain.SELF_TRAINED else "",
            splitter=self.splitter.name,
            articles=sum(e["articles"] - e["deleted"] for e in entries),
            sentences=sum(e["sentences"] - e["deleted_sentences"] for e in entries),
            corpus_fingerprint=f"{fp:040x}", built_at=_now(),
            faiss_index=", ".join(kinds) if kinds else None, bm25=keyword_settings(),
            model_path=selftrain.MODEL_DIR if self.model == selftrain.SELF_TRAINED else None,
            model_fingerprint=(encoder.info.fingerprint or None) if encoder else None, segments=segs)


def merge_plan(entries: list[dict]) -> list[list[dict]]:
    """Groups of segments to merge: a segment with over EXPUNGE_SHARE of its articles deleted is
    rewritten; MERGE_FACTOR segments of one size tier (sizes within a factor of MERGE_FACTOR) are
    merged, the smallest tier first, unless that makes more than MAX_MERGED sentences (as in
    Lucene's log merge policy: a small add never merges into the big segments)."""
    def live(e):
        return e["sentences"] - e["deleted_sentences"]
    plan, used = [], set()
    for e in entries:
        if e["articles"] and e["deleted"] > EXPUNGE_SHARE * e["articles"]:
            plan.append([e])
            used.add(e["name"])
    tiers: dict[int, list[dict]] = {}
    for e in entries:
        if e["name"] not in used:
            tiers.setdefault(int(math.log(max(live(e), 1), MERGE_FACTOR)), []).append(e)
    for _, tier in sorted(tiers.items()):
        group = sorted(tier, key=live)[:MERGE_FACTOR]
        if len(group) == MERGE_FACTOR and sum(live(e) for e in group) <= MAX_MERGED:
            plan.append(group)
            break
    return plan


def _fresh(kind: str) -> str:
    """A new generation's or segment's folder name: kind, the time in ns, this process."""
    return f"{kind}-{time.time_ns():020d}-{os.getpid()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """dst becomes a folder of hard links to src's files (an immutable segment or model costs no copy)."""
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name in skip:
            continue
        if path.is_dir():
            _link_tree(path, dst / path.name)
        else:
            try:
                os.link(path, dst / path.name)
            except OSError:  # another file system, or links not allowed: a copy does the same
                shutil.copy2(path, dst / path.name)


def _publish(index_dir: Path, gen: Path, keep: tuple[Path | None, ...] = ()) -> None:
    """Point CURRENT at gen atomically and PREVIOUS at the generation it replaces, then delete the rest
    but keep (a build's own folders, when it publishes midway).

    The replaced generation stays: a reader that opened it a moment ago may still be reading it.
    Call with the writer lock held.
    """
    try:
        live = generation_name(index_dir)
    except IndexUnusable:  # a damaged CURRENT (a rebuild replaces it): nothing to keep as PREVIOUS
        live = ""
    if live and live != gen.name:
        _write_atomically(index_dir / "PREVIOUS", live)
    _write_atomically(index_dir / "CURRENT", gen.name)
    _remove_orphans(index_dir, keep)


def _remove_orphans(index_dir: Path, also: tuple[Path | None, ...] = ()) -> None:
    """Delete every generation but CURRENT's, PREVIOUS's and also's (killed builds leave them) and dead
    writers' temporary files. Call with the writer lock held: then no other build is in progress."""
    try:
        keep = {generation_name(index_dir), _read_name(index_dir / "PREVIOUS")} | {p.name for p in also if p}
    except IndexUnusable as e:  # CURRENT or PREVIOUS damaged: which generation is live is unknown, keep them all
        log.warning("%s", e)
        return
    for path in index_dir.glob("gen-*"):
        if path.name not in keep:
            log.info("removing %s: not the live or the previous generation", path)
            shutil.rmtree(path, ignore_errors=True)
    for tmp in index_dir.glob("*.tmp-*"):
        tmp.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # never another writer's
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sync_tree(folder: Path) -> None:
    """Flush every file under folder to disk, so that CURRENT never names a generation that a power
    cut could leave half-written (the stores are written with synchronous=OFF)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
