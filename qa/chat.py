"""The Gradio chat: cited answers streamed sentence by sentence, a sources panel, filters and uploads."""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from qa.answer import answer
from qa.articles import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, filter_day
from qa.conversation import read_question
from qa.reader import Reader, open_reader
from qa.corroborate import also_answering, corroborate
from qa.render import (MAX_ALSO, SEARCHING, Turn, answer_markdown, escape_md, export_markdown, header_html,
                       hide_paths, question_markdown, scope_words, sources_html)
from qa.login import LoginLimiter
from qa.retrieve import MAX_QUESTION_CHARS, Retriever
from qa.uploads import Added, LiveIndex

log = logging.getLogger(__name__)

# Shown on first load when the archive can answer them (the default corpus can).
EXAMPLE_QUESTIONS = (
    "Which school was hit with cluster munitions?",
    "How many civilians were killed near the hospital?",
    "Who is Amnesty's regional director?",
    "What is the Amnesty report based on?",
)

KEEP_TURNS = 20  # turns whose source cards a session keeps
KEEP_MESSAGES = 100  # chat messages a session keeps (50 questions and answers): state stays bounded
REFRESH_EVERY = 5.0  # seconds between an open page's looks for a newer index (header, outlets, examples)

# The sources panel scrolls: Gradio sets `overflow: visible` inline on the block, so without
# !important long cards ran on over "Add articles" and the footer.
CSS = """
#sources { max-height: 78vh; overflow-y: auto !important; }
#sources .card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px; margin: 8px 0; }
#sources .card.flash { outline: 3px solid var(--color-accent); transition: outline 0.2s; }
#sources .badge { font-weight: 700; color: var(--color-accent); margin-right: 4px; }
#sources .title { font-weight: 600; }
#sources .meta, #sources .url { font-size: 0.85em; color: var(--body-text-color-subdued); }
#sources .url { word-break: break-all; }
#sources mark { background: #fff3a0; color: #111; padding: 0 2px; }
#sources b.differs { text-decoration: underline wavy #d33; }
#sources .turn-q { font-weight: 600; margin-top: 4px; }
#sources .not-answer { color: #a33; font-weight: 600; }
#sources details.older { margin-top: 10px; }
#sources .article p, #sources p.context, #sources p.around { margin: 6px 0; }
#sources p.around { color: var(--body-text-color-subdued); font-size: 0.92em; }
#answers a.cite { text-decoration: none; font-weight: 700; font-size: 0.85em; vertical-align: super; }
.stats { font-size: 0.95em; }
"""

# A click on an [n] marker scrolls its card into view (unfolding it) and flashes it.
JS = """
() => {
  document.addEventListener('click', (event) => {
    const link = event.target.closest && event.target.closest('a.cite, a[href^="#src-"], a[href^="#near-"]');
    if (!link) return;
    const id = (link.getAttribute('href') || '').slice(1);
    const card = document.getElementById(id);
    event.preventDefault();
    event.stopPropagation();
    if (!card) return;
    for (let d = card.closest('details'); d; d = d.parentElement && d.parentElement.closest('details')) d.open = true;
    card.scrollIntoView({behavior: 'smooth', block: 'center'});
    card.classList.remove('flash'); void card.offsetWidth; card.classList.add('flash');
    setTimeout(() => card.classList.remove('flash'), 1600);
  }, true);
}
"""


def parse_day(value: str, label: str) -> str:
    """'' or an ISO day for a date box; raises ValueError with what to type instead."""
    day = filter_day(value)
    if day is None:
        raise ValueError(f"“{value.strip()}” in the {label} box is not a date; "
                         "type it as YYYY-MM-DD, e.g. 2020-05-11.")
    return day


def undated(r: Retriever) -> int:
    return r.stats().undated


def example_questions(r: Retriever, reader: Reader | None) -> list[str]:
    return [q for q in EXAMPLE_QUESTIONS if not answer(r, q, reader=reader).abstained]


def example_text(evt: gr.SelectData) -> str:
    return evt.value["text"]


def _say(history: list[dict], text: str) -> list[dict]:
    return history + [{"role": "assistant", "content": text}]


