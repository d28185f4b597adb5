"""What the chat shows, as strings: answer Markdown, source cards (HTML), the header, a Markdown export.

Everything from articles and users is escaped here, so markup in an article or a question shows as
text. No Gradio: the functions are plain and tested on their own.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import PurePath

from qa.answer import Answer
from qa.articles import Article
from qa.conversation import Reading
from qa.corroborate import Agreement
from qa.embed import PRETRAINED, SELF_TRAINED
from qa.retrieve import Passage, Stats
from qa.sentences import paragraph_spans

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~.:@$=-])")
_ABS_PATH = re.compile(r"(?<![\w.~-])(?:/[\w.@+-]+){2,}/?")
MAX_SHOWN_QUESTION = 500  # characters of a question repeated in the chat
MAX_ARTICLE_CHARS = 200_000  # of a whole article in its source card
SEARCHING = "*Searching the articles…*"
MAX_ALSO = 5  # articles counted as answering but not quoted that an answer lists (and gives cards)


@dataclass(frozen=True)
class Turn:
    """One exchange: the question as read, its answer and what the answer's cards need."""
    number: int  # 1-based, names the cards: #src-{number}-{n}
    reading: Reading
    answer: Answer
    agreements: tuple[Agreement, ...]
    articles: tuple[Article, ...]  # every article cited or shown as a nearest passage
    scope: str  # the filters in words, '' for the whole archive
    # passages of the articles "Reported by 2 of 3" counts but the answer does not cite
    # (qa.corroborate.also_answering): listed under the answer, with cards
    also: tuple[Passage, ...] = ()


