"""Keyword tokens: lowercase words, British spellings and irregular verbs folded, stopwords removed, stemmed."""
from __future__ import annotations

import re
from functools import lru_cache

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

VERSION = "stopwords-en+irregular-verbs+snowball v4"  # recorded in the index manifest; bump when tokens change

_WORD = re.compile(r"(?:(?<!\w)[^\W\d_]\.){2,}|\w+", re.UNICODE)  # "u.s." is one word
_THOUSANDS = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
# British spellings folded to American ones, so "centres" meets "centers" (applied to both sides).
_BRITISH = ((re.compile(r"^(\w{3,})tre(s?)$"), r"\1ter\2"),
            (re.compile(r"^(\w{3,})our(s|ed|ing)?$"), r"\1or\2"),
            (re.compile(r"^(\w{3,})([iy])s(e|ed|es|ing|ation|ations)$"), r"\1\2z\3"))
STOPWORDS = frozenset(STOPWORDS_EN) | frozenset(
    "did do does done has have had what which who whom whose when where why how many much "
    "were was been being am i me my we our you your he him his she her its they them their "
    "than from about also can could would should may might up make made".split()
)
# Words that frame a question rather than name what it is about ("what is the *name* of",
# "on which *day*", "when did it *happen*"): answer sentences rarely repeat them.
QUESTION_FRAME_WORDS = (
    "name named type kind sort date day week month year time town city village country place part "
    "area number amount happen happened take took taken say said says describe described "
    "mean meant according")
# Irregular past forms the stemmer leaves apart from their verb ("began" / "begin"), and the nouns
# of the commonest casualty report ("500 deaths" answers "how many died").
_IRREGULAR = {form: verb for verb, forms in (
    ("arise", "arose arisen"), ("bear", "bore borne"), ("beat", "beaten"), ("become", "became"),
    ("begin", "began begun"), ("bite", "bit bitten"), ("blow", "blew blown"), ("break", "broke broken"),
    ("bring", "brought"), ("build", "built"), ("buy", "bought"), ("catch", "caught"), ("choose", "chose chosen"),
    ("come", "came"), ("deal", "dealt"), ("dig", "dug"), ("draw", "drew drawn"), ("drink", "drank drunk"),
    ("drive", "drove driven"), ("eat", "ate eaten"), ("fall", "fell fallen"), ("feel", "felt"),
    ("fight", "fought"), ("find", "found"), ("flee", "fled"), ("fly", "flew flown"), ("forbid", "forbade forbidden"),
    ("forget", "forgot forgotten"), ("freeze", "froze frozen"), ("get", "got gotten"), ("give", "gave given"),
    ("go", "went gone"), ("grow", "grew grown"), ("hang", "hung"), ("hide", "hid hidden"), ("hold", "held"),
    ("keep", "kept"), ("know", "knew known"), ("lead", "led"), ("leave", "left"), ("lend", "lent"),
    ("lose", "lost"), ("mean", "meant"), ("meet", "met"), ("overcome", "overcame"), ("pay", "paid"),
    ("ride", "rode ridden"), ("ring", "rang rung"), ("rise", "rose risen"), ("run", "ran"), ("say", "said"),
    ("see", "saw seen"), ("seek", "sought"), ("sell", "sold"), ("send", "sent"), ("shoot", "shot"),
    ("sing", "sang sung"), ("sink", "sank sunk"), ("sleep", "slept"), ("speak", "spoke spoken"),
    ("spend", "spent"), ("stand", "stood"), ("steal", "stole stolen"), ("stick", "stuck"), ("strike", "struck stricken"),
    ("swear", "swore sworn"), ("take", "took taken"), ("teach", "taught"), ("tear", "tore torn"), ("tell", "told"),
    ("think", "thought"), ("throw", "threw thrown"), ("understand", "understood"), ("wear", "wore worn"),
    ("win", "won"), ("withdraw", "withdrew withdrawn"), ("write", "wrote written"),
    ("die", "death deaths dead"),
) for form in forms.split()}
_stemmer = Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    word = _IRREGULAR.get(word, word)
    for pattern, replacement in _BRITISH:
        word = pattern.sub(replacement, word)
    return _stemmer.stemWord(word)


def tokenize(text: str) -> list[str]:
    """Stemmed content words of text, in order ("380,000" and "U.S." stay one token; lone letters go)."""
    out = []
    for w in _WORD.findall(_THOUSANDS.sub("", text.lower())):
        if "." in w:
            out.append(w.replace(".", ""))  # an acronym, kept even when it spells a stopword
        elif w not in STOPWORDS and (len(w) > 1 or w.isdigit()) and w != "_":
            out.append(_stem(w))
    return out


QUESTION_FRAME = frozenset(tokenize(QUESTION_FRAME_WORDS))
