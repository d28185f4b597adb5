"""Split article text into paragraphs and sentences with stable ids and exact character offsets."""

from __future__ import annotations

import functools
import logging
import re
import sys
from dataclasses import dataclass

# Importing nltk imports scipy.stats (for collocation measures) and scikit-learn (for its classifier
# wrappers and a parser), which this project never uses: over a second of every command's start-up
# (scikit-learn alone 0.5 s). nltk falls back without them, so they are kept out while nltk loads.
_KEPT_OUT = [m for m in ("scipy.stats", "sklearn") if m not in sys.modules]
for _m in _KEPT_OUT:
    sys.modules[_m] = None  # an import of it raises ImportError
try:
    import nltk
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, load_punkt_params
finally:
    for _m in _KEPT_OUT:
        del sys.modules[_m]  # a later import (sentence-transformers) loads it

log = logging.getLogger(__name__)

# Bump when anything below changes where sentences break: the names recorded in index
# manifests change with it, so an index built with older splitting is detected as stale.
RULES_VERSION = 1
PARAMETERS_VERSION = 1

# Punkt's orthographic-context flags (nltk.tokenize.punkt._ORTHO_BEG_UC / _ORTHO_MID_LC).
ORTHO_BEG_UC = 1 << 1
ORTHO_MID_LC = 1 << 5

# Words ending in a period that do not end a sentence unless the next word is a known
# sentence starter ("in the U.S. The"); months without May, titles, company suffixes.
ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof gen gov sen rep lt col sgt capt cpt maj adm cmdr gens govt pres rev
    hon supt insp det atty brig st mt ft jr sr messrs mme mlle
    jan feb mar apr jun jul aug sep sept oct nov dec tue tues thu thur thurs fri
    etc vs v inc corp ltd co cos plc llc bros dept est approx ca cf al ave blvd rd
    fig figs vol vols pp ch nos ph.d
""".split())

# Capitalised, these words almost always start a sentence; ending up after an
# abbreviation, initial or ellipsis they make it a sentence break. No single letters
# ("J. A. Smith") and no words that follow "U.S." as titles or names (President, Army).
SENTENCE_STARTERS = frozenset("""
    the an this that these those there here it its he she they we you his her their our
    my your but and or so yet for if when while after before since although though
    because as at in on by with from of to into over under about during despite until
    unless once then meanwhile however also still now today yesterday earlier later
    instead some many most several few all both each every none one two three four five
    such other another more much what which who where why how whether only even just
    police officials authorities officers residents witnesses critics analysts experts
    investors shares prices sales troops rescuers voters lawmakers scientists researchers
    doctors teachers students workers people
""".split())

# A period that is part of a run of letter-dot pairs ("U.S.", "J.K.", "a.m.") is an
# abbreviation whatever the letters, so names and acronyms need not be listed.
DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# Punkt sees at most this many characters at once: nltk's regexes run under a wall-clock timeout
# (nltk.redos, 5 s), which a 4 MB paragraph exceeds on a busy machine. News paragraphs are under
# 5,000 characters, so only text that is no prose (a dump, a table) is cut; a piece takes ~10 ms.
MAX_PIECE = 20_000
_PIECE_ENDS = (re.compile(r"\n"), re.compile(r"[.!?][\"'”’)\]]*\s"), re.compile(r"\s"))
ELLIPSIS = re.compile(r"\.{2,}")
OPENING_QUOTE = re.compile(r"(?<!\S)[\"'“‘](?=\w)")
WORD_CHAR = re.compile(r"\w")
QUOTED_QUESTION = re.compile(r"[?!][\"'”’]$")
ATTRIBUTION = re.compile(
    r"(?:[A-Z][\w'’.-]*\s+){1,4}(?:said|says|asked|asks|added|adds|told|wrote|replied|shouted|warned)\b"
)


class _Abbreviations(frozenset):
    """An abbreviation set that also contains every dotted acronym."""

    def __contains__(self, word: object) -> bool:
        return super().__contains__(word) or (isinstance(word, str) and DOTTED.fullmatch(word) is not None)


@dataclass(frozen=True)
class Sentence:
    id: str          # f"{article_id}:{index}"
    article_id: str
    index: int       # 0-based position in the article
    paragraph: int   # 0-based; paragraphs are separated by blank lines
    start: int       # character offsets into the article text: text[start:end] == self.text
    end: int
    text: str


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph: text between blank lines, stripped, never empty."""
    spans, start = [], 0
    for cut in [*PARAGRAPH_BREAK.finditer(text), None]:
        stop = cut.start() if cut else len(text)
        span = _strip(text, start, stop)
        if span:
            spans.append(span)
        start = cut.end() if cut else stop
    return spans


