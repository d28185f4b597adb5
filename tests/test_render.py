"""What the chat shows: article text and questions as text, every marker with its card, honest framing."""
from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest

from qa import Retriever
from qa.answer import Citation, answer
from qa.articles import parse_text_article
from qa.conversation import read_question
from qa.embed import PRETRAINED, SELF_TRAINED, Mode
from qa.corroborate import corroborate
from qa.render import (Turn, answer_markdown, escape_md, export_markdown, header_html, hide_paths,
                       question_markdown, sources_html)
from qa.retrieve import Stats

NASTY = ('<script>alert("x")</script> [click](http://evil.example) **bold** <img src=x onerror=alert(1)> '
         '1. www.evil.example $x^2$ ~~gone~~ `code` # heading & more')


def visible_text(markup: str) -> str:
    """The text a browser shows for an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_escaped_markdown_renders_as_the_literal_text():
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").render(escape_md(NASTY))
    assert "<script" not in rendered and "<a " not in rendered and "<img" not in rendered
    assert "<strong>" not in rendered and "<code>" not in rendered and "<h1>" not in rendered
    assert visible_text(rendered).strip() == NASTY


def test_long_question_is_shortened_in_the_chat():
    shown = question_markdown("why " * 1000)
    assert len(shown) < 700 and "more characters" in shown


def test_server_paths_are_hidden():
    assert hide_paths("model /root/models/mini-lm not cached; see /tmp/x/index/gen-1") == \
        "model mini-lm not cached; see gen-1"
    assert hide_paths("use --model models/mini or a 1/2 share") == "use --model models/mini or a 1/2 share"


@pytest.fixture(scope="module")
def r(keyword_index):
    return Retriever.load(keyword_index)


def make_turn(r, question, number=1, history=()):
    reading = read_question(question, list(history))
    ans = answer(r, reading.query, context=reading.context)
    ids = {c.passage.article_id for c in ans.citations} | {h.article_id for h in ans.hits}
    return Turn(number, reading, ans, corroborate(ans), tuple(r.article(i) for i in sorted(ids)), "")


def test_every_marker_has_its_card(r):
    turn = make_turn(r, "How many civilians were killed near the hospital?", number=3)
    message, panel = answer_markdown(turn), sources_html([turn])
    targets = re.findall(r'href="#(src-3-\d+)"', message)
    assert targets and set(targets) == {f"src-3-{c.n}" for c in turn.answer.citations}
    for t in set(targets):
        assert f"id='{t}'" in panel


def test_answer_says_who_reports_it_and_shows_both_place_names(r):
    text = visible_text(answer_markdown(make_turn(r, "How many civilians were killed near the hospital?")))
    assert "Reported by 2 of 2 articles" in text
    assert "“Ariha”" in text and "“Jericho”" in text


def test_a_differing_word_is_marked_once_and_tags_are_left_alone():
    from qa.render import _marked
    text = "United Bank of Africa and Trust Bank, in West Africa: a class b."
    marked = _marked(text, 0, len(text), ("Bank", "Africa", "Bank", "class", "Africa", "b", "Bank"))
    assert visible_text(marked) == text
    assert "<b class=\"differs\"><b" not in marked
    assert re.findall(r'<b class="differs">([^<]*)</b>', marked) == ["Bank", "Africa", "Bank", "Africa", "class", "b"]


def test_a_date_the_loader_could_not_read_is_shown_whole(r):
    """A date kept as given ("last Tuesday") is not cut to ten characters; an ISO time is left out."""
    turn = make_turn(r, "Which school was hit with cluster munitions?")
    first, *rest = turn.answer.citations
    odd = replace(first, passage=first.passage._replace(published="last Tuesday"))
    timed = [replace(c, passage=c.passage._replace(published="2020-05-11T10:00:00+00:00")) for c in rest]
    turn = replace(turn, answer=replace(turn.answer, citations=(odd, *timed)))
    for shown in (sources_html([turn]), export_markdown(turn)):
        assert "last Tuesday" in shown and "last Tuesd " not in shown and "last Tuesd·" not in shown
        assert ("2020-05-11" in shown) == bool(rest) and "T10:00" not in shown


def test_streaming_shows_the_sentences_one_by_one(r):
    turn = make_turn(r, "How many attacks did Amnesty document?")
    assert len(turn.agreements) >= 2
    first, full = answer_markdown(turn, 1), answer_markdown(turn)
    assert turn.agreements[0].text.split()[0] in first and full.startswith(first)
    assert escape_md(turn.agreements[1].text) not in first and escape_md(turn.agreements[1].text) in full


def test_card_highlights_the_sentence_in_its_context_and_holds_the_whole_article(r):
    turn = make_turn(r, "Which school was hit with cluster munitions?")
    panel = sources_html([turn])
    c = turn.answer.citations[0]
    assert f"<mark>{html.escape(c.passage.text)}</mark>" in panel
    assert "class='around'" in panel  # a one-sentence paragraph comes with its neighbours
    assert "Whole article" in panel and html.escape(r.article(c.passage.article_id).text[-60:]) in panel
    assert "2020-05-11" in panel and "undated" in panel  # the second article has no date


def test_abstention_is_labelled_not_an_answer(r):
    turn = make_turn(r, "Why did Amnesty call for sanctions against the United Nations?")
    assert turn.answer.abstained and turn.answer.hits
    message, panel = visible_text(answer_markdown(turn)), visible_text(sources_html([turn]))
    assert "The articles don't say" in message and "not an answer" in message
    assert "not an answer" in panel and "Reported by" not in message


def test_follow_up_says_what_it_was_read_with(r):
    first = read_question("Which school was hit with cluster munitions?")
    turn = make_turn(r, "When did that happen?", 2, [first])
    assert "Read with your earlier question" in visible_text(answer_markdown(turn))
    chained = make_turn(r, "How many died there?", 3, [first, turn.reading])  # names the question of the topic
    assert f"Read with your earlier question “{first.question}”" in visible_text(answer_markdown(chained))


def test_article_markup_in_cards_stays_text(r):
    article = parse_text_article(f"title: {NASTY}\nsource: <b>Evil</b> [Times](http://x)\n\n{NASTY}", "evil")
    turn = make_turn(r, "Which school was hit with cluster munitions?")
    cited = turn.answer.citations[0].passage._replace(article_id="evil", title=article.title, source=article.source,
                                                      paragraph=0, start=0, end=len(NASTY), text=NASTY)
    ans = replace(turn.answer, citations=(Citation(1, cited, 1.0),))
    panel = sources_html([replace(turn, answer=ans, agreements=(), articles=(article,))])
    assert "<script" not in panel and "<img" not in panel and "<b>Evil" not in panel
    assert NASTY in visible_text(panel) and "<b>Evil</b> [Times](http://x)" in visible_text(panel)


def test_export_is_markdown_with_numbered_sources(r):
    turn = make_turn(r, "How many civilians were killed near the hospital?")
    md = export_markdown(turn)
    assert md.startswith("**Q:** How many civilians")
    assert "[1][2]" in md and "\n[1] " in md and "\n[2] " in md
    assert "Ariha" in md and "Jericho" in md and "2020-05-11" in md


def test_header_in_hybrid_mode_names_the_model_not_its_path():
    stats = Stats(1200, 30000, "2019-01-02", "2020-05-11", ("AFP", "Reuters"), Mode(PRETRAINED, "/srv/models/minilm"), "")
    text = visible_text(header_html(stats, undated=0, reader=True))
    assert "keywords + minilm" in text and "/srv" not in text and "2 outlets" in text
    assert "1,200 articles" in text and "undated" not in text and "answers: the reader" in text
    one = visible_text(header_html(Stats(1, 1, "", "", ("AFP",), Mode(PRETRAINED, "minilm"), ""), undated=0))
    assert "1 article ·" in one and "1 sentence ·" in one and "1 outlet ·" in one


def test_header_says_when_answers_fall_back_to_rules():
    stats = Stats(3, 40, "", "", (), Mode(SELF_TRAINED), "")
    text = visible_text(header_html(stats, undated=0, reader=False))
    assert "self-trained" in text and "answers: rules (no reader)" in text


def test_header_names_counts_dates_and_mode(r):
    text = visible_text(header_html(r.stats(), undated=1))
    assert "2 articles" in text and f"{r.stats().sentences} sentences" in text
    assert "2020-05-11" in text and "1 undated" in text and "keywords only" in text
