"""Answers: only cited source sentences, abstention when the articles don't say."""
from __future__ import annotations

import re

import pytest

from qa import Retriever
from qa.answer import ABSTAIN_TEXT
from qa.retrieve import MAX_QUESTION_CHARS


@pytest.fixture(scope="module")
def r(keyword_index):
    return Retriever.load(keyword_index)


def answer_sentences(text: str) -> list[tuple[str, list[int]]]:
    """Split 'sentence [1][2] sentence [3]' into (sentence, [1, 2]) pairs."""
    return [(s.strip(), [int(n) for n in re.findall(r"\[(\d+)\]", marks)])
            for s, marks in re.findall(r"(.+?) ((?:\[\d+\])+)", text)]


def test_ariha_answer_cites_both_articles(r):
    ans = r.ask("How many civilians were killed near the hospital in Ariha?")
    assert not ans.abstained and "11 civilians" in ans.text
    assert {c.passage.article_id for c in ans.citations} == {"000_24bd21a41d8b3e79", "002_3d1258f428892b47"}
    assert ans.text.startswith(ans.citations[0].passage.text)


@pytest.mark.parametrize("question", [
    "How many civilians were killed near the hospital in Ariha?",
    "Which school was hit with cluster munitions?",
    "How many people were displaced?",
    "Who is the regional director of Amnesty?",
])
def test_every_answer_sentence_is_in_a_cited_source(r, question):
    ans = r.ask(question)
    parts = answer_sentences(ans.text)
    assert parts and "".join(f"{s} {''.join(f'[{n}]' for n in ns)} " for s, ns in parts).strip() == ans.text
    numbers = [c.n for c in ans.citations]
    assert numbers == list(range(1, len(numbers) + 1))
    for sentence, cited in parts:
        cited_texts = {ans.citations[n - 1].passage.text for n in cited}
        assert sentence in cited_texts
        for n in cited:
            p = ans.citations[n - 1].passage
            assert r.article(p.article_id).text[p.start:p.end] == p.text


@pytest.mark.parametrize("question", [
    "What is the capital of France?",
    "Who won the football world cup?",
    "What is the recipe for banana bread?",
    "How did the stock market react to the interest rate decision?",
])
def test_abstains_off_topic(r, question):
    ans = r.ask(question)
    assert ans.abstained and ans.text == ABSTAIN_TEXT and ans.citations == ()


def test_abstention_keeps_nearest_passages(r):
    ans = r.ask("What did the Amnesty report say about chemical weapons in Douma?")
    assert ans.abstained and ans.hits  # the nearest passages, shown as not an answer


def test_empty_and_huge_questions(r):
    assert r.ask("   ").abstained
    ans = r.ask("How many civilians were killed near the hospital in Ariha? " * 200)
    assert ans.notes and str(MAX_QUESTION_CHARS) in ans.notes[0].replace(",", "")
