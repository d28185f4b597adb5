"""Grounding metrics: evidence ranking, answer accuracy, ALCE-style citation quality, abstention, latency.

Every function is pure and works on plain values, so each metric can be checked by hand
(tests/test_metrics.py) and reused on another corpus. Definitions: docs/evaluation.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from qa.tokens import tokenize

# A sentence of an answer followed by its citation markers: "text [1][2]".
_STATEMENT = re.compile(r"\s*(.*?)\s*((?:\[\d+\])+)(?=\s|$)", re.S)
_MARKER = re.compile(r"\[(\d+)\]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-"})

LEXICAL_COVERAGE = 0.6  # share of a statement's content words a citation must contain to support it


@dataclass(frozen=True)
class Statement:
    """One sentence of an answer and the citation numbers that follow it (empty: uncited)."""
    text: str
    citations: tuple[int, ...]


@dataclass(frozen=True)
class CitationCounts:
    """ALCE citation quality summed over answers; divide to get recall and precision."""
    supported_statements: int
    statements: int
    relevant_citations: int
    citations: int

    def __add__(self, other: "CitationCounts") -> "CitationCounts":
        return CitationCounts(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values())))

    @property
    def recall(self) -> float:
        return ratio(self.supported_statements, self.statements)

    @property
    def precision(self) -> float:
        return ratio(self.relevant_citations, self.citations)


@dataclass(frozen=True)
class AbstentionScores:
    """Abstaining is the positive class; the truth is "unanswerable"."""
    precision: float  # of the abstentions, the share on unanswerable questions
    recall: float  # of the unanswerable questions, the share abstained on
    f1: float
    false_abstention_rate: float  # of the answerable questions, the share abstained on


@dataclass(frozen=True)
class Thresholds:
    """When to abstain: keyword support under min_support and dense score under min_dense."""
    min_support: float
    min_dense: float  # math.inf: the dense score never suffices on its own
    balanced_accuracy: float  # on the questions they were chosen on
    f1: float  # abstention F1 there


def ratio(num: float, den: float) -> float:
    """num / den, or NaN when there is nothing to divide (reported as "n/a", never as 0 or 1)."""
    return num / den if den else math.nan


# --- evidence ranking -----------------------------------------------------------------------

def first_complete_rank(retrieved: list[set[str]], evidence: list[set[str]]) -> int | None:
    """1-based rank at which the sentences retrieved so far contain every sentence of some
    evidence alternative, or None. retrieved: sentence ids per rank (a hit may carry several
    sources); evidence: alternatives, each a set of sentence ids that together answer."""
    seen: set[str] = set()
    for rank, ids in enumerate(retrieved, start=1):
        seen |= ids
        if any(alt and alt <= seen for alt in evidence):
            return rank
    return None


def recall_at(ranks: list[int | None], k: int) -> float:
    """Share of questions whose evidence is complete within the top k."""
    return ratio(sum(1 for r in ranks if r is not None and r <= k), len(ranks))


def mrr(ranks: list[int | None], k: int = 10) -> float:
    """Mean reciprocal rank, counting ranks beyond k as 0."""
    return ratio(sum(1 / r for r in ranks if r is not None and r <= k), len(ranks))


# --- answers ----------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Lowercase, straight quotes and dashes, single spaces: how answers are compared."""
    return " ".join(text.translate(_QUOTES).lower().split())


def contains_answer(text: str, expected: list[tuple[str, ...]]) -> bool:
    """True when every part of some alternative occurs in text as whole words ("18" does not
    match "2018"), ignoring case, quote style and spacing."""
    haystack = normalise(text)
    return any(alt and all(re.search(rf"(?<!\w){re.escape(normalise(part))}(?!\w)", haystack) for part in alt)
               for alt in expected)


def parse_statements(answer_text: str) -> list[Statement]:
    """Split 'sentence [1][2] sentence [3]' into statements; trailing text without a marker
    becomes an uncited statement."""
    out, end = [], 0
    for m in _STATEMENT.finditer(answer_text):
        if not m.group(1):
            continue
        out.append(Statement(m.group(1), tuple(int(n) for n in _MARKER.findall(m.group(2)))))
        end = m.end()
    rest = answer_text[end:].strip()
    if rest:
        out.append(Statement(rest, ()))
    return out


# --- citation support -------------------------------------------------------------------------

def lexically_supports(evidence: str, statement: str, coverage: float = LEXICAL_COVERAGE) -> bool:
    """The offline stand-in for ALCE's NLI judge: evidence supports statement when it contains
    every number of the statement and at least `coverage` of its content words (stemmed,
    stopwords removed). Blind to negation and word order; see docs/evaluation.md."""
    words = set(tokenize(statement))
    if not words:
        return False
    have = set(tokenize(evidence))
    numbers = {n.replace(",", "") for n in _NUMBER.findall(statement)}
    if not numbers <= {n.replace(",", "") for n in _NUMBER.findall(evidence)}:
        return False
    return len(words & have) / len(words) >= coverage


