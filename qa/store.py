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


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        db = sqlite3.connect(path)
        db.executescript(SCHEMA)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def article_hashes(db: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """id -> (content_hash, origin) for every stored article."""
    return {i: (h, o) for i, h, o in db.execute("SELECT id, content_hash, origin FROM articles")}


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
