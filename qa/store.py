"""SQLite store of one index segment: its articles, its sentences and the corpus files they came from.

Every SQL statement of the project is in this module. A segment's store is written once, by the
build that creates the segment, and never changed afterwards (deletions are a mask kept beside
it, see qa.index), so readers open it immutable. Sentence text is not stored twice: a sentence
is its article's text between `start` and `end`, cut out by SQLite when it is read.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from qa.articles import Article
from qa.sentences import Sentence

SCHEMA_VERSION = 3  # PRAGMA user_version; a store of another version is refused on open
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL UNIQUE,  -- a corpus file, an absolute path
    -- the file as indexed, when this segment holds its version of that time (NULL: see another
    -- segment); of several segments' records of one file, the latest indexed_at (ns) is current
    size INTEGER, mtime_ns INTEGER, sha1 BLOB, indexed_at INTEGER
);
CREATE TABLE IF NOT EXISTS articles (
    row INTEGER PRIMARY KEY,  -- 0-based, in the order the segment holds them
    id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, source TEXT NOT NULL, published TEXT NOT NULL,
    url TEXT NOT NULL, text TEXT NOT NULL,
    file INTEGER NOT NULL REFERENCES files(id),  -- where it came from
    content_hash BLOB NOT NULL,  -- sha1 of title/source/published/url/text: changed or not
    text_key BLOB NOT NULL  -- sha1 of the whitespace-collapsed text: the same article from elsewhere
);
CREATE INDEX IF NOT EXISTS articles_file ON articles(file);
CREATE INDEX IF NOT EXISTS articles_text_key ON articles(text_key);
CREATE TABLE IF NOT EXISTS sentences (
    row INTEGER PRIMARY KEY,  -- 0-based: the row of the segment's keyword and vector indexes
    article INTEGER NOT NULL,  -- articles.row; an article's sentences are consecutive rows, in order
    idx INTEGER NOT NULL, paragraph INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL
);
"""

# A segment's store is written by one build, in a folder no reader sees until it is published,
# and never changed after: see index/README.md, "SQLite settings".
WRITER_PRAGMAS = (
    "PRAGMA journal_mode = MEMORY",  # no journal file: a killed build's segment is deleted, not recovered
    "PRAGMA synchronous = OFF",  # qa.index flushes the whole generation to disk once, before publishing it
    "PRAGMA busy_timeout = 10000",  # ms; nothing else opens the file, so only a stray tool could make it wait
)

READER_MMAP = 1 << 30  # bytes of a published store mapped at most (address space, not memory)

_PASSAGE = ("SELECT s.row, a.id, a.title, a.source, a.published, a.url, s.idx, s.paragraph, s.start, s.end, "
            "substr(a.text, s.start + 1, s.end - s.start), s.article FROM sentences s "
            "JOIN articles a ON a.row = s.article")


# What SQLite raises on a store it cannot read or write (damaged, a full disk): for callers that
# report it without importing sqlite3.
DatabaseError = sqlite3.Error


class StoreError(RuntimeError):
    """A store this program cannot read (another schema version, or not a store at all)."""


@dataclass(frozen=True)
class FileRecord:
    origin: str
    size: int
    mtime_ns: int
    sha1: str
    indexed_at: int = 0  # ns: of two records of one file, the later one is current


@dataclass(frozen=True)
class StoredArticle:
    """What a build needs to know about an indexed article: where it is and whether it changed."""
    row: int
    id: str
    origin: str
    content_hash: str


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a segment's store: readonly for a published one (immutable: no locks, no journal
    lookups, so a reader keeps working even after the segment is deleted under it), else to write."""
    if readonly:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                             check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            db.close()
            raise StoreError(f"{path} is not a readable store ({e})") from e
        if version != SCHEMA_VERSION:
            db.close()
            raise StoreError(f"{path} has store schema version {version}, this program reads {SCHEMA_VERSION}")
        # Read through a memory map, not read() calls into SQLite's page cache: passages come out
        # about 30% faster (docs/benchmarks.md); the file never changes, and an unlinked one stays mapped.
        db.execute(f"PRAGMA mmap_size = {READER_MMAP}")
    else:
        db = sqlite3.connect(path, check_same_thread=False)
        for pragma in WRITER_PRAGMAS:
            db.execute(pragma)
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


# -- writing a segment -------------------------------------------------------------------------

def file_id(db: sqlite3.Connection, origin: str) -> int:
    """The row of origin in the store's files, added when new."""
    db.execute("INSERT OR IGNORE INTO files (origin) VALUES (?)", (origin,))
    return db.execute("SELECT id FROM files WHERE origin = ?", (origin,)).fetchone()[0]


