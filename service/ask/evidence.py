"""Evidence: candidate answer sentences of the retrieved passages, how they are scored, the answer text,
and the "answer slot" search (a sentence that holds an answer of the kind the question asks for).

Everything here is read from the retrieved chunks (their text, sentence spans and heading path) and the
question analysis; nothing is fitted here (the sentence-score weights come from the calibration).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from indexer.text import STOPWORDS, stem, stem_set, token_spans
from service.ask.question import GENERIC_STEMS, NUM_WORDS, QuestionAnalysis
from service.retrieval import Hit

_MONEY = re.compile(r"[$€£¥]\s?\d|\b\d[\d,.]*\s?(k|m|bn|million|billion|thousand)?\s?(usd|eur|gbp|dollars?|euros?|"
                    r"pounds?|yuan|rmb)\b|\b(usd|eur|gbp|rmb)\s?\d", re.I)
_MONTHS = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|"
                     r"december)\b", re.I)
_YEAR = re.compile(r"^(19|20)\d\d$")
_DECIMAL = re.compile(r"^\d+\.\d+$")  # "Kata Containers 3.0", "9.3%": a version or a rate, not a count
_TIMES = stem("times")
# Nouns for people being counted: "how many people attended" is answered by "1,862 participants".
PERSON_NOUNS = {stem(w) for w in """people persons participants attendees attendance registrations registrants
    individuals members developers contributors visitors users subscribers employees staff delegates speakers
    viewers audience""".split()}
_DEMONYM = re.compile(r"^(\w{4,}?)(?:ese|ean|ian)$|^(\w{3,}?)an$|^(\w{3,}n)es$")  # stems: chinese → chines


class TermWeights:
    """IDF of stemmed words over the index's chunks, and the IDF-weighted coverage of terms by a text."""

    def __init__(self, doc_freq: Mapping[str, int], n_docs: int) -> None:
        self.df = doc_freq
        self.n_docs = max(1, n_docs)

    def idf(self, term: str) -> float:
        d = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - d + 0.5) / (d + 0.5))

    def known(self, term: str) -> bool:
        return term in self.df

    def coverage(self, terms: list[str], text: str) -> float:
        """IDF-weighted share of the question's terms that occur in `text`."""
        if not terms:
            return 0.0
        have = stem_set(text)
        total = sum(self.idf(t) for t in terms)
        return sum(self.idf(t) for t in terms if t in have) / total if total else 0.0


def is_number(t: str) -> bool:
    return any(ch.isdigit() for ch in t) or bool(NUM_WORDS.fullmatch(t))


def matches_term(term: str, stems: set[str]) -> bool:
    """`term` or a word sharing its first five letters (registered ~ registrations) is among `stems`; a
    demonym also matches its place (Chinese ~ China, Korean ~ Korea, European ~ Europe)."""
    if term in stems:
        return True
    if len(term) >= 5 and any(s[:5] == term[:5] for s in stems if len(s) >= 5):
        return True
    m = _DEMONYM.match(term)
    root = m and (m.group(1) or m.group(2) or m.group(3))
    return bool(root) and any(s.startswith(root) for s in stems)


def counted_near(sentence: str, question: str, unit: str | None) -> bool:
    """A number (not one the question itself holds, not a year) within a few words of what is counted:
    the unit itself, or any noun for people when the question counts "people"."""
    qwords = {t for _, _, t in token_spans(question)}
    toks = [t for _, _, t in token_spans(sentence)]
    stems = [stem(t) for t in toks]
    for i, t in enumerate(toks):
        if not is_number(t) or t in qwords or _YEAR.match(t) or _DECIMAL.match(t):
            continue
        if unit is None or unit == _TIMES:
            return True
        near = stems[max(0, i - 2) : i] + stems[i + 1 : i + 5]
        if any(n in PERSON_NOUNS for n in near) if unit in GENERIC_STEMS else any(
                matches_term(unit, {n}) for n in near):
            return True
    return False


def type_match(qtype: str, sentence: str, question: str) -> float:
    """Does `sentence` hold something of the kind the question asks for (a quantity, a date, a name)?

    Words and numbers the question itself contains do not count: they are not an answer.
    """
    qwords = {t for _, _, t in token_spans(question)}
    tokens = [(sentence[a:b], t) for a, b, t in token_spans(sentence)]
    if qtype == "money":
        return 1.0 if _MONEY.search(sentence) else 0.0
    if qtype == "number":
        for _word, t in tokens:
            if t in qwords or _YEAR.match(t):
                continue
            if is_number(t):
                return 1.0
        return 1.0 if re.search(r"\d+\s*%", sentence) else 0.0
    if qtype == "date":
        return 1.0 if any((any(c.isdigit() for c in t) or _MONTHS.fullmatch(t)) and t not in qwords
                          for _, t in tokens) else 0.0
    if qtype in ("who", "where", "org"):
        # a name: a capitalized word the question does not contain (two in a row for a person)
        caps = [word[:1].isupper() and t not in qwords and t not in STOPWORDS for word, t in tokens]
        if qtype == "who":
            return 1.0 if any(a and b for a, b in zip(caps, caps[1:], strict=False)) else (0.5 if any(caps) else 0.0)
        return 1.0 if any(caps[1:]) else 0.0
    return 1.0


