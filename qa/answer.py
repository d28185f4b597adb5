"""Answers made only of retrieved sentences, each cited, or a plain "the articles don't say"."""
from __future__ import annotations

import re
from dataclasses import dataclass

from qa.retrieve import MAX_QUESTION_CHARS, Hit, Passage, Retriever

ABSTAIN_TEXT = "The articles don't say."


@dataclass(frozen=True)
class Policy:
    """When to answer and with how many sentences.

    min_support: share of the question's keyword weight the best sentence (with its
    neighbours) must cover; min_dense: cosine that is enough on its own in hybrid mode.
    min_support was calibrated on the calibration half of eval/idlib.jsonl (keyword-only, best
    balanced accuracy); relative_score is the highest that keeps that half's answer accuracy;
    min_dense is not calibrated yet (no model). Recalibrate for another corpus with
    `qa eval SET`: see docs/evaluation.md.
    """
    min_support: float = 0.51
    min_dense: float = 0.6
    max_sentences: int = 3
    relative_score: float = 0.85  # later sentences must score this share of the best one (chosen with min_support)


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


# What a question asks for, when its form says so: "how many" wants a number, "when" a date.
_ASKS_NUMBER = re.compile(r"\bhow (?:many|much)\b|\bwhat (?:number|share|percentage|proportion)\b", re.I)
_ASKS_DATE = re.compile(r"^\W*when\b|\b(?:what|which) (?:year|date|day|month)\b|\bsince when\b", re.I)
_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
                     r"dozens?|hundreds?|thousands?|millions?|billions?|half|third|quarter)\b", re.I)
_DATE = re.compile(r"\b(?:1[89]\d\d|20\d\d)\b|\b(?:jan(?:uary)?|feb(?:ruary)?|march|april|may|june|july|"
                   r"aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|monday|tuesday|"
                   r"wednesday|thursday|friday|saturday|sunday|today|yesterday|last (?:year|month|week))\b", re.I)
# "How many attacks did Amnesty document, and how many used barrel bombs?" is two questions.
_SECOND_QUESTION = re.compile(r",?\s+and\s+(?=(?:how|what|when|where|who|whom|whose|which|why)\b)", re.I)


def expected_kind(question: str) -> re.Pattern | None:
    """The pattern an answer sentence must match, for questions whose form names one."""
    if _ASKS_NUMBER.search(question):
        return _NUMBER
    if _ASKS_DATE.search(question):
        return _DATE
    return None


def gives_kind(text: str, kind: re.Pattern, question: str) -> bool:
    """True when text holds a number/date that the question does not already contain."""
    asked = question.lower()
    return any(m.group(0).lower() not in asked for m in kind.finditer(text))


def pick(question: str, hits: tuple[Hit, ...], policy: Policy) -> list[Hit]:
    """The sentences that answer question, best first, or [] when none is supported.

    A question that asks for a number or a date is answered by the best supported sentence
    that holds one, and not at all when none does.
    """
    candidates = [h for h in hits[:policy.max_sentences] if supported(h, policy)]
    kind = expected_kind(question)
    if kind is not None:
        candidates = [h for h in candidates if gives_kind(h.text, kind, question)]
    if not candidates:
        return []
    best = max(h.score for h in candidates)
    return [h for h in candidates if h.score >= policy.relative_score * best]


def answer(retriever: Retriever, question: str, k: int = 5, policy: Policy = Policy(), **filters) -> Answer:
    """Retrieve for question and compose a cited answer, or abstain when the evidence is weak.

    A question made of two ("…, and how many …?") is answered part by part.
    """
    question = " ".join(question.split())
    notes = ()
    if len(question) > MAX_QUESTION_CHARS:
        notes = (f"The question was {len(question):,} characters long; only the first "
                 f"{MAX_QUESTION_CHARS:,} were used.",)
    if not question:
        return Answer(question, "Ask a question about the articles.", (), True, (), notes)
    hits = tuple(retriever.search(question, k=k, **filters))
    parts = [p for p in _SECOND_QUESTION.split(question) if p.strip()]
    chosen: list[Hit] = []
    for part in parts:
        part_hits = hits if len(parts) == 1 else tuple(retriever.search(part, k=k, **filters))
        chosen += [h for h in pick(part, part_hits, policy)
                   if h.passage.sentence_id not in {c.passage.sentence_id for c in chosen}]
    if not chosen:
        return Answer(question, ABSTAIN_TEXT, (), True, hits, notes)
    parts, citations = [], []
    for hit in chosen:
        markers = ""
        for passage in hit.sources:
            citations.append(Citation(len(citations) + 1, passage, hit.score))
            markers += f"[{len(citations)}]"
        parts.append(f"{hit.text} {markers}")
    return Answer(question, " ".join(parts), tuple(citations), False, hits, notes)