def pieces(text: str, start: int, end: int, size: int = MAX_PIECE) -> list[tuple[int, int]]:
    """(start, end) of consecutive pieces of text[start:end], each at most size characters, that
    together cover it exactly. Cut at the last line break in the second half of a piece, else after
    the last sentence end, else at the last space, else (one giant word) at size."""
    out = []
    while end - start > size:
        cut = start + size
        for pattern in _PIECE_ENDS:
            found = [m.end() for m in pattern.finditer(text, start + size // 2, start + size)]
            if found:
                cut = found[-1]
                break
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _tokenizable(text: str) -> str:
    """The text Punkt sees: same length, every ellipsis ("...", "…") turned into one period
    and every opening quote before a capital turned into a space.

    An ellipsis then ends a sentence like a period does, and the lowercase rule in
    `Splitter.spans` joins the sentence back when the text goes on ("fight ... and win").
    Punkt cannot judge a capital behind a quote, so 'Acme Corp. "Prices rose."' would not
    break; without the quote it sees 'Prices', and `Splitter.spans` puts the quote back.
    """
    text = ELLIPSIS.sub(lambda m: " " * (len(m.group()) - 1) + ".", text)
    text = OPENING_QUOTE.sub(lambda m: " " if text[m.end()].isupper() else m.group(), text)
    return text.replace("\u2026", ".")


def _continues(previous: str, sentence: str) -> bool:
    """True when `sentence` is the rest of `previous` rather than a sentence of its own.

    A piece without any word (a stray "." or quote) is never a sentence of its own.
    English news sentences start with a capital or a digit, so a lowercase start means the
    period before it was an unknown abbreviation ("approx. five") or a translation artifact
    ("backed by aviation. from Moscow."); either way the words belong to the sentence before.
    The same goes for an attribution after a quoted question ('"Why?" Smith asked.').
    """
    first = WORD_CHAR.search(sentence)
    if first is None or first.group().islower() or WORD_CHAR.search(previous) is None:
        return True
    return QUOTED_QUESTION.search(previous) is not None and ATTRIBUTION.match(sentence) is not None


def bundled_parameters() -> PunktParameters:
    """Punkt parameters shipped with the project, independent of any corpus."""
    params = PunktParameters()
    params.abbrev_types = _Abbreviations(ABBREVIATIONS)
    # "No. 10", "no. 3": an abbreviation before a number only; "said no." ends a sentence.
    params.collocations = {("no", "##number##")}
    params.sent_starters = set(SENTENCE_STARTERS)
    for word in SENTENCE_STARTERS:
        params.add_ortho_context(word, ORTHO_BEG_UC | ORTHO_MID_LC)
    return params


@dataclass(frozen=True)
class Splitter:
    """Sentence splitter: Punkt inside each paragraph, then the project's rules."""

    name: str
    tokenizer: PunktSentenceTokenizer

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, paragraph) of each sentence, stripped and never crossing a blank line.

        A paragraph longer than MAX_PIECE is split in pieces first (see `pieces`); no sentence
        crosses a piece, so none is longer than MAX_PIECE either.
        """
        spans = []
        for paragraph, (para_start, para_end) in enumerate(paragraph_spans(text)):
            for p_start, p_end in pieces(text, para_start, para_end):
                spans.extend((start, end, paragraph) for start, end in self._piece_spans(text, p_start, p_end))
        return spans

    def _piece_spans(self, text: str, p_start: int, p_end: int) -> list[tuple[int, int]]:
        merged: list[tuple[int, int]] = []
        chunk = _tokenizable(text[p_start:p_end])
        for start, end in self.tokenizer.span_tokenize(chunk):
            while start > 0 and chunk[start - 1] == " " and not text[p_start + start - 1].isspace():
                start -= 1  # an opening quote hidden from Punkt
            span = _strip(text, p_start + start, p_start + end)
            if span is None:
                continue
            if merged and _continues(text[slice(*merged[-1])], text[span[0] : span[1]]):
                merged[-1] = (merged[-1][0], span[1])
            else:
                merged.append(span)
        return merged

    def split(self, article_id: str, text: str) -> list[Sentence]:
        """The sentences of one article, ids f"{article_id}:{index}" in reading order."""
        return [
            Sentence(
                id=f"{article_id}:{index}",
                article_id=article_id,
                index=index,
                paragraph=paragraph,
                start=start,
                end=end,
                text=text[start:end],
            )
            for index, (start, end, paragraph) in enumerate(self.spans(text))
        ]


@functools.lru_cache(maxsize=None)
def load_splitter(prefer_nltk_data: bool = True) -> Splitter:
    """nltk's punkt_tab English model when installed (and preferred), else the bundled parameters.

    Never raises for missing data and never downloads: the fallback needs nothing but nltk.
    """
    rules = f"rules v{RULES_VERSION}, nltk {nltk.__version__}"
    if prefer_nltk_data:
        try:
            params = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/"))
        except (LookupError, OSError, ValueError) as missing:
            log.info("sentence splitting: bundled parameters (no usable nltk punkt_tab data: %s)",
                     type(missing).__name__)
        else:
            params.abbrev_types = _Abbreviations(params.abbrev_types)
            log.info("sentence splitting: nltk punkt_tab/english data")
            name = f"punkt_tab/english (nltk data; {rules})"
            return Splitter(name=name, tokenizer=PunktSentenceTokenizer(params))
    else:
        log.info("sentence splitting: bundled parameters (nltk data not wanted)")
    name = f"punkt (bundled parameters v{PARAMETERS_VERSION}; {rules})"
    return Splitter(name=name, tokenizer=PunktSentenceTokenizer(bundled_parameters()))
