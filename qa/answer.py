"""Answers made only of retrieved sentences, each cited, or a plain "the articles don't say"."""
from __future__ import annotations

from dataclasses import dataclass

from qa.retrieve import MAX_QUESTION_CHARS, Hit, Passage, Retriever

ABSTAIN_TEXT = "The articles don't say."


@dataclass(frozen=True)
class Policy:
    """When to answer and with how many sentences.

    min_support: share of the question's keyword weight the best sentence (with its
    neighbours) must cover; min_dense: cosine that is enough on its own in hybrid mode.
    Calibrated on eval/ questions; see docs/evaluation.md for how to recalibrate.
    """
    min_support: float = 0.5
    min_dense: float = 0.6
    max_sentences: int = 3
    relative_score: float = 0.75  # later sentences must score this share of the best one


@dataclass(frozen=True)
class Citation:
    n: int
    passage: Passage
    score: float


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # sentences from the sources with [n] markers, or ABSTAIN_TEXT
    citations: tuple[Citation, ...]
    abstained: bool
    hits: tuple[Hit, ...]  # everything retrieved; when abstained, the nearest passages (not an answer)
    notes: tuple[str, ...] = ()  # e.g. the question was cut to MAX_QUESTION_CHARS


def supported(hit: Hit, policy: Policy) -> bool:
    return hit.support >= policy.min_support or (hit.dense is not None and hit.dense >= policy.min_dense)


def answer(retriever: Retriever, question: str, k: int = 5, policy: Policy = Policy(), **filters) -> Answer:
    """Retrieve for question and compose a cited answer, or abstain when the evidence is weak."""
    question = " ".join(question.split())
    notes = ()
    if len(question) > MAX_QUESTION_CHARS:
        notes = (f"The question was {len(question):,} characters long; only the first "
                 f"{MAX_QUESTION_CHARS:,} were used.",)
    if not question:
        return Answer(question, "Ask a question about the articles.", (), True, (), notes)
    hits = tuple(retriever.search(question, k=k, **filters))
    chosen = [h for h in hits[:policy.max_sentences]
              if supported(h, policy) and h.score >= policy.relative_score * hits[0].score]
    if not hits or not supported(hits[0], policy):
        return Answer(question, ABSTAIN_TEXT, (), True, hits, notes)
    parts, citations = [], []
    for hit in chosen:
        markers = ""
        for passage in hit.sources:
            citations.append(Citation(len(citations) + 1, passage, hit.score))
            markers += f"[{len(citations)}]"
        parts.append(f"{hit.text} {markers}")
    return Answer(question, " ".join(parts), tuple(citations), False, hits, notes)
