"""Answers made only of retrieved sentences, each cited, or a plain "the articles don't say"."""
from __future__ import annotations

import re
from dataclasses import dataclass

from qa import language
from qa.reader import Candidate, Reader
from qa.retrieve import MAX_QUESTION_CHARS, Hit, Passage, Retriever
from qa.tokens import QUESTION_FRAME, tokenize

ABSTAIN_TEXT = "The articles don't say."
READER = "reader"
RULES = "rules"


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
    depth: int = 5  # answer sentences come from this many top hits
    max_sentences: int = 3
    relative_score: float = 0.85  # later sentences must score this share of the best one (chosen with min_support)
    # With a reader (qa.reader): it judges the top `rerank` hits; a sentence answers when its score
    # reaches `threshold` (None: the reader's calibrated one) and `reader_relative` of the best score.
    rerank: int = 12
    threshold: float | None = None
    reader_relative: float = 0.9
    # Also apply the rules' check of what the question asks for (a number for "how many") to the
    # reader's sentences. Off: on 400 held-out SQuAD 2.0 questions it moved overall right by +0.8 points
    # (46.0% -> 46.8%) and answerable right by -3.3 (bench/reader_squad.py, docs/reader.md): no clear gain.
    reader_checks: bool = False


@dataclass(frozen=True)
class Citation:
    n: int
    passage: Passage
    score: float  # the reader's score (0..1) when a reader judged, else the fused retrieval score


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # sentences from the sources with [n] markers, or ABSTAIN_TEXT
    citations: tuple[Citation, ...]
    abstained: bool
    hits: tuple[Hit, ...]  # everything retrieved; when abstained, the nearest passages (not an answer)
    notes: tuple[str, ...] = ()  # e.g. the question was cut to MAX_QUESTION_CHARS
    judged_by: str = RULES  # READER, or RULES when no reader was given (the fallback)
    best: float | None = None  # the reader's best score of the question (its only part), before the threshold
    answering: frozenset[str] = frozenset()  # sentence ids of the hits the reader judged as answering


def supported(hit: Hit, policy: Policy) -> bool:
    return hit.support >= policy.min_support or (hit.dense is not None and hit.dense >= policy.min_dense)


# What a question asks for, when its form says so: "how many" wants a number, "when" a date,
# "who" or "which organization" a name (see `fit`). The words are English: qa.language.
_ASKS_NUMBER = re.compile(language.ASKS_NUMBER, re.I)
_ASKS_DATE = re.compile(language.ASKS_DATE, re.I)
_ASKS_NAME = re.compile(rf"{language.ASKS_NAME_START}|\b(?:which|what) (?:[\w-]+ ){{0,2}}{language.ENTITY_NOUNS}\b"
                        rf"|{language.NAME_OF}", re.I)
_NUMBER = re.compile(rf"\d|\b(?:{language.NUMBER_WORDS})\b", re.I)
_YEAR = re.compile(r"^(?:1[89]|20)\d\d$")
_CALENDAR = re.compile(rf"^(?:{language.MONTHS_AND_DAYS})$", re.I)  # capitalised, but not a name
# A date starts at this word (matched against the word and the next: "last year").
_DATE = re.compile(rf"(?:1[89]|20)\d\d\b|(?:{language.MONTHS_AND_DAYS}|{language.RELATIVE_DATES})\b", re.I)
_FOCUS = re.compile(language.FOCUS, re.I)
_PROPERTY = re.compile(language.PROPERTY, re.I)
_WORDS = re.compile(r"[\w’'-]+(?:[.,]\d+)*")
_SECOND_QUESTION = re.compile(language.SECOND_QUESTION, re.I)
NEAR = 3  # at most this many words from a focus noun to its number or name


@dataclass(frozen=True)
class Asks:
    """What a question's form says its answer must hold."""
    kind: str | None  # "number", "date", "name" or None
    focus: str | None  # stemmed noun the number or name must stand next to, when the sentence names it
    strict: bool  # the sentence must name the focus ("the name of the school": about that school)
    property: str | None  # stemmed word the sentence must hold ("nationality")


def asks(question: str) -> Asks:
    kind = ("number" if _ASKS_NUMBER.search(question) else "date" if _ASKS_DATE.search(question)
            else "name" if _ASKS_NAME.search(question) else None)
    focus = None
    if kind is not None and (m := _FOCUS.search(question)):
        focus = next(iter(tokenize(next(g for g in m.groups() if g))), None)
    prop = _PROPERTY.search(question)
    prop_term = next(iter(tokenize(prop.group(1))), None) if prop else None
    return Asks(kind, focus if focus not in QUESTION_FRAME else None,
                kind == "name" and "name of" in question.lower(),
                prop_term if prop_term not in QUESTION_FRAME else None)


