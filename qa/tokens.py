"""Keyword tokens: lowercase words, English stopwords removed, Snowball-stemmed."""
from __future__ import annotations

import re
from functools import lru_cache

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

_WORD = re.compile(r"\w+", re.UNICODE)
_THOUSANDS = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
STOPWORDS = frozenset(STOPWORDS_EN) | frozenset(
    "did do does done has have had what which who whom whose when where why how many much "
    "were was been being am i me my we our you your he him his she her its they them their "
    "than from about also can could would should may might".split()
)
_stemmer = Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer.stemWord(word)


def tokenize(text: str) -> list[str]:
    """Stemmed content words of text, in order ("380,000" stays one token)."""
    words = _WORD.findall(_THOUSANDS.sub("", text.lower()))
    return [_stem(w) for w in words if w not in STOPWORDS and w != "_"]
