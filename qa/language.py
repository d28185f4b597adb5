"""What is English: the word lists of the keyword tokens and the answer step, in one place.

Another language is one more module like this one (with its own Snowball stemmer name).
"""
from __future__ import annotations

STEMMER = "english"  # PyStemmer's Snowball algorithm

# Keyword tokens leave these out: Lucene's English stop set (as bm25s ships it: bm25s.stopwords.STOPWORDS_EN),
# then question words and auxiliaries, which carry no topic.
STOPWORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with "
    "did do does done has have had what which who whom whose when where why how many much "
    "were was been being am i me my we our you your he him his she her its they them their "
    "than from about also can could would should may might up make made")

# Words that frame a question rather than name what it is about ("what is the *name* of",
# "on which *day*", "when did it *happen*"): answer sentences rarely repeat them.
QUESTION_FRAME_WORDS = (
    "name named type kind sort date day week month year time town city village country place part "
    "area number amount happen happened take took taken say said says describe described "
    "mean meant according")

# Irregular past forms the stemmer leaves apart from their verb ("began" / "begin"), and the nouns
# of the commonest casualty report ("500 deaths" answers "how many died").
IRREGULAR_VERBS = (
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
)

# What a question asks for, by its form (regular-expression pieces used by qa.answer).
ASKS_NUMBER = r"\bhow (?:many|much)\b|\bwhat (?:number|share|percentage|proportion)\b"
ASKS_DATE = r"^\W*when\b|\b(?:what|which) (?:year|date|day|month)\b|\bsince when\b"
ENTITY_NOUNS = (r"(?:organi[sz]ations?|groups?|agency|agencies|company|companies|party|parties|country|"
                r"countries|government|army|forces?|ministers?|officials?|leaders?|director|person|man|woman|"
                r"city|cities|town|province|provinces|region)")
ASKS_NAME_START = r"^\W*(?:who|whom|whose)\b"
NAME_OF = r"\bname of\b"
NUMBER_WORDS = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
                r"dozens?|hundreds?|thousands?|millions?|billions?|half|third|quarter")
MONTHS_AND_DAYS = (r"jan(?:uary)?|feb(?:ruary)?|march|april|may|june|july|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|"
                   r"nov(?:ember)?|dec(?:ember)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday")
RELATIVE_DATES = r"today|yesterday|last (?:year|month|week)"
# The noun a number or a name is asked for: "how many *hospitals*", "whose *forces*", "the name of the *school*".
FOCUS = r"\bhow (?:many|much) ([\w-]+)|^\W*whose ([\w-]+)|\bname of (?:the |a |an |its |their )?([\w-]+)"
# "What is Heba Morayef's *nationality*?": a property of someone, which the answer must name.
PROPERTY = r"^\W*what (?:is|was|are|were) (?:[\w-]+ ){0,3}[\w-]+['’]s ([\w-]+)\W*$"
# "How many attacks did Amnesty document, and how many used barrel bombs?" is two questions.
SECOND_QUESTION = r",?\s+and\s+(?=(?:how|what|when|where|who|whom|whose|which|why)\b)"
