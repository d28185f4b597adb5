"""Follow-up questions are read with the question before them; stand-alone questions are not."""
from __future__ import annotations

import pytest

from qa.answer import answer
from qa import Retriever
from qa.conversation import MAX_CONTEXT, is_follow_up, read_question

SCHOOL = "Which school was hit with cluster munitions?"


@pytest.mark.parametrize("question", [
    "When did that happen?", "How many people died there?", "Who carried it out?", "What did she say?",
    "And in Jericho?", "What about the hospital?", "Why?", "That attack: when?",
])
def test_follow_ups(question):
    assert is_follow_up(question)


@pytest.mark.parametrize("question", [
    SCHOOL, "Where was the hospital that was bombed?", "Were there casualties in Idlib?",
    "Who is Heba Morayef?", "How many civilians were killed near the hospital?", "",
])
def test_stand_alone_questions(question):
    assert not is_follow_up(question)


def test_first_question_is_read_as_asked():
    assert read_question("  When did that   happen? ") == read_question("When did that happen?")
    r = read_question("When did that happen?")
    assert (r.query, r.follows) == ("When did that happen?", ())


def test_follow_up_searches_with_the_earlier_question_and_drops_empty_verbs():
    r = read_question("When did that happen?", [read_question(SCHOOL)])
    assert r.question == "When did that happen?" and r.follows == (SCHOOL,)
    assert r.query == "When did that" and r.context == SCHOOL  # the context is searched with the query


def test_stand_alone_question_changes_the_subject():
    history = [read_question(SCHOOL)]
    r = read_question("Who is Heba Morayef?", history)
    assert (r.query, r.follows) == ("Who is Heba Morayef?", ())


def test_chain_keeps_the_topic_but_stays_short():
    history = [read_question(SCHOOL)]
    for q in ["When did that happen?", "How many died there?", "Who did it?", "Why did they do that?"]:
        history.append(read_question(q, history))
    assert len(history[-1].follows) == MAX_CONTEXT
    assert history[2].follows == ("When did that happen?", SCHOOL)


def test_follow_up_answers_about_the_earlier_subject(keyword_index):
    r = Retriever.load(keyword_index)
    first = read_question(SCHOOL)
    alone = answer(r, "When did that happen?")
    reading = read_question("When did that happen?", [first])
    follow = answer(r, reading.query, context=reading.context)
    assert alone.abstained
    assert not follow.abstained and "February 25" in follow.citations[0].passage.text
    assert "school" in follow.citations[0].passage.text


def test_a_chain_of_follow_ups_is_not_split_into_questions(keyword_index):
    """ "And how many died there?" in a follow-up's context is not a second question of its own:
    the answer does not say the articles don't answer a fragment ("When did it?")."""
    r = Retriever.load(keyword_index)
    history = [read_question("How many civilians were killed near the hospital in Ariha?")]
    history.append(read_question("And how many died there?", history))
    reading = read_question("When did it happen?", history)
    assert reading.follows == (history[1].question, history[0].question)
    ans = answer(r, reading.query, context=reading.context)
    assert not ans.abstained and ans.notes == () and "January 29" in ans.text
    # a follow-up of two questions is answered part by part, each with the context; one sentence
    # answering both parts answers both (no "The articles don't say" for the second)
    two = read_question("When did it happen, and how many died?", history[:1])
    assert two.query == "When did it and how many died"
    both = answer(r, two.query, context=two.context)
    assert not both.abstained and both.notes == () and "January 29" in both.text and "11 civilians" in both.text