def _values(words: list[str], kind: str, asked: set[str]) -> list[int]:
    """Positions of the words that give an answer of kind, leaving out what the question says."""
    out = []
    for i, w in enumerate(words):
        if w.lower() in asked:
            continue
        if kind == "number" and _NUMBER.search(w) and not _YEAR.match(w):
            out.append(i)
        elif kind == "date" and _DATE.match(" ".join(words[i:i + 2])):
            out.append(i)
        elif kind == "name" and i > 0 and w[:1].isupper() and not _CALENDAR.match(w):
            out.append(i)
    return out


FOCUS_WITHOUT_VALUE, REJECTED, UNTYPED, TYPED, FOCUSED = range(-1, 4)


def fit(text: str, want: Asks, question: str) -> int:
    """How well a sentence fits what the question asks: REJECTED; FOCUS_WITHOUT_VALUE, it names the
    question's focus noun with no number or name beside it ("how many hospitals": "a strike near a
    hospital"), so it does not answer; UNTYPED, nothing is asked (or a "who" question answered
    without a name: "doctors"); TYPED, it holds a number, date or name the question does not;
    FOCUSED, that value stands beside the focus noun.
    """
    words = _WORDS.findall(text)
    stems = [next(iter(tokenize(w)), "") for w in words]
    if want.property and want.property not in stems:
        return REJECTED
    if want.kind is None:
        return UNTYPED
    found = _values(words, want.kind, {w.lower() for w in _WORDS.findall(question)})
    if not found:
        return UNTYPED if want.kind == "name" and not want.strict else REJECTED
    at = [i for i, s in enumerate(stems) if want.focus and s == want.focus]
    if not at:
        return REJECTED if want.strict else TYPED
    # "11 civilians", "two hospitals": a count comes before its noun; a name on either side
    # ("Russian forces", "director Heba Morayef").
    beside = (lambda i, j: 0 < i - j <= NEAR) if want.kind == "number" else (lambda i, j: 0 < abs(i - j) <= NEAR)
    return FOCUSED if any(beside(i, j) for i in at for j in found) else FOCUS_WITHOUT_VALUE


def pick(question: str, hits: tuple[Hit, ...], policy: Policy) -> list[Hit]:
    """The sentences that answer question, best first, or [] when none is supported.

    A question that asks for a number, a date or a name (`asks`) is answered by the supported
    sentences that hold one (a "who" question may be answered without a name), and not at all when
    none does. Once a supported sentence names the asked-for noun without a value beside it, lower
    ones that never name it are not taken: the articles speak of it and do not give the number.
    """
    want = asks(question)
    candidates, focus_unanswered = [], False
    for h in hits[:policy.depth]:
        if not supported(h, policy):
            continue
        f = fit(h.text, want, question)
        focus_unanswered |= f == FOCUS_WITHOUT_VALUE
        if f == FOCUSED or (f > REJECTED and not focus_unanswered):
            candidates.append(h)
    if not candidates:
        return []
    best = max(h.score for h in candidates)
    return [h for h in candidates if h.score >= policy.relative_score * best][:policy.max_sentences]


def answering_threshold(reader: Reader, policy: Policy) -> float:
    """The reader score from which a sentence answers: the policy's, else the reader's calibrated one."""
    return reader.threshold if policy.threshold is None else policy.threshold


def read(reader: Reader, question: str, hits: list[Hit], policy: Policy) -> tuple[list[Hit], list[Hit], dict[str, float]]:
    """The reader's verdict on hits: (all of them by the reader's score, the answering ones, score by
    sentence id). A sentence answers when it reaches the threshold and `reader_relative` of the best."""
    scores = reader.scores(question, [Candidate(h.text, h.before, h.after) for h in hits])
    ranked = [hits[i] for i in sorted(range(len(hits)), key=lambda i: -scores[i])]
    by_id = {h.passage.sentence_id: float(s) for h, s in zip(hits, scores)}
    threshold = answering_threshold(reader, policy)
    best = max(by_id.values(), default=0.0)
    picked = [h for h in ranked if by_id[h.passage.sentence_id] >= max(threshold, policy.reader_relative * best)]
    if policy.reader_checks:
        want = asks(question)
        picked = [h for h in picked if fit(h.text, want, question) > REJECTED]
    return ranked, picked[:policy.max_sentences], by_id


