"""Metrics equal hand-worked examples (definitions: docs/evaluation.md)."""
from __future__ import annotations

import math

import pytest

from qa.metrics import (CitationCounts, Statement, abstention_scores, citation_counts, contains_answer,
                        first_complete_rank, grounded_statements, lexically_supports, mrr, parse_statements,
                        percentile, recall_at, supports)


def test_first_complete_rank_needs_every_sentence_of_one_alternative():
    retrieved = [{"a:1"}, {"b:2", "b:3"}, {"a:4"}]  # rank 2 is a hit carrying two sources
    assert first_complete_rank(retrieved, [{"a:1"}]) == 1
    assert first_complete_rank(retrieved, [{"b:3"}]) == 2
    assert first_complete_rank(retrieved, [{"a:1", "a:4"}]) == 3  # both halves only by rank 3
    assert first_complete_rank(retrieved, [{"a:1", "a:9"}, {"b:2"}]) == 2  # the second alternative completes first
    assert first_complete_rank(retrieved, [{"z:0"}]) is None
    assert first_complete_rank([], [{"a:1"}]) is None
    assert first_complete_rank(retrieved, [set()]) is None  # an empty alternative is never "found"


def test_recall_and_mrr_by_hand():
    ranks = [1, 3, None, 6]
    assert recall_at(ranks, 1) == 0.25
    assert recall_at(ranks, 3) == 0.5
    assert recall_at(ranks, 5) == 0.5
    assert mrr(ranks, 10) == pytest.approx((1 + 1 / 3 + 0 + 1 / 6) / 4)
    assert mrr(ranks, 5) == pytest.approx((1 + 1 / 3) / 4)  # rank 6 is beyond the cut
    assert math.isnan(recall_at([], 5)) and math.isnan(mrr([], 10))


@pytest.mark.parametrize("text, expected, ok", [
    ("It killed 11 civilians. [1]", [("11 civilians",)], True),
    ("It killed 11 CIVILIANS. [1]", [("11 civilians",)], True),  # case
    ("the “war crimes” [1]", [('"war crimes"',)], True),  # curly and straight quotes are one
    ("in 2018 [1]", [("18",)], False),  # whole words only
    ("18 attacks [1]", [("18",)], True),
    ("three million people; about a million fled [1]", [("three million", "a million")], True),
    ("three million people [1]", [("three million", "a million")], False),  # every part is needed
    ("three million people [1]", [("a million",), ("three million",)], True),  # any alternative
    ("", [("x",)], False),
])
def test_contains_answer(text, expected, ok):
    assert contains_answer(text, expected) is ok


def test_parse_statements_splits_at_markers():
    text = "First fact. [1][2] Second fact. [3] Trailing words"
    assert parse_statements(text) == [Statement("First fact.", (1, 2)), Statement("Second fact.", (3,)),
                                      Statement("Trailing words", ())]
    assert parse_statements("No markers at all.") == [Statement("No markers at all.", ())]
    assert parse_statements("") == []


def test_lexical_support_rule():
    statement = "Russian strikes near a hospital killed 11 civilians."
    # 5 of the statement's 6 content words (russian strike near hospit kill civilian; "11" is one too)
    assert lexically_supports("Russian bombardments near a hospital killed 11 civilians.", statement)
    # every word there, but another number: not support
    assert not lexically_supports("Russian strikes near a hospital killed 12 civilians.", statement)
    # the number is there, but too few words (11, civilian of 7)
    assert not lexically_supports("11 civilians died.", statement)
    assert not lexically_supports("anything", "the of and")  # no content words: nothing to support
    assert lexically_supports("the 380,000 deaths in Syria", "Syria: 380000 deaths")  # thousands separator


def test_supports_identity_gold_and_lexical():
    s = "Amnesty documented 18 attacks."
    assert supports([s], s)
    assert not supports([], s)
    other = "The organisation recorded eighteen raids."  # a paraphrase the lexical rule misses
    assert not supports([other], s)
    assert supports([other], s, gold={s, other})  # both answer the question on their own
    assert not supports([other], s, gold={s})


def test_citation_counts_follow_alce():
    a = "Russian strikes near a hospital killed 11 civilians."
    near_copy = "Among the attacks, Russian strikes near a hospital in Jericho killed 11 civilians."
    unrelated = "A ceasefire has been in effect since March 6."
    statements = [Statement(a, (1, 2, 3)), Statement("An uncited sentence.", ())]
    cited = {1: a, 2: near_copy, 3: unrelated}
    counts = citation_counts(statements, cited)
    # statement 1 is supported, statement 2 has no citation; citations 1 and 2 each support
    # statement 1 alone, citation 3 neither supports it nor is needed.
    assert counts == CitationCounts(supported_statements=1, statements=2, relevant_citations=2, citations=3)
    assert counts.recall == 0.5 and counts.precision == pytest.approx(2 / 3)


def test_citation_needed_only_together_is_relevant():
    # Neither half supports the statement alone; together they do, and each is needed.
    statement = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet."
    left, right = "Alpha bravo charlie delta echo.", "Foxtrot golf hotel india juliet."  # half each
    counts = citation_counts([Statement(statement, (1, 2))], {1: left, 2: right})
    assert counts == CitationCounts(1, 1, 2, 2)


def test_citation_counts_add_up():
    assert CitationCounts(1, 2, 3, 4) + CitationCounts(1, 1, 1, 1) == CitationCounts(2, 3, 4, 5)
    assert math.isnan(CitationCounts(0, 0, 0, 0).recall)


def test_groundedness_counts_verbatim_statements():
    statements = [Statement("Exact sentence.", (1,)), Statement("Changed sentence.", (1, 2)),
                  Statement("Exact sentence.", ())]
    cited = {1: "Exact sentence.", 2: "A changed sentence, reworded."}
    assert grounded_statements(statements, cited) == 1  # uncited text is never grounded


def test_abstention_scores_by_hand():
    answerable = [True, True, True, False, False]
    abstained = [False, True, False, True, False]
    s = abstention_scores(answerable, abstained)
    assert s.precision == 0.5  # 2 abstentions, 1 on an unanswerable question
    assert s.recall == 0.5  # 2 unanswerable, 1 abstained on
    assert s.f1 == 0.5
    assert s.false_abstention_rate == pytest.approx(1 / 3)


def test_abstention_scores_edge_cases():
    never = abstention_scores([True, False], [False, False])
    assert math.isnan(never.precision) and never.recall == 0.0 and never.f1 == 0.0
    perfect = abstention_scores([True, False], [False, True])
    assert (perfect.precision, perfect.recall, perfect.f1, perfect.false_abstention_rate) == (1, 1, 1, 0)
    assert math.isnan(abstention_scores([True], [False]).f1)  # nothing unanswerable, nothing abstained


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    xs = [5.0, 1.0, 4.0, 2.0, 10.0, 3.0]
    for q in (0, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert math.isnan(percentile([], 50))


def test_best_thresholds_by_hand():
    from qa.metrics import best_thresholds

    # supports 0.9 0.7 answerable, 0.3 and nothing retrieved unanswerable: the cut is mid-gap at 0.5
    t = best_thresholds([True, True, False, False], [0.9, 0.7, 0.3, None], [None] * 4)
    assert (t.min_support, t.balanced_accuracy, t.f1) == (0.5, 1.0, 1.0) and math.isinf(t.min_dense)
    # overlapping classes: one error is unavoidable; balanced accuracy 0.75 either way
    t = best_thresholds([True, True, False, False], [0.9, 0.2, 0.4, 0.1], [None] * 4)
    assert t.balanced_accuracy == 0.75