def respond(live: LiveIndex, message: str, history: list[dict], turns: list[Turn], sources: list[str] | None,
            since: str, until: str):
    """Answer message, yielding (question box, chat, turns, sources panel, Markdown export) as the
    answer's sentences are composed; gr.skip() leaves an output as it is (the page takes the first
    three as they come, the panel and the export from the turns at the end: see build_ui). The chat
    keeps the last KEEP_MESSAGES messages; a question over MAX_QUESTION_CHARS gets a message, not a search."""
    question = " ".join((message or "")[:4 * MAX_QUESTION_CHARS].split())
    if not question:
        gr.Info("Type a question about the articles first.")
        yield "", history, turns, gr.skip(), gr.skip()
        return
    history = (history + [{"role": "user", "content": question_markdown(question)}])[-KEEP_MESSAGES + 1:]
    if len(message) > MAX_QUESTION_CHARS:
        yield message[:MAX_QUESTION_CHARS], _say(history, (
            f"*That question is {len(message):,} characters long; questions can be up to "
            f"{MAX_QUESTION_CHARS:,}. Ask about one thing at a time.*")), turns, gr.skip(), gr.skip()
        return
    try:
        since, until = parse_day(since, "From"), parse_day(until, "To")
        if since and until and since > until:
            raise ValueError(f"The From date {since} is after the To date {until}; swap them.")
    except ValueError as e:
        yield "", _say(history, f"*{escape_md(str(e))}*"), turns, gr.skip(), gr.skip()
        return
    yield "", _say(history, SEARCHING), turns, gr.skip(), gr.skip()
    retriever = live.retriever  # one index for the whole answer, even if an upload swaps it meanwhile
    reading = read_question(question, [t.reading for t in turns])
    try:
        ans = answer(retriever, reading.query, reader=live.reader, context=reading.context, sources=sources or None,
                     since=since or None, until=until or None)
    except Exception:  # the chat must say something; the traceback goes to the log
        log.exception("answering %r failed", reading.query)
        yield "", _say(history, "*Something went wrong while searching; the error was logged. Please try "
                                "again.*"), turns, gr.skip(), gr.skip()
        return
    also = also_answering(ans)
    shown = [c.passage for c in ans.citations] + list(also[:MAX_ALSO]) or [h.passage for h in ans.hits[:3]]
    articles = {p.article_id: retriever.article(p.article_id) for p in shown}
    turn = Turn(turns[-1].number + 1 if turns else 1, reading, ans, corroborate(ans),
                tuple(a for a in articles.values() if a), scope_words(sources or [], since, until), also)
    for parts in range(1, len(turn.agreements)):  # the sentences as they are composed
        yield "", _say(history, answer_markdown(turn, parts)), turns, gr.skip(), gr.skip()
    turns = (turns + [turn])[-KEEP_TURNS:]
    yield "", _say(history, answer_markdown(turn)), turns, sources_html(turns), export_markdown(turn)


def upload_report(results: list[Added]) -> str:
    lines = []
    for a in results:
        name = escape_md(a.name)
        if a.accepted:
            n = len(a.articles)
            lines.append(f"- **Added {name}**: {n} article{'s' if n != 1 else ''}, answerable now.")
        else:
            lines.append(f"- **Rejected {name}**; nothing was changed.")
        lines += [f"  - {escape_md(hide_paths(m))}" for m in a.messages[:8]]
        if len(a.messages) > 8:
            lines.append(f"  - … and {len(a.messages) - 8} more problems")
    return "\n".join(lines)


@dataclass(frozen=True)
class View:
    """What the page shows about the index it is served from."""
    header: str  # HTML
    sources: tuple[str, ...]  # outlets for the filter
    examples: tuple[str, ...]  # example questions this index answers
    articles: int


_views: "weakref.WeakKeyDictionary[Retriever, View]" = weakref.WeakKeyDictionary()


def view(r: Retriever, reader: Reader | None = None) -> View:
    """The View of r, computed once per loaded index (the examples take a few searches)."""
    if r not in _views:
        stats = r.stats()
        _views[r] = View(header_html(stats, undated(r), reader is not None), stats.sources,
                         tuple(example_questions(r, reader)), stats.articles)
    return _views[r]


def header(live: LiveIndex) -> str:
    return view(live.retriever, live.reader).header


def source_choices(live: LiveIndex) -> dict:
    names = list(view(live.retriever, live.reader).sources)
    return gr.update(choices=names, interactive=bool(names),
                     info="Outlets to search" if names else "The articles name no outlets")


def served(live: LiveIndex) -> int:
    """Which index the server answers from now (changes when a new generation is loaded)."""
    return id(live.retriever)


def refresh(live: LiveIndex):
    """(header, outlets, chat examples) for the index served now."""
    v = view(live.retriever, live.reader)
    return v.header, source_choices(live), gr.update(examples=[{"text": q} for q in v.examples] or None,
                                                     placeholder=placeholder(v.articles))


def placeholder(articles: int) -> str:
    """What the empty chat says (it follows uploads and `qa index`, as the header does)."""
    return (f"Ask about the {articles:,} article{'' if articles == 1 else 's'} in the archive. "
            "Answers are sentences quoted from them, each with its source.")


def sources_panel(turns: list[Turn]) -> tuple[str, str]:
    """(sources panel, Markdown export of the last answer) for a conversation's turns."""
    return sources_html(turns), export_markdown(turns[-1]) if turns else ""


