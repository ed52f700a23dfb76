"""The signals the abstention model combines, each defined once with the direction it is expected to push.

A feature is a function of `Signals` (everything computed for one question) registered with `@feature(sign)`:
sign +1 means "more of it, more likely answerable", -1 the reverse, 0 either way. The fit keeps every weight
on its feature's side (a feature whose fitted weight points the wrong way is dropped and the rest refitted),
so a quirk of a small tuning set cannot turn a signal upside down. Adding a feature is one decorated function
here; `python -m eval calibrate` then fits a calibration for the new feature list (an old calibration is
refused because its feature names no longer match).

A signal that needs a model (a reader scoring question–sentence pairs, a tagger) is loaded once where the
Answerer is built, computed once per question in `Answerer.analyze` into a field of `Signals`, and read by its
feature function here; `python -m eval calibrate` then decides its weight like any other's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from indexer.text import stem_set
from service.ask.evidence import Candidate, Slot, TermWeights
from service.ask.question import QuestionAnalysis
from service.retrieval import Hit


@dataclass
class Signals:
    """One question's retrieval and evidence, the input of every feature."""

    question: QuestionAnalysis
    hits: list[Hit]  # hybrid hits, best first (non-empty when features are computed)
    best: Candidate | None  # the best answer sentence
    slot: Slot
    weights: TermWeights
    lexical_top: float  # the highest BM25 score of any chunk
    reader: float = 0.0  # the reader's logit for (question, best sentence); see service.ask.reader

    @property
    def answer_window_stems(self) -> frozenset[str]:
        """Stems of the best sentence read with its section heading."""
        if self.best is None:
            return stem_set("")
        return stem_set(" ".join(self.hits[self.best.passage].chunk["heading_path"]) + " " + self.best.text)


@dataclass(frozen=True)
class Feature:
    name: str
    sign: int  # +1: more means answerable; -1: more means not answerable; 0: either way
    fn: Callable[[Signals], float]
    doc: str = ""


REGISTRY: list[Feature] = []


def feature(sign: int) -> Callable[[Callable[[Signals], float]], Callable[[Signals], float]]:
    """Register `fn` as a feature named after the function, with its expected sign."""
    if sign not in (-1, 0, 1):
        raise ValueError(f"sign must be -1, 0 or +1, not {sign}")

    def register(fn: Callable[[Signals], float]) -> Callable[[Signals], float]:
        if any(f.name == fn.__name__ for f in REGISTRY):
            raise ValueError(f"feature {fn.__name__!r} is registered twice")
        REGISTRY.append(Feature(fn.__name__, sign, fn, (fn.__doc__ or "").strip()))
        return fn

    return register


# -- retrieval ----------------------------------------------------------------------------------------------
@feature(sign=+1)
def dense_top(s: Signals) -> float:
    """Highest dense score of the hits (½ passage cosine + ½ best-sentence cosine)."""
    return float(max(h.dense or 0.0 for h in s.hits))


@feature(sign=+1)
def sentence_cos(s: Signals) -> float:
    """Cosine of the question and the chosen answer sentence."""
    return s.best.cos if s.best else 0.0


@feature(sign=+1)
def coverage_top(s: Signals) -> float:
    """IDF-weighted share of the question's terms in the top passage (with its heading path)."""
    return s.weights.coverage(s.question.terms, s.hits[0].chunk["embed_text"])


@feature(sign=+1)
def coverage_answer(s: Signals) -> float:
    """The same share in the answer sentence with its section heading."""
    return s.best.coverage if s.best else 0.0


# -- the answer slot --------------------------------------------------------------------------------------
@feature(sign=+1)
def typed_coverage(s: Signals) -> float:
    """Best coverage of a sentence window (top 3 passages) that holds an answer of the asked kind."""
    return s.slot.typed


@feature(sign=+1)
def slot_match(s: Signals) -> float:
    """1 when an answer slot was found (see evidence.find_slot)."""
    return 1.0 if s.slot.found else 0.0


# -- words the report does not use ------------------------------------------------------------------------
@feature(sign=-1)
def oov(s: Signals) -> float:
    """IDF-weighted share of the question's terms that no chunk of the index contains."""
    terms = s.question.terms
    if not terms:
        return 1.0
    idf_total = sum(s.weights.idf(t) for t in terms) or 1.0
    return sum(s.weights.idf(t) for t in terms if not s.weights.known(t)) / idf_total


@feature(sign=-1)
def rare_missing(s: Signals) -> float:
    """Share of the question's two rarest indexed terms that the answer sentence (with heading) lacks."""
    known = [t for t in s.question.terms if s.weights.known(t)]
    rare = sorted(known, key=s.weights.idf, reverse=True)[:2]
    if not rare:
        return 1.0
    have = s.answer_window_stems
    return sum(1.0 for t in rare if t not in have) / len(rare)


@feature(sign=-1)
def entity_missing_answer(s: Signals) -> float:
    """Share of the question's names (capitalized words) that the answer sentence (with heading) lacks."""
    ents = s.question.entities
    if not ents:
        return 0.0
    have = s.answer_window_stems
    return len([e for e in ents if e not in have]) / len(ents)


@feature(sign=+1)
def lexical_top(s: Signals) -> float:
    """log(1 + the highest BM25 score)."""
    return math.log1p(max(0.0, s.lexical_top))


# -- a learned judge ----------------------------------------------------------------------------------------
@feature(sign=+1)
def reader(s: Signals) -> float:
    """The reader's logit that the answer sentence (with its heading path) answers the question."""
    return s.reader


# -- what the question asks ---------------------------------------------------------------------------------
@feature(sign=0)
def asks_number(s: Signals) -> float:
    """The question asks for a number, a date or an amount of money."""
    return 1.0 if s.question.asks_number else 0.0


@feature(sign=0)
def asks_name(s: Signals) -> float:
    """The question asks for a person, an organization or a place."""
    return 1.0 if s.question.asks_name else 0.0


@feature(sign=-1)
def typed_no_slot(s: Signals) -> float:
    """The question asks for a kind of answer and no slot holds one."""
    return 1.0 if s.question.qtype != "other" and not s.slot.found else 0.0


def feature_names() -> tuple[str, ...]:
    return tuple(f.name for f in REGISTRY)


def feature_signs() -> list[int]:
    return [f.sign for f in REGISTRY]


def feature_vector(s: Signals) -> np.ndarray:
    """The registered features in registry order; all zeros when nothing was retrieved."""
    if not s.hits:
        return np.zeros(len(REGISTRY))
    return np.array([f.fn(s) for f in REGISTRY], dtype=np.float64)