def interleave(lists: list[list[Hit]], k: int) -> tuple[Hit, ...]:
    """The first hit of each list, then the second of each, …, without repeats, at most k: what was
    found for a question asked in parts (one list: itself)."""
    out, seen = [], set()
    for rank in range(max(map(len, lists), default=0)):
        for hits in lists:
            if rank < len(hits) and hits[rank].passage.sentence_id not in seen:
                seen.add(hits[rank].passage.sentence_id)
                out.append(hits[rank])
    return tuple(out[:k])


def answer(retriever: Retriever, question: str, k: int = 5, policy: Policy = Policy(), reader: Reader | None = None,
           context: str = "", **filters) -> Answer:
    """Retrieve for question and compose a cited answer, or abstain when the evidence is weak.

    With a reader, it judges the top policy.rerank hits and the answer quotes the ones it scores as
    answering; without one (it could not be loaded), the rules of `pick` decide (labelled RULES).

    A question made of two ("…, and how many …?") is answered part by part. Answer.hits lists the
    answer sentences first, then what else was retrieved (taking turns between the parts).

    context: the earlier questions a follow-up is read with (qa.conversation.Reading.context). Each
    part is searched and judged with it, but it is never split into parts nor answered on its own.
    """
    question, context = " ".join(question.split()), " ".join(context.split())
    notes = ()
    if len(question) > MAX_QUESTION_CHARS:
        notes = (f"The question was {len(question):,} characters long; only the first "
                 f"{MAX_QUESTION_CHARS:,} were used.",)
    if not question:
        return Answer(question, "Ask a question about the articles.", (), True, (), notes,
                      RULES if reader is None else READER)
    parts = [p for p in _SECOND_QUESTION.split(question) if p.strip()] or [question]
    chosen: list[Hit] = []
    ranked = []  # per part: its answer sentences first, then the rest as retrieved
    unanswered = []
    scores: dict[str, float] = {}
    answering: set[str] = set()
    best = None
    for part in parts:
        query = f"{part} {context}" if context else part
        if reader is None:
            found = tuple(retriever.search(query, k=k, **filters))
            picked = pick(query, found, policy)
        else:
            found, picked, judged = read(reader, query, retriever.search(query, k=max(k, policy.rerank), **filters),
                                         policy)
            scores |= judged
            answering |= {i for i, v in judged.items() if v >= answering_threshold(reader, policy)}
            best = max(judged.values(), default=0.0) if best is None else min(best, max(judged.values(), default=0.0))
        if not picked:
            unanswered.append(part)
        taken = {c.passage.sentence_id for c in chosen}
        picked = [h for h in picked if h.passage.sentence_id not in taken]  # a part may be answered already
        if len(parts) > 1:
            picked = picked[:1]  # each part asks one thing: its best sentence
        chosen += picked
        ranked.append(picked + [h for h in found if h not in picked])
    hits = interleave(ranked, k)
    judged_by = RULES if reader is None else READER
    if not chosen:
        return Answer(question, ABSTAIN_TEXT, (), True, hits, notes, judged_by, best)
    notes += tuple(f"The articles don't say: “{part.strip().rstrip('?')}?”" for part in unanswered)
    pieces, citations = [], []
    for hit in chosen:
        markers = ""
        for passage in hit.sources:
            citations.append(Citation(len(citations) + 1, passage, scores.get(hit.passage.sentence_id, hit.score)))
            markers += f"[{len(citations)}]"
        pieces.append(f"{hit.text} {markers}")
    return Answer(question, " ".join(pieces), tuple(citations), False, hits, notes, judged_by, best,
                  frozenset(answering))


class Assistant:
    """An index and a reader, loaded once: search it, ask it. Shared by every question (read-only)."""

    def __init__(self, retriever: Retriever, reader: Reader | None = None, policy: Policy = Policy(),
                 notice: str = ""):
        self.retriever, self.reader, self.policy = retriever, reader, policy
        self.notice = notice  # why answers fall back to rules, when they do

    @classmethod
    def load(cls, index_dir, reader: bool = True, policy: Policy = Policy()) -> "Assistant":
        """Open the index in index_dir and the reader (unless reader is False, or it cannot be loaded:
        then answers come from the rules, and notice says why)."""
        from qa.reader import open_reader

        loaded, why = open_reader() if reader else (None, "answers by rules: no reader asked for")
        return cls(Retriever.load(index_dir), loaded, policy, why)

    def search(self, question: str, k: int = 5, **filters) -> list[Hit]:
        return self.retriever.search(question, k=k, **filters)

    def ask(self, question: str, k: int = 5, **filters) -> Answer:
        return answer(self.retriever, question, k=k, policy=self.policy, reader=self.reader, **filters)
