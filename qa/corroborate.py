"""Corroboration: which articles report each answer sentence, and the details (numbers, names) they differ on."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

from qa.answer import READER, Answer, Citation, Policy, supported
from qa.retrieve import Hit, Passage
from qa.tokens import tokenize

_TOKEN = re.compile(r"\d[\d,.]*\d|\d|[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
MONTHS = {m[:3]: m for m in "january february march april may june july august september october november "
                            "december".split()} | {"sept": "september"}
# Capitalised for grammar, not because they name something.
_FUNCTION_WORDS = frozenset(
    "a an the this that these those it its he she they we i you his her their our there here and but or nor so "
    "yet in on at of by for from with to into onto over under after before since during until while when where "
    "as if also among between according mr mrs ms dr".split())


@dataclass(frozen=True)
class Reading:
    """How some of the articles give a detail."""
    words: tuple[str, ...]  # as written, e.g. ("Ariha",)
    citations: tuple[int, ...]  # the [n] of the passages that give it so


@dataclass(frozen=True)
class Difference:
    """The articles report the same fact but disagree on a detail: every reading is shown, none hidden."""
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class Agreement:
    """One answer sentence and every article that reports it."""
    text: str  # the sentence as the first article words it
    citations: tuple[Citation, ...]  # one per reporting article, best first
    matching_articles: int  # articles with a passage that would answer the question (the "of N" in "2 of N")
    differences: tuple[Difference, ...]

    @property
    def reported_by(self) -> int:
        return len({c.passage.article_id for c in self.citations})


@dataclass(frozen=True)
class _Token:
    key: str  # normalised: stemmed lowercase, numbers as digits, months spelled out
    word: str  # as written
    detail: bool  # a number or a capitalised name


def _tokens(text: str) -> list[_Token]:
    out = []
    for i, m in enumerate(_TOKEN.finditer(text)):
        word, low = m[0], m[0].lower()
        if word[0].isdigit():
            out.append(_Token(word.replace(",", "").rstrip("."), word, True))
        elif low in NUMBER_WORDS:
            out.append(_Token(NUMBER_WORDS[low], word, True))
        else:
            low = MONTHS.get(low, low)
            stem = tokenize(low)
            # The first word's capital says nothing; function words are capitalised for grammar.
            out.append(_Token(stem[0] if stem else low, word,
                              i > 0 and word[0].isupper() and low not in _FUNCTION_WORDS))
    return out


def details(text: str) -> dict[str, str]:
    """The checkable details of a sentence, normalised key -> as written: numbers (in words or digits)
    and capitalised names ("eleven" and "11" -> "11", "Feb" -> "februari", "Russians" -> "russian")."""
    return {t.key: t.word for t in _tokens(text) if t.detail}


def _conflicts(a: list[_Token], b: list[_Token]) -> list[tuple[tuple[_Token, ...], tuple[_Token, ...]]]:
    """Details in the same place of two wordings that each lacks from the other ("Ariha" / "Jericho").

    The wordings are aligned word by word; a detail only one of them adds is not a conflict.
    """
    a_keys, b_keys = {t.key for t in a if t.detail}, {t.key for t in b if t.detail}
    out = []
    ops = difflib.SequenceMatcher(None, [t.key for t in a], [t.key for t in b], autojunk=False).get_opcodes()
    for op, i1, i2, j1, j2 in ops:
        if op != "replace":
            continue
        only_a = tuple(t for t in a[i1:i2] if t.detail and t.key not in b_keys)
        only_b = tuple(t for t in b[j1:j2] if t.detail and t.key not in a_keys)
        if only_a and only_b:
            out.append((only_a, only_b))
    return out


def differences(passages: Sequence[Passage], numbers: Sequence[int]) -> tuple[Difference, ...]:
    """Where passages reporting one fact differ in a detail, each passage compared with the first.

    numbers: each passage's citation number. Passages that word the detail as the first one does
    are listed with it.
    """
    if len(passages) < 2:
        return ()
    tokens = [_tokens(p.text) for p in passages]
    slots: dict[tuple[str, ...], tuple[tuple[str, ...], dict[tuple[str, ...], list]]] = {}
    for j in range(1, len(passages)):
        for only_first, only_other in _conflicts(tokens[0], tokens[j]):
            words, others = slots.setdefault(tuple(t.key for t in only_first),
                                             (tuple(t.word for t in only_first), {}))
            cites = others.setdefault(tuple(t.key for t in only_other), [tuple(t.word for t in only_other), []])[1]
            if numbers[j] not in cites:  # the same detail differs twice in one sentence ("of Africa ... West Africa")
                cites.append(numbers[j])
    out = []
    for keys, (words, others) in slots.items():
        conflicting = {n for _, ns in others.values() for n in ns}
        agreeing = tuple(n for j, n in enumerate(numbers) if j == 0 or (
            n not in conflicting and set(keys) <= {t.key for t in tokens[j] if t.detail}))
        out.append(Difference((Reading(words, agreeing),
                               *(Reading(w, tuple(ns)) for w, ns in others.values()))))
    return tuple(out)


def corroborate(ans: Answer, policy: Policy = Policy()) -> tuple[Agreement, ...]:
    """One Agreement per sentence of the answer, in answer order; () for an abstention.

    "Reported by 2 of 3": 3 articles have a retrieved passage strong enough to answer with (that the
    reader judged as answering; without a reader, supported by policy), 2 of them report this sentence.
    """
    if ans.abstained:
        return ()
    strong = _strong(ans, policy)
    matching = len({p.article_id for h in ans.hits if strong(h) for p in h.sources})
    out = []
    for hit in _cited_hits(ans):
        ids = {p.sentence_id for p in hit.sources}
        cites = tuple(c for c in ans.citations if c.passage.sentence_id in ids)
        out.append(Agreement(hit.text, cites, max(matching, len(cites)),
                             differences([c.passage for c in cites], [c.n for c in cites])))
    return tuple(out)


def also_answering(ans: Answer, policy: Policy = Policy()) -> tuple[Passage, ...]:
    """The articles that "Reported by 2 of 3" counts among those that answer but the answer does not
    cite: for each, its passage from the retrieved hits strong enough to answer, best hit first.
    Shown under the answer, so that every article counted can be read (it may say otherwise)."""
    if ans.abstained:
        return ()
    strong, seen, out = _strong(ans, policy), {c.passage.article_id for c in ans.citations}, []
    for h in ans.hits:
        if strong(h):
            for p in h.sources:
                if p.article_id not in seen:
                    seen.add(p.article_id)
                    out.append(p)
    return tuple(out)


def _strong(ans: Answer, policy: Policy):
    """Whether a hit is strong enough to answer with: the reader judged it answering, or, without a
    reader, it is supported by policy."""
    if ans.judged_by == READER:
        return lambda h: h.passage.sentence_id in ans.answering
    return lambda h: supported(h, policy)


def _cited_hits(ans: Answer) -> list[Hit]:
    cited = {c.passage.sentence_id: c.n for c in ans.citations}
    hits = [h for h in ans.hits if any(p.sentence_id in cited for p in h.sources)]
    return sorted(hits, key=lambda h: min(cited[p.sentence_id] for p in h.sources if p.sentence_id in cited))
