"""Question analysis: what a question asks for, read off its words alone (no passage, no model).

- the kind of answer (`question_type`): an amount of money, a number, a date, a person, an organization, a
  place, or "other";
- the thing a "how many …" question counts (`count_head`, `count_unit`);
- the attribute or role it asks about (`focus_terms`: "the annual membership *fee*", "the *treasurer*");
- its key terms, the names (capitalized words) and the numbers it mentions (`analyze_question`);
- with earlier turns of a chat, the query to retrieve with (`retrieval_query`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexer.text import STOPWORDS, stem, token_spans

_NUMBER_Q = re.compile(r"\b(how (many|much|large|big|long|often)|what (percentage|percent|share|number|"
                       r"proportion|fraction)|by how much)\b", re.I)
# An amount of money: "how much does X pay", "what was the total revenue", "what is the price of …"
_MONEY_WORDS = (r"price|prices|cost|costs|fee|fees|revenue|revenues|budget|budgets|salary|salaries|income|gdp|"
                r"profit|profits|turnover|spending|expenses")
_MONEY_Q = re.compile(r"\bhow much\b.*\b(pay|pays|paid|cost|costs|charge|charges|spend|spends|spent|earn|earns|"
                      r"earned|raise|raised|donate|donated|invest|invested)\b|\b(what|how much) (is|was|are|were|"
                      r"does|did) (the |its |their |a |an )?([\w'’-]+ ){0,3}(" + _MONEY_WORDS + r")\b", re.I)
_DATE_Q = re.compile(r"\b(when|what (year|date|month|day)|which (year|month|day))\b", re.I)
_WHO_Q = re.compile(r"\b(who|whom|whose)\b", re.I)
# "which (Chinese) company…", not "what was the Foundation's goal" (the words between are not verbs or articles)
_ORG_Q = re.compile(r"\b(which|what) ((?!(?:is|was|are|were|does|did|do|has|have|had|will|the|a|an)\b)\w+ ){0,2}"
                    r"(company|companies|organi[sz]ations?|firms?|groups?|members?|"
                    r"projects?|foundations?|communities|university|universities)\b", re.I)
_WHERE_Q = re.compile(r"\b(where|which (city|country|countries|region|regions|university))\b", re.I)
NUM_WORDS = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
                       r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|hundred|"
                       r"thousand|million|billion|dozen)\b", re.I)
_ANAPHORA = re.compile(r"\b(it|its|they|their|them|this|that|these|those|he|she|his|her|there|the same|"
                       r"the former|the latter)\b", re.I)

QUESTION_TYPES = ("money", "number", "date", "who", "org", "where", "other")
NUMERIC_TYPES = ("number", "date", "money")
NAME_TYPES = ("who", "org", "where")


_TYPE_PATTERNS = (("money", _MONEY_Q), ("number", _NUMBER_Q), ("date", _DATE_Q), ("who", _WHO_Q),
                  ("org", _ORG_Q), ("where", _WHERE_Q))  # in order: the first that matches decides


def question_type(q: str) -> str:
    """The kind of answer asked for: one of QUESTION_TYPES (first matching pattern wins)."""
    return next((kind for kind, pattern in _TYPE_PATTERNS if pattern.search(q)), "other")


_HOW_MANY = re.compile(r"\bhow many\s+(.*)", re.I)
GENERIC_UNITS = {"people", "person", "persons", "times", "time", "new", "total", "individual", "different"}
GENERIC_STEMS = {stem(w) for w in GENERIC_UNITS}
_IRREGULAR_PLURALS = {"people", "staff", "children", "men", "women", "media", "data", "personnel"}


def count_head(question: str) -> str | None:
    """The noun a "how many …" question counts: the first plural among the words after "how many"
    ("registered WeChat official *accounts*", "*registrants* actually showed up"), stemmed."""
    m = _HOW_MANY.search(question)
    if not m:
        return None
    last = None
    for _, _, t in token_spans(m.group(1))[:6]:
        if t in STOPWORDS:
            break
        if t in _IRREGULAR_PLURALS or (len(t) > 3 and t.endswith("s") and not t.endswith(("ss", "us", "is"))):
            return stem(t)
        last = t
    return stem(last) if last else None


def count_unit(question: str) -> list[str]:
    """What a "how many …" question counts ("commits", "member"), generic words ("people") left out."""
    head = count_head(question)
    return [head] if head and head not in GENERIC_STEMS else []


_ATTRIBUTE_Q = re.compile(r"^\s*(?:who|what|which)\s+(?:is|was|are|were)\s+(?:the\s+|its\s+|their\s+)?"
                          r"((?:[\w'’-]+\s+){0,3}?[\w'’-]+)\s+(?:of|for|at|in|on|behind|to)\b", re.I)


def focus_terms(question: str) -> list[str]:
    """What a question asks *about* the things it names: the counted unit ("commits"), the attribute or role
    ("annual membership fee", "treasurer"). An answer must say it. (Verbs are left out: they are paraphrased
    too freely — "moved up" is "upgraded" — to be required.)"""
    out = count_unit(question)
    m = _ATTRIBUTE_Q.search(question)
    if m:
        out += [stem(t) for _, _, t in token_spans(m.group(1)) if t not in STOPWORDS and t not in GENERIC_UNITS]
    return list(dict.fromkeys(out))


def key_terms(question: str) -> list[str]:
    """The question's stemmed content words, in order, once each."""
    return list(dict.fromkeys(stem(t) for _, _, t in token_spans(question) if t not in STOPWORDS))


def entities(question: str) -> list[str]:
    """Stems of the capitalized words after the first: the names the question mentions."""
    return [stem(t) for i, (a, b, t) in enumerate(token_spans(question))
            if i > 0 and question[a:b][:1].isupper() and t not in STOPWORDS]


def numbers(question: str) -> list[str]:
    """Tokens with a digit ("2025", "4.0"): an answer's passage must contain them."""
    return [t for _, _, t in token_spans(question) if any(ch.isdigit() for ch in t)]


@dataclass(frozen=True)
class QuestionAnalysis:
    """Everything read off the question text; computed once per question."""

    text: str
    qtype: str
    terms: list[str]
    focus: list[str]
    count_head: str | None
    entities: list[str]
    numbers: list[str]

    @property
    def asks_number(self) -> bool:
        return self.qtype in NUMERIC_TYPES

    @property
    def asks_name(self) -> bool:
        return self.qtype in NAME_TYPES


def analyze_question(text: str) -> QuestionAnalysis:
    qtype = question_type(text)
    return QuestionAnalysis(
        text=text, qtype=qtype, terms=key_terms(text), focus=focus_terms(text) if qtype != "other" else [],
        count_head=count_head(text), entities=entities(text), numbers=numbers(text))


def retrieval_query(question: str, history: list[dict]) -> str:
    """A follow-up ("Which of its members…") is searched together with the user's previous turns."""
    users = [t["content"] for t in history if t["role"] == "user" and t["content"].strip()]
    if not users:
        return question
    content_words = [t for _, _, t in token_spans(question) if t not in STOPWORDS]
    if _ANAPHORA.search(question) or len(content_words) <= 3:
        return " ".join(users[-2:] + [question])
    return question
