"""SQLite store of articles and sentences: the index's record of what it holds."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from qa.articles import Article
from qa.sentences import Sentence

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL, published TEXT NOT NULL,
    url TEXT NOT NULL, text TEXT NOT NULL, origin TEXT NOT NULL, content_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sentences (
    id TEXT PRIMARY KEY, article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, paragraph INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    text TEXT NOT NULL,
    pos INTEGER  -- row in vectors.npy and the keyword index; renumbered on every build
);
CREATE INDEX IF NOT EXISTS sentences_pos ON sentences(pos);
CREATE INDEX IF NOT EXISTS sentences_article ON sentences(article_id, idx);
"""


# A generation's store is written by one build, in a folder no reader sees until it is published,
# and never changed after: see index/README.md, "SQLite settings".
WRITER_PRAGMAS = (
    "PRAGMA journal_mode = MEMORY",  # no journal file: a killed build's generation is deleted, not recovered
    "PRAGMA synchronous = OFF",  # qa.index flushes the whole generation to disk once, before publishing it
    "PRAGMA busy_timeout = 10000",  # ms; nothing else opens the file, so only a stray tool could make it wait
)


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a generation's store: readonly for a published one (immutable: no locks, no journal
    lookups, so a reader keeps working even after the generation is deleted under it), else to build."""
    if readonly:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    else:
        db = sqlite3.connect(path)
        for pragma in WRITER_PRAGMAS:
            db.execute(pragma)
        db.executescript(SCHEMA)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def article_hashes(db: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """id -> (content_hash, origin) for every stored article."""
    return {i: (h, o) for i, h, o in db.execute("SELECT id, content_hash, origin FROM articles")}


def article_texts(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """(id, text) of every stored article."""
    return db.execute("SELECT id, text FROM articles").fetchall()


def delete_articles(db: sqlite3.Connection, ids: list[str]) -> None:
    db.executemany("DELETE FROM articles WHERE id = ?", [(i,) for i in ids])


def insert_article(db: sqlite3.Connection, article: Article, origin: str, sentences: list[Sentence]) -> None:
    a = article
    db.execute("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (a.id, a.title, a.source, a.published, a.url, a.text, origin, a.content_hash))
    db.executemany("INSERT INTO sentences VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                   [(s.id, s.article_id, s.index, s.paragraph, s.start, s.end, s.text) for s in sentences])


def renumber(db: sqlite3.Connection) -> list[int | None]:
    """Give every sentence a dense pos 0..n-1 (articles in insertion order, sentences in order).

    Returns, for each new pos, the sentence's previous pos (None for new sentences), so that
    stored vectors can be carried over without re-embedding.
    """
    rows = db.execute(
        "SELECT s.rowid, s.pos FROM sentences s JOIN articles a ON a.id = s.article_id "
        "ORDER BY a.rowid, s.idx").fetchall()
    db.executemany("UPDATE sentences SET pos = ? WHERE rowid = ?", [(p, rid) for p, (rid, _) in enumerate(rows)])
    return [old for _, old in rows]


def read_article(db: sqlite3.Connection, article_id: str) -> Article | None:
    row = db.execute("SELECT id, title, source, published, url, text, origin, content_hash "
                     "FROM articles WHERE id = ?", (article_id,)).fetchone()
    return Article(*row) if row else None
