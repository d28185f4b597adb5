"""SQuAD dev files as articles and questions, split by title: what may be trained on, what is held out.

Every paragraph is an article. Titles at odd positions (1, 3, 5 … in file order) are held out for
reporting; a title that is held out in either file (SQuAD 2.0 dev's 35 titles all recur in v1.1 dev,
11 of them at an even position in one file and an odd one in the other) is held out everywhere, so
nothing trained or tuned on a title is ever reported on it.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

V1 = "dev-v1.1.json.gz"
V2 = "dev-v2.0.json.gz"


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    title: str
    article_id: str  # the paragraph, as written by write_articles
    answers: tuple[str, ...]  # gold answer strings; empty: unanswerable (SQuAD 2.0)
    starts: tuple[int, ...]  # character offsets of the answers in the paragraph's text as loaded

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass(frozen=True)
class Squad:
    titles: tuple[str, ...]  # file order
    paragraphs: dict[str, tuple[str, str]]  # article id -> (title, context)
    questions: tuple[Question, ...]


def read(path: Path) -> Squad:
    data = json.load(gzip.open(path, "rt", encoding="utf-8"))["data"]
    paragraphs, questions = {}, []
    for ti, article in enumerate(data):
        for pi, p in enumerate(article["paragraphs"]):
            aid = f"{ti:02d}-{pi:03d}"
            paragraphs[aid] = (article["title"], p["context"])
            lead = len(p["context"]) - len(p["context"].lstrip())  # the loader strips the text
            for q in p["qas"]:
                answers = [a for a in q["answers"] if not q.get("is_impossible")]
                questions.append(Question(q["id"], q["question"], article["title"], aid,
                                          tuple(a["text"] for a in answers),
                                          tuple(a["answer_start"] - lead for a in answers)))
    return Squad(tuple(a["title"] for a in data), paragraphs, tuple(questions))


def held_out_titles(folder: Path) -> frozenset[str]:
    """Titles at an odd position in either dev file of folder: never trained, tuned or calibrated on."""
    out = set()
    for name in (V1, V2):
        if (folder / name).exists():
            data = json.load(gzip.open(folder / name, "rt", encoding="utf-8"))["data"]
            out |= {a["title"] for a in data[1::2]}
    return frozenset(out)


def write_articles(squad: Squad, path: Path, titles: set[str] | frozenset[str] | None = None) -> Path:
    """The paragraphs (of titles, or all) as a .jsonl corpus the project's loader reads."""
    with open(path, "w", encoding="utf-8") as f:
        for aid, (title, context) in squad.paragraphs.items():
            if titles is None or title in titles:
                f.write(json.dumps({"id": aid, "title": "", "text": context}) + "\n")
    return path