def supports(cited: list[str], statement: str, gold: set[str] = frozenset()) -> bool:
    """Whether the cited sentences together support statement: one of them is the statement
    itself; or the statement and a cited sentence are both in gold, the sentences that each
    answer the question on their own (two such sentences give the same answer); or their
    concatenation passes the lexical rule."""
    if not cited:
        return False
    if statement in cited or (statement in gold and any(c in gold for c in cited)):
        return True
    return lexically_supports(" ".join(cited), statement)


def citation_counts(statements: list[Statement], cited_text: dict[int, str],
                    gold: set[str] = frozenset()) -> CitationCounts:
    """ALCE citation recall and precision counts for one answer (Gao et al., 2023, section 2.2).

    A statement is supported when its citations together support it. A citation is relevant
    ("needed and supporting") when it supports the statement alone, or when the statement is
    supported by all its citations but no longer without this one. Citation numbers missing
    from cited_text count as citing nothing.
    """
    supported = relevant = n_citations = 0
    for s in statements:
        texts = [cited_text.get(n, "") for n in s.citations]
        together = supports(texts, s.text, gold)
        supported += together
        for i, text in enumerate(texts):
            n_citations += 1
            rest = texts[:i] + texts[i + 1:]
            relevant += supports([text], s.text, gold) or (together and not supports(rest, s.text, gold))
    return CitationCounts(supported, len(statements), relevant, n_citations)


def grounded_statements(statements: list[Statement], cited_text: dict[int, str]) -> int:
    """How many statements occur verbatim in one of their own cited sentences."""
    return sum(1 for s in statements if any(s.text in cited_text.get(n, "") for n in s.citations))


# --- abstention and latency -------------------------------------------------------------------

def abstention_scores(answerable: list[bool], abstained: list[bool]) -> AbstentionScores:
    """Abstention quality: a correct abstention is one on an unanswerable question."""
    pairs = list(zip(answerable, abstained))
    hit = sum(1 for a, x in pairs if x and not a)
    precision = ratio(hit, sum(1 for _, x in pairs if x))
    recall = ratio(hit, sum(1 for a, _ in pairs if not a))
    f1 = ratio(2 * hit, sum(1 for _, x in pairs if x) + sum(1 for a, _ in pairs if not a))
    return AbstentionScores(precision, recall, f1, ratio(sum(1 for a, x in pairs if a and x),
                                                         sum(1 for a, _ in pairs if a)))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default; NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def best_thresholds(answerable: list[bool], support: list[float | None], dense: list[float | None],
                    max_cuts: int = 200) -> Thresholds:
    """The abstention thresholds that best tell unanswerable from answerable questions.

    support, dense: the scores of each question's best hit (None: nothing retrieved, or no
    dense score). A question abstains when its support is under min_support and its dense
    score under min_dense. The objective is balanced accuracy, (abstention recall + share of
    answerable questions answered) / 2, which does not depend on how many of the questions are
    unanswerable; F1 does, and where the scores barely separate the classes (SQuAD v2) F1 is
    highest when always abstaining. Candidate cuts lie halfway between neighbouring observed
    scores (at most max_cuts quantiles of them); among equally good cuts the one in the widest
    gap wins, away from any observed score.
    """
    truth = np.array(answerable, dtype=bool)
    s = np.array([-1.0 if x is None else x for x in support], dtype=np.float64)
    d = np.array([-np.inf if x is None else x for x in dense], dtype=np.float64)
    s_cuts, s_gaps = _cuts(s[s >= 0], max_cuts)
    d_cuts, d_gaps = _cuts(d[np.isfinite(d)], max_cuts)
    d_cuts, d_gaps = np.append(np.inf, d_cuts), np.append(0.0, d_gaps)
    n_unanswerable, n_answerable = max(int((~truth).sum()), 1), max(int(truth.sum()), 1)
    best_key, out = None, None
    for d_cut, d_gap in zip(d_cuts, d_gaps):
        abstain = (s[None, :] < s_cuts[:, None]) & (d[None, :] < d_cut)  # (cuts, questions)
        recall = (abstain & ~truth).sum(axis=1) / n_unanswerable
        balanced = (recall + (~abstain & truth).sum(axis=1) / n_answerable) / 2
        for i in np.flatnonzero(balanced == balanced.max()):
            key = (round(float(balanced[i]), 9), float(s_gaps[i] + d_gap))
            if best_key is None or key > best_key:
                best_key = key
                d_value = float(d_cut) if np.isinf(d_cut) else round(float(d_cut), 3)
                out = Thresholds(round(float(s_cuts[i]), 3), d_value,
                                 float(balanced[i]), abstention_scores(list(truth), list(abstain[i])).f1)
    return out


def _cuts(values: np.ndarray, max_cuts: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts halfway between neighbouring distinct values, one below and one above them all,
    and the width of the gap each cut sits in."""
    v = np.unique(np.round(values, 6))
    if len(v) > max_cuts:
        v = np.unique(np.quantile(v, np.linspace(0, 1, max_cuts)))
    if len(v) == 0:
        return np.array([0.5]), np.array([0.0])
    edges = np.concatenate([[v[0] - 0.01], v, [v[-1] + 0.01]])
    return (edges[:-1] + edges[1:]) / 2, np.diff(edges)
