"""The chat's handlers without a browser: streaming, filters, follow-ups, uploads, safe defaults."""
from __future__ import annotations


import gradio as gr
import pytest

from qa import Retriever
from qa.chat import KEEP_MESSAGES, KEEP_TURNS, build_ui, parse_day, respond, serve, upload_report
from qa.index import build_index
from qa.render import SEARCHING
from qa.retrieve import MAX_QUESTION_CHARS
from qa.sentences import load_splitter
from qa.uploads import Added, LiveIndex

SCHOOL = "Which school was hit with cluster munitions?"


@pytest.fixture(scope="module")
def live(keyword_index, corpus_dir):
    return LiveIndex(Retriever.load(keyword_index), keyword_index, corpus_dir, load_splitter())


def ask(live, question, history=(), turns=(), sources=(), since="", until=""):
    return list(respond(live, question, list(history), list(turns), list(sources), since, until))


def last_message(steps) -> str:
    return steps[-1][1][-1]["content"]


def test_answer_streams_then_fills_sources_and_export(live):
    steps = ask(live, SCHOOL)
    assert steps[0][1][-1]["content"] == SEARCHING and steps[0][0] == ""  # visible at once, box cleared
    box, history, turns, panel, md = steps[-1]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "Idlib" in history[-1]["content"] and 'href="#src-1-1"' in history[-1]["content"]
    assert "id='src-1-1'" in panel and "id='src-1-2'" in panel
    assert md.startswith(f"**Q:** {SCHOOL}") and "[1][2]" in md
    assert len(turns) == 1 and turns[0].number == 1


def test_several_sentences_arrive_one_at_a_time(live):
    steps = ask(live, "How many attacks did Amnesty document?")
    contents = [s[1][-1]["content"] for s in steps]
    assert len(steps) == len(steps[-1][2][-1].agreements) + 1
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(contents[1:], contents[2:]))


def test_follow_up_uses_the_conversation(live):
    first = ask(live, SCHOOL)
    _, history, turns, _, _ = first[-1]
    steps = ask(live, "When did that happen?", history, turns)
    message = last_message(steps)
    assert "February 25" in message and "Read with your earlier question" in message
    assert 'href="#src-2-1"' in message and "id='src-2-1'" in steps[-1][3]
    assert len(steps[-1][1]) == 4


def test_empty_question_changes_nothing(live):
    (step,) = ask(live, "   ")
    assert step[1] == [] and step[2] == []


def test_question_markup_shows_as_text(live):
    steps = ask(live, "<script>alert(1)</script> [x](http://evil) school cluster munitions?")
    user = steps[-1][1][0]["content"]
    assert "<script" not in user and "](http" not in user


def test_date_filter_leaves_out_undated_articles(live):
    steps = ask(live, SCHOOL, since="2020-05-01", until="2020-05-31")
    turn = steps[-1][2][-1]
    assert {c.passage.article_id for c in turn.answer.citations} == {"000_24bd21a41d8b3e79"}
    assert "undated ones left out" in last_message(steps)
    assert ask(live, SCHOOL, since="2021-01-01")[-1][2][-1].answer.abstained


@pytest.mark.parametrize("since, until, message", [
    ("yesterday-ish", "", "is not a date"), ("2020-06-01", "2020-05-01", "swap them"),
])
def test_bad_dates_get_a_message_not_a_search(live, since, until, message):
    steps = ask(live, SCHOOL, since=since, until=until)
    assert len(steps) == 1 and message in last_message(steps) and steps[0][2] == []


def test_parse_day():
    assert parse_day(" 2020-05-11 ", "From") == "2020-05-11"
    assert parse_day("11 May 2020", "From") == "2020-05-11"
    assert parse_day("", "To") == ""
    # search takes a year, or a year and month, as its first or last day
    assert parse_day("2020", "From") == "2020" and parse_day(" 2020-05", "To") == "2020-05"
    with pytest.raises(ValueError, match="not a date"):
        parse_day("2020-13", "To")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_day("soon", "To")