def insert_article(db: sqlite3.Connection, row: int, first_sentence: int, article: Article, file: int,
                   text_key: str, sentences: list[Sentence]) -> None:
    """Store article as row `row`, its sentences as rows first_sentence, first_sentence + 1, …; file: its
    file's row (file_id)."""
    _insert(db, [_article_row(row, article, file, text_key)],
            [(first_sentence + i, row, s.index, s.paragraph, s.start, s.end) for i, s in enumerate(sentences)])


def insert_articles(db: sqlite3.Connection, rows: list[int], first_sentence: int, articles: list[Article],
                    files: list[int], text_keys: list[str], counts: np.ndarray, paragraphs: np.ndarray,
                    starts: np.ndarray, ends: np.ndarray) -> None:
    """Store articles as rows `rows`, their sentences (counts[i] each: paragraphs, character spans, all
    articles' in one array) as rows first_sentence, first_sentence + 1, …"""
    n = int(counts.sum())
    article = np.repeat(np.asarray(rows, dtype=np.int64), counts)
    idx = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    _insert(db, map(_article_row, rows, articles, files, text_keys),
            zip(range(first_sentence, first_sentence + n), article.tolist(), idx.tolist(), paragraphs.tolist(),
                starts.tolist(), ends.tolist()))


def _article_row(row: int, a: Article, file: int, text_key: str) -> tuple:
    return row, a.id, a.title, a.source, a.published, a.url, a.text, file, bytes.fromhex(a.content_hash), \
        bytes.fromhex(text_key)


def _insert(db: sqlite3.Connection, articles: Iterable[tuple], sentences: Iterable[tuple]) -> None:
    db.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", articles)
    db.executemany("INSERT INTO sentences VALUES (?, ?, ?, ?, ?, ?)", sentences)


def insert_files(db: sqlite3.Connection, records: Iterable[FileRecord]) -> None:
    """Record that this segment holds these files' latest versions."""
    db.executemany("INSERT INTO files (origin, size, mtime_ns, sha1, indexed_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(origin) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
                   "sha1 = excluded.sha1, indexed_at = excluded.indexed_at",
                   [(r.origin, r.size, r.mtime_ns, bytes.fromhex(r.sha1), r.indexed_at or time.time_ns())
                    for r in records])


def copy_articles(db: sqlite3.Connection, src: Path, moves: list[tuple[int, int, int, int, int]]) -> None:
    """Copy articles with their sentences from the store at src into db (a merge), in one statement
    each: moves are (old row, new row, old first sentence, new first sentence, sentence count)."""
    db.commit()
    db.execute("ATTACH DATABASE ? AS src", (str(src),))
    try:
        db.execute("CREATE TEMP TABLE moves (old INTEGER PRIMARY KEY, new INTEGER, old_first INTEGER, "
                   "new_first INTEGER, n INTEGER)")
        db.executemany("INSERT INTO temp.moves VALUES (?, ?, ?, ?, ?)", moves)
        db.execute("INSERT INTO main.files (origin) SELECT origin FROM src.files WHERE true "
                   "ON CONFLICT(origin) DO NOTHING")
        db.execute("INSERT INTO main.articles SELECT m.new, a.id, a.title, a.source, a.published, a.url, a.text, "
                   "(SELECT f.id FROM main.files f WHERE f.origin = sf.origin), a.content_hash, a.text_key "
                   "FROM temp.moves m JOIN src.articles a ON a.row = m.old JOIN src.files sf ON sf.id = a.file "
                   "ORDER BY m.new")
        db.execute("INSERT INTO main.sentences SELECT m.new_first + s.row - m.old_first, m.new, s.idx, s.paragraph, "
                   "s.start, s.end FROM temp.moves m JOIN src.sentences s ON s.row >= m.old_first "
                   "AND s.row < m.old_first + m.n ORDER BY 1")
        db.execute("DROP TABLE temp.moves")
        db.commit()
    finally:
        db.execute("DETACH DATABASE src")


