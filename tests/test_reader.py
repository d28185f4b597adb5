"""The reader: what it reads, that its weights are checked before loading, and its answers on the
default corpus (questions worded apart from the articles)."""
from __future__ import annotations

import json
import shutil

import pytest

from qa import reader as reader_module
from qa.answer import ABSTAIN_TEXT, READER, RULES, answer
from qa.embed import ModelUnavailable
from qa.metrics import grounded_statements, parse_statements
from qa.reader import CARD, WEIGHTS, Candidate, load_reader, open_reader, pair
from qa.retrieve import Retriever


@pytest.fixture(scope="module")
def reader():
    return load_reader()


@pytest.fixture(scope="module")
def r(keyword_index):
    return Retriever.load(keyword_index)


def test_the_sentence_comes_before_its_neighbours():
    q, text = pair("Who?", Candidate("He said so.", ("Heba Morayef spoke.",), ("Then he left.",)))
    assert q == "Who?" and text.startswith("He said so. [SEP] Heba Morayef spoke.") and text.endswith("Then he left.")
    long = Candidate("Short.", ("x" * 5000,), ())
    assert len(pair("q", long)[1]) < 200  # neighbours are cut, never the sentence


def test_changed_weights_are_refused(tmp_path):
    bad = tmp_path / "reader.safetensors"
    shutil.copyfile(WEIGHTS, bad)
    with open(bad, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    card = json.loads(CARD.read_text())
    with pytest.raises(ModelUnavailable, match="not the expected"):
        reader_module.load_weights(reader_module.new_model(), bad, card["sha256"])


def test_rules_answer_unless_the_reader_is_asked_for(monkeypatch, tmp_path, r):
    monkeypatch.delenv("QA_READER", raising=False)
    off, why = open_reader()
    assert off is None and "QA_READER=on" in why  # measured worse than the rules: docs/reader.md
    monkeypatch.setenv("QA_READER", "none")
    assert open_reader()[0] is None
    monkeypatch.setenv("QA_READER", "on")
    on, why = open_reader()
    assert on is not None and why == "" and 0 < on.threshold < 1
    assert answer(r, "How many civilians were killed near the hospital in Ariha?").judged_by == RULES
    with pytest.raises(ModelUnavailable, match="no reader card"):
        load_reader(WEIGHTS, tmp_path / "reader.json")


def test_scores_are_probabilities_and_the_answer_ranks_first(reader):
    s = reader.scores("Which group accused Russia of war crimes?", [
        Candidate("Amnesty International accused the Syrian regime and its ally Russia of war crimes."),
        Candidate("The weather in Idlib was cold in February.")])
    assert s.shape == (2,) and ((0 <= s) & (s <= 1)).all() and s[0] > s[1]


@pytest.mark.xfail(strict=True, reason="the issue's own example: the shipped reader scores Amnesty's sentence 0.14 "
                   "and abstains; it does worse than the rules for now (docs/reader.md)")
def test_paraphrased_question_is_answered_from_the_sentence_that_answers(r, reader):
    ans = answer(r, "Which human rights group says war crimes were committed in northwest Syria?", reader=reader)
    assert ans.judged_by == READER and not ans.abstained and "Amnesty" in ans.text


def test_off_topic_question_gets_no_answer(r, reader):
    ans = answer(r, "Which country won the 2018 FIFA World Cup?", reader=reader)
    assert ans.abstained and ans.text == ABSTAIN_TEXT and ans.hits  # nearest passages still shown


@pytest.mark.parametrize("question", [
    "How many civilians were killed near the hospital in Ariha?",
    "Which school was hit with cluster munitions?",
    "How many people live in the Idlib region and who won the 2018 World Cup?",
])
def test_every_reader_answer_sentence_is_quoted_from_a_cited_source(r, reader, question):
    from qa.answer import Policy

    ans = answer(r, question, reader=reader, policy=Policy(threshold=0.0))  # answer whatever it scores
    assert not ans.abstained
    statements = parse_statements(ans.text)
    cited = {c.n: c.passage.text for c in ans.citations}
    assert statements and grounded_statements(statements, cited) == len(statements)
    assert all(0 <= c.score <= 1 for c in ans.citations)


def test_corroboration_survives_the_reader(r, reader):
    ans = answer(r, "How many civilians were killed near the hospital in Ariha?", reader=reader)
    assert {c.passage.article_id for c in ans.citations} == {"000_24bd21a41d8b3e79", "002_3d1258f428892b47"}


def test_assistant_searches_and_asks_with_the_reader(keyword_index, reader):
    from qa.answer import Assistant, Policy

    a = Assistant(Retriever.load(keyword_index), reader, Policy(threshold=0.0))
    hits = a.search("Which school was hit with cluster munitions?", k=3)
    assert len(hits) == 3 and all(h.score > 0 for h in hits)
    ans = a.ask("Which school was hit with cluster munitions?")
    assert ans.judged_by == READER and not ans.abstained
    assert Assistant.load(keyword_index, reader=False).ask("Which school was hit with cluster munitions?").judged_by == RULES


def test_threshold_is_chosen_for_the_most_questions_right_each_set_counting_equally():
    from qa.readertrain import CalibrationQuestion as Q, choose_threshold, right_at

    answerable, unanswerable = Q("q", (("11",),)), Q("q", ())
    assert right_at(0.5, answerable, 0.7, "killed 11 civilians") and not right_at(0.8, answerable, 0.7, "killed 11")
    assert not right_at(0.5, answerable, 0.7, "killed 12 civilians") and right_at(0.8, unanswerable, 0.7, "")
    # set a: answerable questions score 0.7-0.9, unanswerable 0.1-0.3; set b (one question) would pull it up
    a = ([answerable] * 3 + [unanswerable] * 3, [(0.7, "11"), (0.8, "11"), (0.9, "11"), (0.1, ""), (0.2, ""), (0.3, "")])
    t, curve = choose_threshold({"a": a})
    assert 0.3 < t <= 0.7 and max(r["a"] for r in curve) == 1.0
    b = ([unanswerable], [(0.75, "")])
    t2, _ = choose_threshold({"a": a, "b": b})
    assert 0.75 < t2 <= 0.8  # b counts as much as a: one unanswerable question moves the cut above it
