"""Follow-up questions: read a question that leans on the conversation together with the one before it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from qa.tokens import tokenize

# Words that point back at something said earlier ("When did *that* happen?").
REFERRING = frozenset(
    "that this it its those these they them their there then he him his she her same such former latter".split())
# "that" after one of these points back ("did that", "about that"); after a noun it is a relative
# pronoun ("the hospital that was bombed"). "there" after a form of "be" is existential ("were there").
_THAT_AFTER = frozenset("did does do is was are were about of in at on for from after before with to by "
                        "cause caused when where why how".split())
_BE = frozenset("is are was were be been being".split())
# Openings of an elliptical follow-up ("And in Jericho?", "What about the hospital?").
ELLIPTICAL = re.compile(r"^\s*(?:and|but|also|what about|how about|and what about)\b", re.I)
# Verbs that say nothing about the topic: searching for them only dilutes the earlier question's words.
EMPTY_VERBS = frozenset("happen happened happens happening occur occurred occurs take took taken place".split())
_EMPTY_STEMS = frozenset(t for v in EMPTY_VERBS for t in tokenize(v))
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
MAX_CONTEXT = 3  # earlier questions a chain of follow-ups carries along


@dataclass(frozen=True)
class Reading:
    """How a question was understood: what is searched for, and the earlier question it builds on."""
    question: str  # as asked
    query: str  # what is answered: the question, or a follow-up's own words (less empty verbs)
    follows: tuple[str, ...] = ()  # earlier questions it was read with, latest first; () when it stands alone

    @property
    def context(self) -> str:
        """What is searched for along with the query: the earlier questions' words (never split into
        questions of their own: qa.answer.answer's context)."""
        return " ".join(self.follows)


def is_follow_up(question: str) -> bool:
    """True when the question refers back ("that", "there", "And ...?") or names nothing to search for."""
    words = [w.lower() for w in _WORD.findall(question)]
    if not words:
        return False
    content = [t for t in tokenize(question) if t not in _EMPTY_STEMS]
    return any(_refers(words, i) for i in range(len(words))) or bool(ELLIPTICAL.match(question)) or not content


def _refers(words: list[str], i: int) -> bool:
    w, before = words[i], words[i - 1] if i else ""
    if w == "that":
        return not before or before in _THAT_AFTER
    if w == "there":
        return before not in _BE
    return w in REFERRING


def read_question(question: str, history: Sequence[Reading] = ()) -> Reading:
    """Read question in the light of the conversation so far (oldest first).

    A follow-up is searched with its own words (less empty verbs like "happen") plus the words of
    the questions it follows (its context): "When did that happen?" after "Which school was hit
    with cluster munitions?" searches for the school attack. A chain of follow-ups keeps its topic
    (up to MAX_CONTEXT questions back); one stand-alone question changes the subject.
    """
    question = " ".join(question.split())
    if not history or not is_follow_up(question):
        return Reading(question, question)
    last = history[-1]
    own = " ".join(w for w in _WORD.findall(question) if w.lower() not in EMPTY_VERBS)
    follows = (last.question, *last.follows)[:MAX_CONTEXT]
    return Reading(question, own, follows=follows)
