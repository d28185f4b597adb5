"""Corroboration: who reports each answer sentence, and the details they word differently."""
from __future__ import annotations

import shutil

import pytest

from qa.answer import answer
from qa import Retriever
from qa.conversation import read_question
from qa.corroborate import Reading, also_answering, corroborate, details, differences
from qa.index import build_index
from qa.render import Turn, answer_markdown, export_markdown, sources_html
from qa.retrieve import Passage
from qa.sentences import load_splitter


def passage(text: str, article: str = "a") -> Passage:
    return Passage(f"{article}:0", article, "", "", "", "", 0, 0, 0, len(text), text)


def test_details_are_numbers_and_names_normalised():
    d = details("On Tuesday eleven people died in Ariha, 1,000 fled on Feb. 3 to the Russians.")
    assert set(d) >= {"11", "1000", "3", "ariha", "tuesday"}
    assert details("Russians arrived") == {} and details("The Russians arrived") == {"russian": "Russians"}
    assert "februari" in d or "february" in d
    assert "on" not in d and "the" not in d


def test_place_names_that_differ_are_both_shown():
    a = passage("Strikes near a hospital in the city of Ariha on January 29 killed 11 civilians.", "x")
    b = passage("Among the attacks, strikes near a hospital in Jericho on January 29 killed 11 civilians.", "y")
    (diff,) = differences([a, b], [1, 2])
    assert diff.readings == (Reading(("Ariha",), (1,)), Reading(("Jericho",), (2,)))


def test_a_detail_that_differs_twice_in_a_sentence_cites_it_once():
    a = passage("United Bank of Africa and Standard Trust agreed to create the biggest bank in West Africa.", "x")
    b = passage("United Bank of Bowden and Standard Trust agreed to create the biggest bank in West Bowden.", "y")
    (diff,) = differences([a, b], [1, 2])
    assert diff.readings == (Reading(("Africa",), (1,)), Reading(("Bowden",), (2,)))


def test_numbers_that_differ_are_both_shown():
    a = passage("The strike killed 11 civilians in Idlib on Monday.")
    b = passage("The strike killed twelve civilians in Idlib on Monday.")
    (diff,) = differences([a, b], [3, 4])
    assert [r.words for r in diff.readings] == [("11",), ("twelve",)]


@pytest.mark.parametrize("a, b", [
    ("The strike killed 11 civilians in Idlib.", "The strike killed eleven civilians in Idlib."),
    ("Heba Morayef of Amnesty said so.", "Heba Morayef of Amnesty International said so."),  # more detail
    ("The Russians struck at dawn.", "The Russian forces struck at dawn."),
    ("Amnesty accused Russia.", "Reuters: Amnesty accused Russia."),  # first words say nothing
])
def test_same_details_in_other_words_are_no_difference(a, b):
    assert differences([passage(a), passage(b)], [1, 2]) == ()


def test_third_article_agreeing_with_the_first_is_listed_with_it():
    a = passage("A hospital in Ariha was hit on January 29.", "x")
    b = passage("A hospital in Jericho was hit on January 29.", "y")
    c = passage("A hospital in Ariha was hit on January 29, witnesses said.", "z")
    (diff,) = differences([a, b, c], [1, 2, 3])
    assert diff.readings == (Reading(("Ariha",), (1, 3)), Reading(("Jericho",), (2,)))


@pytest.fixture(scope="module")
def r(keyword_index):
    return Retriever.load(keyword_index)


def test_default_corpus_ariha_jericho(r):
    (g, *_) = corroborate(answer(r, "How many civilians were killed near the hospital?"))
    assert (g.reported_by, g.matching_articles) == (2, 2)
    assert [c.n for c in g.citations] == [1, 2]
    words = {w for d in g.differences for rd in d.readings for w in rd.words}
    assert words == {"Ariha", "Jericho"}


def test_default_corpus_school_agrees(r):
    ans = answer(r, "Which school was hit with cluster munitions?")
    (g, *_) = corroborate(ans)
    assert (g.reported_by, g.matching_articles, g.differences) == (2, 2, ())
    assert g.text == ans.citations[0].passage.text


def test_every_citation_belongs_to_one_agreement_in_order(r):
    ans = answer(r, "How many attacks did Amnesty document?")
    groups = corroborate(ans)
    assert [c.n for g in groups for c in g.citations] == [c.n for c in ans.citations]
    assert all(g.reported_by <= g.matching_articles for g in groups)


def test_abstention_has_no_agreements(r):
    assert corroborate(answer(r, "What is the capital of France?")) == ()
    assert also_answering(answer(r, "What is the capital of France?")) == ()


def test_every_article_counted_as_answering_is_cited_or_listed(r):
    ans = answer(r, "How many civilians were killed near the hospital?")
    assert also_answering(ans) == ()  # both articles are cited: nothing more to show


CORRECTION = ("title: Correction\nsource: Iberia Daily\npublished: 2020-05-12\n\n"
              "An earlier report misstated the death toll in Ariha; Amnesty said 12 civilians were killed.\n")


@pytest.fixture(scope="module")
def corrected(tmp_path_factory, corpus_dir):
    """The default corpus and a third article that gives another death toll."""
    corpus = tmp_path_factory.mktemp("corrected") / "corpus"
    shutil.copytree(corpus_dir, corpus)
    (corpus / "correction.txt").write_text(CORRECTION, encoding="utf-8")
    build_index(corpus, corpus.parent / "index", load_splitter(), None, mode_reason="keyword-only: test",
                progress=False)
    return Retriever.load(corpus.parent / "index")


def test_an_article_counted_but_not_quoted_is_shown_with_what_it_says(corrected):
    """"Reported by 2 of 3": the third article (12 civilians, not 11) is listed under the answer
    and has a card, so every article counted can be read."""
    ans = answer(corrected, "How many people were killed in Ariha?")
    (g, *_) = corroborate(ans)
    (also,) = also_answering(ans)
    assert (g.reported_by, g.matching_articles) == (2, 3) and also.article_id == "correction"
    assert {c.passage.article_id for c in ans.citations} | {also.article_id} == set(corrected.article_ids)
    turn = Turn(1, read_question(ans.question), ans, corroborate(ans),
                tuple(corrected.article(i) for i in corrected.article_ids), "", (also,))
    message = answer_markdown(turn)
    assert "Also counted as answering" in message and "12 civilians" in message and "#also-1-1" in message
    assert "id='also-1-1'" in sources_html([turn]) and "12 civilians" in export_markdown(turn)
    assert len(turn.agreements) == 2 and "Also counted" not in answer_markdown(turn, 1)  # once all is shown