def escape_md(text: str) -> str:
    """Text that Markdown and HTML show literally: no tags, links, emphasis, lists or autolinks."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def hide_paths(text: str) -> str:
    """Absolute server paths shortened to their last part (model paths, error messages)."""
    return _ABS_PATH.sub(lambda m: PurePath(m[0]).name or "/", text)


def question_markdown(question: str) -> str:
    shown = question[:MAX_SHOWN_QUESTION]
    more = len(question) - len(shown)
    return escape_md(shown) + (f" *… ({more:,} more characters)*" if more > 0 else "")


def _marker(turn: int, n: int) -> str:
    return f'<a class="cite" href="#src-{turn}-{n}">[{n}]</a>'


def _framing(text: str) -> str:
    """Words the assistant adds around the quoted sentences, set apart from them."""
    return f"*{text}*"


def answer_markdown(turn: Turn, parts: int | None = None) -> str:
    """The chat message for turn; parts: how many answer sentences to show (streaming), None for all."""
    ans, lines = turn.answer, []
    how = []
    if turn.reading.follows:
        topic = turn.reading.follows[-1]  # of a chain of follow-ups, the question that set the topic
        how.append(f"Read with your earlier question “{escape_md(topic)}”.")
    if turn.scope:
        how.append(f"Searched {escape_md(turn.scope)}.")
    if how:
        lines.append(_framing(" ".join(how)))
    lines += [_framing(escape_md(n)) for n in ans.notes]
    if ans.abstained:
        return "\n\n".join([*lines, _abstention(turn)])
    shown = turn.agreements if parts is None else turn.agreements[:parts]
    for g in shown:
        marks = "".join(_marker(turn.number, c.n) for c in g.citations)
        block = [f"{escape_md(g.text)} {marks}", _framing(f"{reported(g)}.")]
        for d in g.differences:
            readings = " / ".join(f"“{escape_md(' '.join(r.words))}” "
                                  + "".join(_marker(turn.number, n) for n in r.citations) for r in d.readings)
            block.append(f"*The articles differ here:* {readings} *(all readings shown)*")
        lines.append("  \n".join(block))
    if turn.also and len(shown) == len(turn.agreements):
        lines.append(_also(turn))
    return "\n\n".join(lines)


def _also(turn: Turn) -> str:
    """The articles counted as answering that the answer does not quote: what each says, as a list."""
    articles, shown = {a.id: a for a in turn.articles}, turn.also[:MAX_ALSO]
    out = [_framing("Also counted as answering, in articles not quoted above:")]
    out += [f"{i}. “{escape_md(p.text)}” — {escape_md(_label(p, articles.get(p.article_id)))} "
            f'<a class="cite" href="#also-{turn.number}-{i}">[see]</a>' for i, p in enumerate(shown, start=1)]
    if len(turn.also) > len(shown):
        out.append(_framing(f"… and {len(turn.also) - len(shown)} more."))
    return "\n".join(out)


def scope_words(sources: list[str], since: str, until: str) -> str:
    """The filters in words ('' for none): what "Searched ..." says before an answer."""
    parts = []
    if sources:
        parts.append("only " + ", ".join(sources))
    if since or until:
        parts.append(f"articles dated {since or 'any time'} to {until or 'now'} (undated ones left out)")
    return "; ".join(parts)


def reported(g: Agreement) -> str:
    n = g.matching_articles
    return f"Reported by {g.reported_by} of {n} " + ("article that answers" if n == 1 else "articles that answer") + \
        " the question"


def _abstention(turn: Turn) -> str:
    ans = turn.answer
    out = [f"**{escape_md(ans.text)}**"]
    articles = {a.id: a for a in turn.articles}
    if ans.question and ans.hits:
        out.append(_framing("Nearest passages found — not an answer:"))
        for i, h in enumerate(ans.hits[:3], start=1):
            out.append(f"{i}. “{escape_md(h.text)}” — {escape_md(_label(h.passage, articles.get(h.article_id)))} "
                       f'<a class="cite" href="#near-{turn.number}-{i}">[see]</a>')
    elif ans.question:
        out.append(_framing("No passage in the archive matched the question."))
    return "\n\n".join(out)


def _label(p: Passage, article: Article | None = None) -> str:
    return ", ".join(x for x in (_title(article, p), p.source, _day(p.published)) if x)


def _day(published: str) -> str:
    """The day of a date the loader read (stored as ISO, maybe with a time); a date it could not read
    is kept as given ("last Tuesday"), so it is shown whole, not cut to ten characters."""
    return published[:10] if re.match(r"\d{4}-\d{2}-\d{2}", published) else published


def _title(article: Article | None, p: Passage) -> str:
    if p.title:
        return p.title
    if article is None:
        return p.article_id
    words = article.text.split()
    return "Untitled: " + " ".join(words[:12]) + (" …" if len(words) > 12 else "")


def _marked(text: str, start: int, end: int, words: tuple[str, ...] = ()) -> str:
    """text[start:end] wrapped in <mark>, with the differing words in bold; all escaped."""
    inner = html.escape(text[start:end])
    if words:  # one pass: a word named by several differences is marked once, and no tag is searched
        alts = "|".join(re.escape(html.escape(w)) for w in sorted(set(words), key=len, reverse=True))
        inner = re.sub(rf"(?<!\w)(?:{alts})(?!\w)", lambda m: f'<b class="differs">{m[0]}</b>', inner)
    return f"{html.escape(text[:start])}<mark>{inner}</mark>{html.escape(text[end:])}"


def _card(card_id: str, badge: str, p: Passage, article: Article | None, differs: tuple[str, ...] = ()) -> str:
    e = html.escape
    meta = [p.source or "outlet not given", _day(p.published) or "undated", f"sentence {p.index + 1}",
            f"article {p.article_id}"]
    if article is not None and article.text[p.start:p.end] == p.text:
        spans = paragraph_spans(article.text)
        ps, pe = spans[p.paragraph] if p.paragraph < len(spans) else (p.start, p.end)
        para = f"<p class='context'>{_marked(article.text[ps:pe], p.start - ps, p.end - ps, differs)}</p>"
        if (ps, pe) == (p.start, p.end) and p.paragraph < len(spans):
            # A one-sentence paragraph is no context: show the paragraphs around it too, dimmed.
            near = [spans[i] for i in (p.paragraph - 1, p.paragraph + 1) if 0 <= i < len(spans)]
            para = "".join(para if span == (ps, pe) else f"<p class='around'>{e(article.text[span[0]:span[1]])}</p>"
                           for span in sorted([*near, (ps, pe)]))
        body = article.text[:MAX_ARTICLE_CHARS]
        cut = len(article.text) - len(body)
        paras = []
        for s, t in paragraph_spans(body):
            inside = s <= p.start and p.end <= t
            paras.append(f"<p>{_marked(body[s:t], p.start - s, p.end - s) if inside else e(body[s:t])}</p>")
        whole = "".join(paras) + (f"<p><i>… {cut:,} more characters not shown.</i></p>" if cut > 0 else "")
        full = f"<details><summary>Whole article</summary><div class='article'>{whole}</div></details>"
    else:
        para = f"<p class='context'><mark>{e(p.text)}</mark></p>"
        full = "<p><i>The article is no longer in the archive.</i></p>"
    url = f"<div class='url'>{e(p.url)}</div>" if p.url else ""
    return (f"<div class='card' id='{e(card_id)}'><div class='card-head'><span class='badge'>{e(badge)}</span> "
            f"<span class='title'>{e(_title(article, p))}</span></div>"
            f"<div class='meta'>{' · '.join(e(m) for m in meta)}</div>{url}"
            f"{para}{full}</div>")


def turn_html(turn: Turn) -> str:
    """The source cards of one turn: every citation, or the nearest passages of an abstention."""
    articles = {a.id: a for a in turn.articles}
    ans, cards = turn.answer, []
    if ans.citations:
        differs: dict[int, list[str]] = {}
        for g in turn.agreements:
            for d in g.differences:
                for r in d.readings:
                    for n in r.citations:
                        differs.setdefault(n, []).extend(r.words)
        for c in ans.citations:
            p = c.passage
            cards.append(_card(f"src-{turn.number}-{c.n}", f"[{c.n}]", p, articles.get(p.article_id),
                               tuple(differs.get(c.n, ()))))
        if turn.also:
            cards.append("<p class='not-answer'>Also counted as answering — <b>not quoted</b>.</p>")
            cards += [_card(f"also-{turn.number}-{i}", "not quoted", p, articles.get(p.article_id))
                      for i, p in enumerate(turn.also[:MAX_ALSO], start=1)]
    elif ans.hits:
        cards.append("<p class='not-answer'>Nearest passages found — <b>not an answer</b>.</p>")
        for i, h in enumerate(ans.hits[:3], start=1):
            cards.append(_card(f"near-{turn.number}-{i}", "not an answer", h.passage, articles.get(h.article_id)))
    else:
        cards.append("<p class='not-answer'>No passage matched.</p>")
    return (f"<section class='turn' id='turn-{turn.number}'><div class='turn-q'>Sources for "
            f"“{html.escape(turn.reading.question[:MAX_SHOWN_QUESTION])}”</div>{''.join(cards)}</section>")


def sources_html(turns: list[Turn], keep: int = 20) -> str:
    """Cards for the latest turn on top, earlier turns folded below it."""
    if not turns:
        return ("<div class='sources-empty'>Sources appear here: for every [n] in an answer, the article's "
                "title, outlet and date, and the cited sentence highlighted in its paragraph.</div>")
    latest, *older = reversed(turns[-keep:])
    folded = "".join(f"<details class='older'><summary>Earlier: “{html.escape(t.reading.question[:120])}”"
                     f"</summary>{turn_html(t)}</details>" for t in older)
    return turn_html(latest) + folded


def _model_name(name: str) -> str:
    return PurePath(name).name if "/" in name and PurePath(name).is_absolute() else name


def header_html(stats: Stats, undated: int, reader: bool = False) -> str:
    """One plain line: counts, dates, outlets, what searches and what answers."""
    e = html.escape
    dates = f"{stats.first_date} to {stats.last_date}" if stats.first_date else "no dates"
    if undated:
        dates += f" ({undated} undated)"
    if stats.mode.kind == PRETRAINED:
        mode = f"search: keywords + {_model_name(stats.mode.model or '')}"
    elif stats.mode.kind == SELF_TRAINED:
        mode = "search: keywords + a model self-trained on these articles"
    else:
        mode = "search: keywords only" + (f" ({stats.mode_reason.removeprefix('keyword-only: ')})"
                                          if stats.mode_reason else "")
    mode += "; answers: the reader" if reader else "; answers: rules (no reader)"
    items = [_count(stats.articles, "article", "<b>{:,}</b>"), _count(stats.sentences, "sentence", "<b>{:,}</b>"),
             e(dates), _count(len(stats.sources), "outlet") if stats.sources else "no outlet names",
             e(hide_paths(mode))]
    return "<div class='stats'>" + " · ".join(items) + "</div>"


def _count(n: int, noun: str, number: str = "{:,}") -> str:
    """"1 outlet", "2 outlets"."""
    return f"{number.format(n)} {noun}{'' if n == 1 else 's'}"


def _md_plain(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def export_markdown(turn: Turn) -> str:
    """The answer with its citations as Markdown, for pasting into a fact-check."""
    ans, articles = turn.answer, {a.id: a for a in turn.articles}
    lines = [f"**Q:** {_md_plain(turn.reading.question)}", ""]
    if turn.reading.follows:
        lines[1:1] = [f"_Read with the earlier question “{_md_plain(turn.reading.follows[-1])}”._"]
    if ans.abstained:
        lines.append(f"**A:** {ans.text}")
        if ans.hits:
            lines += ["", "Nearest passages (not an answer):"]
            lines += [f"- “{_md_plain(h.text)}” ({_md_plain(_label(h.passage, articles.get(h.article_id)))})"
                      for h in ans.hits[:3]]
        return "\n".join(lines)
    for g in turn.agreements:
        lines.append(f"{_md_plain(g.text)} " + "".join(f"[{c.n}]" for c in g.citations))
        lines.append(f"_{reported(g)}._")
        for d in g.differences:
            lines.append("_The articles differ: " + " / ".join(
                f"“{_md_plain(' '.join(r.words))}” " + "".join(f"[{n}]" for n in r.citations)
                for r in d.readings) + "_")
        lines.append("")
    for c in ans.citations:
        lines.append(f"[{c.n}] {_source_md(c.passage, articles)}")
    if turn.also:
        lines += ["", "_Also counted as answering, not quoted:_"]
        lines += [f"- {_source_md(p, articles)}" for p in turn.also]
    return "\n".join(lines).rstrip()


def _source_md(p: Passage, articles: dict[str, Article]) -> str:
    where = ", ".join(x for x in (p.source or "outlet not given", _day(p.published) or "undated") if x)
    link = f" <{p.url}>" if re.fullmatch(r"https?://[^\s<>]+", p.url) else ""
    return (f"{_md_plain(_title(articles.get(p.article_id), p))} — {_md_plain(where)}, "
            f"article {_md_plain(p.article_id)}, sentence {p.index + 1}: “{_md_plain(p.text)}”{link}")
