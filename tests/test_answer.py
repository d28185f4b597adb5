"""Answers: only cited source sentences, abstention when the articles don't say."""
from __future__ import annotations

import re

import pytest

from qa import Retriever
from qa.answer import (ABSTAIN_TEXT, FOCUS_WITHOUT_VALUE, FOCUSED, REJECTED, TYPED, UNTYPED, Asks, answer, asks, fit,
                       interleave)
from qa.retrieve import MAX_QUESTION_CHARS


@pytest.fixture(scope="module")
def r(keyword_index):
    return Retriever.load(keyword_index)


def answer_sentences(text: str) -> list[tuple[str, list[int]]]:
    """Split 'sentence [1][2] sentence [3]' into (sentence, [1, 2]) pairs."""
    return [(s.strip(), [int(n) for n in re.findall(r"\[(\d+)\]", marks)])
            for s, marks in re.findall(r"(.+?) ((?:\[\d+\])+)", text)]


def test_ariha_answer_cites_both_articles(r):
    ans = answer(r, "How many civilians were killed near the hospital in Ariha?")
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
    ans = answer(r, question)
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
    ans = answer(r, question)
    assert ans.abstained and ans.text == ABSTAIN_TEXT and ans.citations == ()


def test_abstention_keeps_nearest_passages(r):
    ans = answer(r, "What did the Amnesty report say about chemical weapons in Douma?")
    assert ans.abstained and ans.hits  # the nearest passages, shown as not an answer


def test_empty_and_huge_questions(r):
    assert answer(r, "   ").abstained
    ans = answer(r, "How many civilians were killed near the hospital in Ariha? " * 200)
    assert ans.notes and str(MAX_QUESTION_CHARS) in ans.notes[0].replace(",", "")


@pytest.mark.parametrize("question, kind, focus, strict, prop", [
    ("How many hospitals were destroyed?", "number", "hospit", False, None),
    ("How many were displaced?", "number", None, False, None),
    ("When was the offensive relaunched?", "date", None, False, None),
    ("Whose forces carried out the attacks?", "name", "forc", False, None),
    ("Which monitoring group counted the deaths?", "name", None, False, None),
    ("What is the name of the school that was attacked?", "name", "school", True, None),
    ("What is Heba Morayef's nationality?", None, None, False, "nation"),
    ("What does Amnesty say the violations amount to?", None, None, False, None),
])
def test_asks_reads_what_the_question_wants(question, kind, focus, strict, prop):
    assert asks(question) == Asks(kind, focus, strict, prop)


@pytest.mark.parametrize("question, sentence, expected", [
    # a number beside the asked-for noun; the noun without one; no such noun at all
    ("How many hospitals were hit?", "Strikes hit two hospitals in the north.", FOCUSED),
    ("How many hospitals were hit?", "Strikes near a hospital killed 11 civilians.", FOCUS_WITHOUT_VALUE),
    ("How many people were killed?", "The strike killed 11 civilians.", TYPED),
    ("How many people were killed?", "The strike was condemned.", REJECTED),
    ("How many attacks happened in 2019?", "Attacks rose in 2019.", REJECTED),  # the question's own number
    ("In which year did the war begin?", "The war began in 2011.", TYPED),
    ("Whose forces attacked?", "It was done by the Bashar al-Asad or Russian forces.", FOCUSED),
    ("Who was interviewed?", "Doctors and teachers were interviewed.", UNTYPED),  # "who" without a name
    ("What is the name of the school?", "A school in the city was hit, Amnesty said.", FOCUS_WITHOUT_VALUE),
    ("What is the name of the school?", "A school in the city was hit.", REJECTED),
    ("What is the name of the school?", "The Al-Amal school was hit.", FOCUSED),
    ("What is Heba Morayef's nationality?", "Heba Morayef is Amnesty's regional director.", REJECTED),
    ("What is Heba Morayef's nationality?", "Heba Morayef, of Egyptian nationality, spoke.", UNTYPED),
])
def test_fit_checks_the_kind_of_answer(question, sentence, expected):
    assert fit(sentence, asks(question), question) == expected


def test_a_count_the_articles_do_not_give_is_not_answered(r):
    # Hospitals are mentioned (a strike near one) but never counted: the nearest sentence with some
    # other number is not an answer.
    assert answer(r, "How many hospitals were destroyed in the attacks?").abstained
    assert answer(r, "What is the name of the school that was attacked in Idlib?").abstained
    assert answer(r, "What is Heba Morayef's nationality?").abstained
    counted = answer(r, "How many residential buildings were destroyed near the hospital?")
    assert not counted.abstained and "two residential buildings" in counted.text


def test_a_question_in_two_parts_lists_both_answers_first(r):
    a = answer(r, "How many attacks did Amnesty document, and how many of them used barrel bombs?")
    assert "18 attacks" in a.text and "two with barrel bombs" in a.text
    answer_ids = {c.passage.sentence_id for c in a.citations}
    assert {p.sentence_id for h in a.hits[:len(answer_ids)] for p in h.sources} >= answer_ids


def test_interleave_takes_turns_without_repeats(r):
    one, two = r.search("barrel bombs", k=3), r.search("Heba Morayef", k=3)
    merged = interleave([one, two], k=4)
    assert [h.passage.sentence_id for h in merged] == [one[0].passage.sentence_id, two[0].passage.sentence_id,
                                                        one[1].passage.sentence_id, two[1].passage.sentence_id]
    assert interleave([one, one], k=10) == tuple(one)


def test_each_part_gets_its_best_sentence_and_an_unanswered_part_says_so(r):
    a = answer(r, "How many people live in the Idlib region and who won the 2018 World Cup?")
    assert not a.abstained and "three million civilians" in a.text
    assert len(answer_sentences(a.text)) == 1
    assert a.notes == ("The articles don't say: “who won the 2018 World Cup?”",)
    both = answer(r, "How many attacks did Amnesty document, and how many of them used barrel bombs?")
    assert len(answer_sentences(both.text)) == 2 and not both.notes
    assert answer(r, "Who won the 2018 World Cup and what is the capital of Australia?").abstained