def article_columns(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(id, title, content_hash) of every article, by row."""
    return db.execute("SELECT id, title, lower(hex(content_hash)) FROM articles ORDER BY row").fetchall()


# -- reading -----------------------------------------------------------------------------------

def file_records(db: sqlite3.Connection) -> dict[str, FileRecord]:
    """The files whose latest indexed version this segment holds."""
    return {o: FileRecord(o, s, m, h.hex(), t) for o, s, m, h, t in db.execute(
        "SELECT origin, size, mtime_ns, sha1, indexed_at FROM files WHERE sha1 IS NOT NULL")}


def latest(records: Iterable[dict[str, FileRecord]]) -> dict[str, FileRecord]:
    """Each file's current record among several segments' records."""
    out: dict[str, FileRecord] = {}
    for recs in records:
        for o, r in recs.items():
            if o not in out or r.indexed_at > out[o].indexed_at:
                out[o] = r
    return out


_STORED = "SELECT a.row, a.id, f.origin, lower(hex(a.content_hash)) FROM articles a JOIN files f ON f.id = a.file"


def articles_from(db: sqlite3.Connection, origins: Iterable[str]) -> list[StoredArticle]:
    """The stored articles that came from any of origins (files)."""
    out = []
    for origin in origins:
        out += [StoredArticle(*r) for r in db.execute(_STORED + " WHERE f.origin = ?", (origin,))]
    return out


def origins(db: sqlite3.Connection) -> list[str]:
    """The files the segment's articles came from."""
    return [o for (o,) in db.execute("SELECT origin FROM files WHERE id IN (SELECT DISTINCT file FROM articles)")]


def articles_by_id(db: sqlite3.Connection, ids: Iterable[str]) -> list[StoredArticle]:
    return _chunked(db, _STORED + " WHERE a.id IN ({})", list(ids), StoredArticle)


def articles_by_text_key(db: sqlite3.Connection, keys: Iterable[str]) -> list[tuple[int, str]]:
    """(row, id) of the stored articles whose text_key is among keys."""
    return _chunked(db, "SELECT row, id FROM articles WHERE text_key IN ({})",
                    [bytes.fromhex(k) for k in keys], tuple)


def article_ids(db: sqlite3.Connection) -> list[str]:
    return [i for (i,) in db.execute("SELECT id FROM articles ORDER BY row")]


def read_article(db: sqlite3.Connection, article_id: str) -> tuple[int, Article] | None:
    """(row, article) or None."""
    row = db.execute("SELECT a.row, a.id, a.title, a.source, a.published, a.url, a.text, f.origin, "
                     "lower(hex(a.content_hash)) FROM articles a JOIN files f ON f.id = a.file WHERE a.id = ?",
                     (article_id,)).fetchone()
    return (row[0], Article(*row[1:])) if row else None


def passages(db: sqlite3.Connection, rows: Iterable[int]) -> dict[int, tuple]:
    """row -> (row, article id, title, source, published, url, idx, paragraph, start, end, text, article row),
    one query for a batch of sentence rows."""
    return {r[0]: r for r in _chunked(db, _PASSAGE + " WHERE s.row IN ({})", sorted(set(rows)), tuple)}


def sentence_row(db: sqlite3.Connection, article_id: str, text: str) -> int | None:
    """The row of the sentence of article_id that reads exactly text."""
    row = db.execute("SELECT s.row FROM sentences s JOIN articles a ON a.row = s.article WHERE a.id = ? "
                     "AND substr(a.text, s.start + 1, s.end - s.start) = ?", (article_id, text)).fetchone()
    return row[0] if row else None


def sentences(db: sqlite3.Connection) -> Iterator[tuple[int, str, str, int, int, str]]:
    """(row, article id, article title, start, end, text) of every sentence, by row."""
    yield from db.execute("SELECT s.row, a.id, a.title, s.start, s.end, substr(a.text, s.start + 1, s.end - s.start) "
                          "FROM sentences s JOIN articles a ON a.row = s.article ORDER BY s.row")


def article_fields(db: sqlite3.Connection, row: int) -> tuple[str, str, str, str, str]:
    """(id, title, source, published, content_hash) of article row."""
    return db.execute("SELECT id, title, source, published, lower(hex(content_hash)) FROM articles WHERE row = ?",
                      (row,)).fetchone()


def _chunked(db: sqlite3.Connection, sql: str, values: list, make) -> list:
    out = []
    for i in range(0, len(values), 900):  # under SQLite's 999 host parameters
        part = values[i:i + 900]
        out += [make(*r) if make is not tuple else tuple(r)
                for r in db.execute(sql.format(",".join("?" * len(part))), part)]
    return out
