"""Keyword tokens: lowercase words, British spellings and irregular verbs folded, stopwords removed, stemmed."""
from __future__ import annotations

import re

import Stemmer

from qa import language

VERSION = "stopwords-en+irregular-verbs+snowball v4"  # recorded in the index manifest; bump when tokens change

_WORD = re.compile(r"(?:(?<!\w)[^\W\d_]\.){2,}|\w+", re.UNICODE)  # "u.s." is one word
_THOUSANDS = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
# British spellings folded to American ones, so "centres" meets "centers" (applied to both sides).
_BRITISH = ((re.compile(r"^(\w{3,})tre(s?)$"), r"\1ter\2"),
            (re.compile(r"^(\w{3,})our(s|ed|ing)?$"), r"\1or\2"),
            (re.compile(r"^(\w{3,})([iy])s(e|ed|es|ing|ation|ations)$"), r"\1\2z\3"))
STOPWORDS = frozenset(language.STOPWORDS.split())
_IRREGULAR = {form: verb for verb, forms in language.IRREGULAR_VERBS for form in forms.split()}
_stemmer = Stemmer.Stemmer(language.STEMMER)


_WORDS: dict[str, str] = {}  # word -> its token ('' for none): a word is looked at once
_MAX_WORDS = 200_000  # then the cache starts afresh (an archive's names and numbers never end)


def _token(word: str) -> str:
    if "." in word:
        return word.replace(".", "")  # an acronym, kept even when it spells a stopword
    if word in STOPWORDS or (len(word) < 2 and not word.isdigit()) or word == "_":
        return ""
    word = _IRREGULAR.get(word, word)
    for pattern, replacement in _BRITISH:
        word = pattern.sub(replacement, word)
    return _stemmer.stemWord(word)


def tokenize(text: str) -> list[str]:
    """Stemmed content words of text, in order ("380,000" and "U.S." stay one token; lone letters go)."""
    out, cache = [], _WORDS
    for w in _WORD.findall(_THOUSANDS.sub("", text.lower())):
        t = cache.get(w)
        if t is None:
            if len(cache) >= _MAX_WORDS:
                cache.clear()
            t = cache[w] = _token(w)
        if t:
            out.append(t)
    return out


QUESTION_FRAME = frozenset(tokenize(language.QUESTION_FRAME_WORDS))