def evidence_window(chunk: dict, i: int) -> str:
    """Sentence `i` of a chunk with what frames it: the section heading and, for a list item, the lines
    ending in ':' that introduce its list ("Gold Member Representatives:")."""
    spans, text = chunk["sentences"], chunk["text"]
    parts = [text[spans[i][0] : spans[i][1]]]
    if not parts[0].lstrip().startswith("- "):
        if i > 0:  # "The event attracted …": what it is was named just before
            parts.append(text[spans[i - 1][0] : spans[i - 1][1]])
    else:
        for a, b in reversed(spans[max(0, i - 20) : i]):
            piece = text[a:b].strip()
            if piece.endswith(":"):
                parts.append(piece)
            elif not piece.startswith("- "):
                break
    return " ".join(chunk["heading_path"]) + " " + " ".join(parts)


@dataclass
class Candidate:
    """One sentence of a retrieved passage, scored as the answer."""

    passage: int  # index into hits
    start: int
    end: int
    text: str
    cos: float
    coverage: float
    type_ok: float
    score: float = 0.0


DEFAULT_SENTENCE_WEIGHTS = {"cos": 1.0, "coverage": 0.6, "passage": 0.3, "type": 0.2}


def candidates(q: QuestionAnalysis, hits: list[Hit], sentence_sims: np.ndarray, sentence_starts: np.ndarray,
               weights: TermWeights, sentence_weights: Mapping[str, float],
               top_passages: int = 5) -> list[Candidate]:
    """Every sentence of the first `top_passages` hits, best first: query–sentence cosine, coverage of the
    question's terms (with the section heading), answer type and passage score, weighted."""
    w = sentence_weights
    best_fused = max((h.score for h in hits), default=1.0) or 1.0
    out = []
    for pi, h in enumerate(hits[:top_passages]):
        c = h.chunk
        start = int(sentence_starts[h.index])
        heading = " ".join(c["heading_path"])
        for si, (a, b) in enumerate(c["sentences"]):
            text = c["text"][a:b]
            cov = weights.coverage(q.terms, heading + " " + text)
            tm = type_match(q.qtype, text, q.text)
            cand = Candidate(pi, a, b, text, float(sentence_sims[start + si]), cov, tm)
            cand.score = (w["cos"] * cand.cos + w["coverage"] * cov + w["type"] * tm
                          + w["passage"] * (h.score / best_fused if best_fused > 0 else 0))
            out.append(cand)
    out.sort(key=lambda x: (-x.score, x.passage, x.start))
    return out


# A sentence that opens with one of these words points back at the one before it ("These concerns have led to
# …", "It was …", "Such efforts …"): read alone, it does not say what it is about.
ANAPHORS = frozenset("""this these those that such they it its their them he she his her both""".split())


def refers_back(sentence: str) -> bool:
    """Does the sentence open with a pronoun or demonstrative whose antecedent is in an earlier sentence?"""
    words = token_spans(sentence)
    return bool(words) and words[0][2] in ANAPHORS


def answer_span(hits: list[Hit], best: Candidate) -> tuple[int, int]:
    """The best sentence; with the sentence before it when it refers back to that one (a pronoun or
    demonstrative first: an answer must be readable on its own; not from or to a list item); when it
    introduces a list (ends with a colon), the whole list too (its items and the sub-headings ending in a colon
    between them), as far as the passage goes."""
    c = hits[best.passage].chunk
    spans = c["sentences"]
    i = next(j for j, (a, _) in enumerate(spans) if a == best.start)
    start, end = best.start, best.end
    if i > 0 and refers_back(best.text) and not any(
            c["text"][a:b].lstrip().startswith("- ") for a, b in spans[i - 1 : i + 1]):  # not a list item's
        start = spans[i - 1][0]
    if best.text.rstrip().endswith(":"):
        for a, b in spans[i + 1 :]:
            piece = c["text"][a:b].strip()
            if piece.startswith("- "):
                end = b
            elif not piece.endswith(":"):
                break
    return start, end


def answer_text(hits: list[Hit], best: Candidate) -> str:
    s, e = answer_span(hits, best)
    return hits[best.passage].chunk["text"][s:e].strip()


@dataclass(frozen=True)
class Slot:
    """What the slot search found in the top passages."""

    typed: float  # best (answer-type match × coverage of the question's terms) of a sentence's window
    found: bool  # one sentence holds an answer of the asked kind, every name, the attribute, the count


def find_slot(q: QuestionAnalysis, hits: list[Hit], weights: TermWeights, top_passages: int = 3) -> Slot:
    """Is there a sentence that both covers the question and holds the kind of thing it asks for (typed)?
    And an answer slot: one that, read with what frames it, holds an answer of that kind, names every entity
    and the attribute asked about, sits in a passage with the question's numbers, and for "how many X" has a
    number next to X?"""
    typed, slot = 0.0, False
    for h in hits[:top_passages]:
        has_numbers = not q.numbers or set(q.numbers) <= {
            t for _, _, t in token_spans(" ".join(h.chunk["heading_path"]) + " " + h.chunk["text"])}
        for i, (a, b) in enumerate(h.chunk["sentences"]):
            sent = h.chunk["text"][a:b]
            tm = type_match(q.qtype, sent, q.text)
            if not tm:
                continue
            window = evidence_window(h.chunk, i)
            typed = max(typed, tm * weights.coverage(q.terms, window))
            here = stem_set(window)
            if tm >= 1 and has_numbers and all(matches_term(e, here) for e in q.entities) \
                    and all(matches_term(f, here) for f in q.focus) \
                    and (q.qtype != "number" or counted_near(sent, q.text, q.count_head)):
                slot = True
    return Slot(typed=typed, found=slot)
