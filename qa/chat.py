"""The Gradio chat: a question box, cited answers, and the citations under each answer."""
from __future__ import annotations

import html
import logging
import re

import gradio as gr

from qa.answer import Answer
from qa.retrieve import Retriever

log = logging.getLogger(__name__)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|>~-])")


def as_text(s: str) -> str:
    """Article text and questions shown literally: no HTML, no Markdown links or emphasis."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=False))


def render(ans: Answer) -> str:
    """Markdown for one answer: the answer, then each citation's source, date and sentence."""
    body = re.sub(r"\\\[(\d+)\\\]", r"**[\1]**", as_text(ans.text))
    lines = [body, *[f"*{as_text(n)}*" for n in ans.notes]]
    if ans.citations:
        lines.append("\n**Sources**")
        for c in ans.citations:
            p = c.passage
            meta = " · ".join(as_text(x) for x in (p.source or "source unknown", p.published or "date unknown"))
            lines.append(f"{c.n}. **{as_text(p.title or p.article_id)}** ({meta}), sentence {p.index + 1}: "
                         f"“{as_text(p.text)}”")
    elif ans.abstained and ans.hits:
        lines.append("\n**Nearest passages found (not an answer):**")
        for h in ans.hits[:3]:
            p = h.passage
            lines.append(f"- {as_text(p.title or p.article_id)} ({as_text(p.published or 'date unknown')}): "
                         f"“{as_text(p.text)}”")
    return "\n".join(lines)


def header(r: Retriever) -> str:
    s = r.stats()
    dates = f", {s.first_date} to {s.last_date}" if s.first_date else ""
    mode = s.mode + (f" — {as_text(s.mode_reason)}" if s.mode_reason else "")
    return f"**{s.articles} articles, {s.sentences} sentences{dates}.** Mode: {mode}"


def build_ui(retriever: Retriever) -> gr.Blocks:
    def respond(message: str, history: list[dict]):
        history = history + [{"role": "user", "content": as_text(message)}]
        ans = retriever.ask(message)
        return "", history + [{"role": "assistant", "content": render(ans)}]

    with gr.Blocks(title="News QA") as ui:
        gr.Markdown("# Ask the articles\n" + header(retriever))
        chat = gr.Chatbot(label="Answers with citations", height=520)
        box = gr.Textbox(placeholder="Ask a question about the articles and press Enter", show_label=False)
        box.submit(respond, [box, chat], [box, chat])
    return ui


def serve(index: str, corpus: str | None = None, host: str = "127.0.0.1", port: int = 7860,
          share: bool = False, auth: str | None = None) -> None:
    retriever = Retriever.load(index)
    credentials = tuple(auth.split(":", 1)) if auth else None
    build_ui(retriever).launch(server_name=host, server_port=port, share=share, auth=credentials)