def build_ui(live: LiveIndex) -> gr.Blocks:
    def on_ask(message, history, turns, sources, since, until):
        # Only plain values stream out: in Gradio 6.31 every gr.skip()/gr.update() output makes a new
        # component for the session, and each kept its output alive (measured: ~150 KB per question).
        for box_value, chat_value, turns_value, _, _ in respond(live, message, history, turns, sources, since, until):
            yield box_value, chat_value, turns_value

    def on_upload(files: list[str] | None):
        if not files:
            return gr.skip(), gr.skip(), gr.skip()
        results = live.add_files([(Path(f).name, Path(f)) for f in files])
        return upload_report(results), header(live), source_choices(live)

    def on_refresh():
        return refresh(live)

    first = view(live.retriever, live.reader)
    with gr.Blocks(title="Ask the news archive", analytics_enabled=False, delete_cache=(3600, 86400)) as ui:
        turns = gr.State([])
        shown = gr.State(None)  # which index the page shows (served()); when it changes, the page follows
        gr.Markdown("## Ask the news archive\nEvery answer is quoted from the articles, with its sources.")
        stats = gr.HTML(header(live), elem_id="archive-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chat = gr.Chatbot(
                    label="Answers", height=540, elem_id="answers", latex_delimiters=[], allow_tags=False,
                    buttons=[], feedback_options=None, sanitize_html=True,
                    examples=[{"text": q} for q in first.examples] or None,
                    placeholder=placeholder(first.articles))
                with gr.Row():
                    box = gr.Textbox(placeholder="Ask a question and press Enter", show_label=False, scale=8,
                                     autofocus=True, elem_id="question", max_lines=4, max_length=MAX_QUESTION_CHARS)
                    ask = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="ask")
                with gr.Row():
                    names = first.sources
                    outlets = gr.Dropdown(list(names), value=[], multiselect=True, label="Sources",
                                          interactive=bool(names), elem_id="filter-sources",
                                          info="Outlets to search" if names else "The articles name no outlets")
                    since = gr.Textbox(label="From", placeholder="YYYY-MM-DD", elem_id="filter-since")
                    until = gr.Textbox(label="To", placeholder="YYYY-MM-DD", elem_id="filter-until")
                with gr.Row():
                    copy = gr.Button("Copy answer as Markdown", size="sm", elem_id="copy-md")
                    clear = gr.Button("New conversation", size="sm", elem_id="clear")
                with gr.Accordion("Last answer as Markdown", open=False):
                    md = gr.Textbox(show_label=False, lines=6, interactive=False, buttons=["copy"],
                                    elem_id="answer-md")
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                panel = gr.HTML(sources_html([]), elem_id="sources")
                with gr.Accordion("Add articles", open=False):
                    why_not = live.can_add()
                    gr.Markdown(escape_md(why_not) if why_not else
                                f"Upload {', '.join(SUPPORTED_SUFFIXES)} files: they are checked, saved to the "
                                "archive and indexed at once. A file with no readable article is rejected and "
                                "nothing already indexed changes.")
                    upload = gr.UploadButton("Upload articles", file_count="multiple", interactive=not why_not,
                                             file_types=list(SUPPORTED_SUFFIXES), elem_id="upload")
                    upload_status = gr.Markdown(elem_id="upload-status")

        outputs = [box, chat, turns]
        inputs = [box, chat, turns, outlets, since, until]
        box.submit(on_ask, inputs, outputs).then(sources_panel, [turns], [panel, md], api_visibility="private")
        ask.click(on_ask, inputs, outputs).then(sources_panel, [turns], [panel, md], api_visibility="private")
        chat.example_select(example_text, None, box).then(on_ask, inputs, outputs).then(
            sources_panel, [turns], [panel, md], api_visibility="private")
        fresh = (lambda: ([], [], sources_html([]), ""), None, [chat, turns, panel, md])
        clear.click(*fresh)
        chat.clear(*fresh)
        copy.click(None, [md], None, js="(text) => { if (text) navigator.clipboard.writeText(text); }")
        upload.upload(on_upload, [upload], [upload_status, stats, outlets])
        # A generation published by `qa index` or another page's upload reaches every open page: the
        # timer only sets `shown` (a plain value, cheap); the page is redrawn when that changes.
        ui.load(lambda: served(live), None, [shown], api_visibility="private")
        gr.Timer(REFRESH_EVERY).tick(lambda: served(live), None, [shown], api_visibility="private",
                                     show_progress="hidden")
        shown.change(on_refresh, None, [stats, outlets, chat], api_visibility="private", show_progress="hidden")
    return ui


def serve(index: str, corpus: str | None = None, host: str = "127.0.0.1", port: int = 7860,
          share: bool = False, auth: str | None = None, ray: str | None = None, actors: int | None = None) -> None:
    """Serve the chat on host:port (this machine only by default); share and auth are opt-in.
    ray: search the segments in Ray actors on that cluster (qa.cluster)."""
    from qa.sentences import load_splitter

    if auth and ":" not in auth:
        raise SystemExit("qa: --auth takes USER:PASSWORD")
    reader, why = open_reader()
    if why:
        log.warning(why)
    live = LiveIndex(Retriever.load(index, ray=ray, actors=actors), index, corpus, load_splitter(), reader=reader)
    live.remove_staged()
    login = LoginLimiter(*auth.split(":", 1)) if auth else None
    if share and not login:
        log.warning("--share without --auth: anyone with the link can read the archive and add articles")
    build_ui(live).queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, share=share, auth=login, css=CSS, js=JS,
        max_file_size=MAX_FILE_BYTES, footer_links=["gradio", "settings"], show_error=False)