def test_upload_report_names_what_happened_without_paths():
    text = upload_report([Added("a.txt", "a.txt", ("a",), ()),
                          Added("<b>x</b>.txt", "", (), ("indexing failed (/srv/secret/index/gen-1: full)",))])
    assert "Added a\\.txt" in text and "1 article" in text
    assert "Rejected &lt;b&gt;x&lt;/b&gt;\\.txt" in text and "/srv" not in text


def test_ui_renders_markdown_safely_and_offers_examples(live):
    ui = build_ui(live)
    props = {c["props"].get("elem_id"): c["props"] for c in ui.config["components"]}
    chat = props["answers"]
    assert chat["latex_delimiters"] == [] and chat["sanitize_html"] and chat["allow_tags"] is False
    assert SCHOOL in [e["text"] for e in chat["examples"]]
    assert "<b>2</b> articles" in props["archive-header"]["value"]


@pytest.fixture
def launched(monkeypatch, tmp_path, corpus_dir):
    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw))
    index = tmp_path / "index"
    build_index(corpus_dir, index, load_splitter(), None, progress=False)
    return calls, index


def test_serve_is_local_and_private_by_default(launched):
    calls, index = launched
    serve(str(index))
    (kw,) = calls
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False and kw["auth"] is None
    assert kw["show_error"] is False and "api" not in kw["footer_links"]


def test_login_is_opt_in(launched):
    calls, index = launched
    serve(str(index), auth="ann:s3cret:x")
    login = calls[-1]["auth"]
    assert login("ann", "s3cret:x") and not login("ann", "s3cret") and not login("bob", "s3cret:x")
    with pytest.raises(SystemExit, match="USER:PASSWORD"):
        serve(str(index), auth="ann")


def test_a_long_conversation_keeps_the_latest_turns(live):
    history, turns = [], []
    for i in range(KEEP_TURNS + 2):
        *_, (_, history, turns, panel, _) = ask(live, SCHOOL, history, turns)
    assert len(turns) == KEEP_TURNS and turns[-1].number == KEEP_TURNS + 2
    assert f"id='src-{KEEP_TURNS + 2}-1'" in panel and "id='turn-1'" not in panel
    assert len(history) == 2 * (KEEP_TURNS + 2)  # the chat keeps more than the cards


def test_the_chat_keeps_a_bounded_number_of_messages(live):
    history = [{"role": r, "content": f"m{i}"} for i in range(KEEP_MESSAGES) for r in ("user",)]
    *_, (_, history, turns, _, _) = ask(live, SCHOOL, history)
    assert len(history) == KEEP_MESSAGES and history[-2]["content"].startswith("Which school")
    assert history[0]["content"] == "m2"


def test_a_huge_question_gets_a_message_and_is_not_kept(live):
    question = "Which school was hit? " + "x" * 1_000_000
    steps = ask(live, question)
    (box, history, turns, panel, md) = steps[-1]
    assert len(steps) == 1 and turns == [] and panel == gr.skip() and md == gr.skip()
    assert "1,000,022 characters" in history[-1]["content"] and f"{MAX_QUESTION_CHARS:,}" in history[-1]["content"]
    assert len(box) == MAX_QUESTION_CHARS  # left in the box, cut, to be shortened
    assert sum(len(m["content"]) for m in history) < 2_000


def test_the_question_box_is_capped_in_the_browser(live):
    props = {c["props"].get("elem_id"): c["props"] for c in build_ui(live).config["components"]}
    assert props["question"]["max_length"] == MAX_QUESTION_CHARS


def test_answers_stream_plain_values_and_the_panel_follows_each_ask(live):
    """No streamed step returns gr.skip(): in Gradio 6.31 each one kept its session's outputs alive."""
    ui = build_ui(live)
    names = {c["id"]: c["props"].get("elem_id") for c in ui.config["components"]}
    deps = ui.config["dependencies"]
    asks = [d for d in deps if (d["api_name"] or "").startswith("on_ask")]
    assert len(asks) == 3 and all("sources" not in [names.get(o) for o in d["outputs"]] for d in asks)
    for d in asks:
        (after,) = [x for x in deps if x.get("trigger_after") == d["id"]]
        assert [names.get(o) for o in after["outputs"]] == ["sources", "answer-md"]
    steps = ask(live, SCHOOL)
    assert all(not isinstance(v, dict) for step in steps for v in step[:3])
