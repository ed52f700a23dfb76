"""The thin top of /v1/ask: retrieve, pick the answer sentence, compute the features, apply the calibration,
pack the context. Returns an `AskResult`; the HTTP route turns it into the response."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexer.tokens import get_encoding
from service.ask.calibration import Calibration, CalibrationError, load_calibration
from service.ask.context import merge_passages, pack_context
from service.ask.evidence import (
    DEFAULT_SENTENCE_WEIGHTS,
    Candidate,
    TermWeights,
    answer_text,
    candidates,
    find_slot,
)
from service.ask.features import Signals, feature_vector
from service.ask.question import QuestionAnalysis, analyze_question, retrieval_query
from service.ask.reader import Reader, ReaderError, chunk_pair, load_reader
from service.retrieval import Hit, Retriever

log = logging.getLogger(__name__)

NOT_ANSWERED = "The report does not say: none of its passages answers this question."


class AskUnavailable(RuntimeError):
    """/v1/ask cannot answer with this index (no calibration that fits it); search still can."""


@dataclass
class Analysis:
    """Retrieval, candidates and features of one question: what ask() and calibration share."""

    retrieval_query: str
    question: QuestionAnalysis
    qvec: np.ndarray
    hits: list[Hit]
    sentence_sims: np.ndarray
    candidates: list[Candidate]
    x: np.ndarray  # the feature vector (features.feature_names() order)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def related(self, min_cosine: float) -> bool:
        """Whether any retrieved passage is related in meaning to the question at all (cosine ≥ `min_cosine`,
        the retriever's own "unrelated" cut-off): a question about something else is never answered from
        passages that merely share a word with it."""
        return any(h.dense is not None and h.dense >= min_cosine for h in self.hits)


@dataclass
class AskResult:
    question: str
    answerable: bool
    confidence: float
    answer_text: str
    citations: list[int]
    passages: list[dict]
    context: str
    context_tokens: int
    took_ms: float
    index_version: str
    retrieval_query: str

    def as_dict(self) -> dict:
        """The /v1/ask response body (service.schemas.AskResponse)."""
        d = asdict(self)
        d["answer"] = {"text": d.pop("answer_text"), "citations": d.pop("citations")}
        return d


class Answerer:
    """Answers over one retriever with one calibration. Without a calibration it can still analyze()
    questions (what `python -m eval calibrate` needs), but not ask()."""

    def __init__(self, retriever: Retriever, calibration: Calibration | None, reader: Reader | None = None) -> None:
        if calibration is not None:  # never a reader feature of 0 where the fit expected the reader's scores
            calibration.verify_reader(reader.fingerprint if reader is not None else None)
            # nor cosines of questions encoded, or candidates ranked, otherwise than in the fit
            calibration.verify_query_adapter(getattr(retriever.embedder, "query_adapter", None))
            calibration.verify_fusion(retriever.fusion)
        self.r = retriever
        self.cal = calibration
        self.reader = reader
        self.weights = TermWeights(retriever.doc_freq, len(retriever.chunks))

    @property
    def sentence_weights(self) -> dict[str, float]:
        return self.cal.sentence_weights if self.cal else dict(DEFAULT_SENTENCE_WEIGHTS)

    def rank_candidates(self, a: Analysis, sentence_weights: dict[str, float]) -> list[Candidate]:
        """The analysis's candidate sentences ranked again with other sentence-score weights."""
        return candidates(a.question, a.hits, a.sentence_sims, self.r.sentence_starts, self.weights,
                          sentence_weights)

    def analyze(self, question: str, k: int = 5, history: list[dict] | None = None,
                sentence_weights: dict[str, float] | None = None) -> Analysis:
        """Retrieve for the question (with earlier user turns for a follow-up), score candidate sentences
        (with `sentence_weights`, default the calibration's) and compute the features."""
        rq = retrieval_query(question, history or [])
        q = analyze_question(rq)
        qvec = self.r.encode_query(rq)
        found = self.r.retrieve(rq, k=max(k, 5), mode="hybrid", query_vec=qvec)
        hits = found.hits
        sims = self.r.sentence_scores(qvec)
        cands = candidates(q, hits, sims, self.r.sentence_starts, self.weights,
                           sentence_weights or self.sentence_weights)
        best = cands[0] if cands else None
        judged = 0.0
        if self.reader is not None and best is not None:
            judged = float(self.reader.score(rq, [chunk_pair(hits[best.passage].chunk, best.start, best.end)])[0])
        signals = Signals(question=q, hits=hits, best=best, slot=find_slot(q, hits, self.weights),
                          weights=self.weights, lexical_top=found.lexical_max if hits else 0.0, reader=judged)
        return Analysis(retrieval_query=rq, question=q, qvec=qvec, hits=hits, sentence_sims=sims,
                        candidates=cands, x=feature_vector(signals))

    def decide(self, a: Analysis, k: int = 5) -> tuple[Candidate | None, float]:
        """The answer sentence among the first `k` passages (None if there is none) and the calibrated
        `confidence` that it answers; 0 when nothing retrieved is related to the question (off-topic)."""
        if self.cal is None:
            raise AskUnavailable("/v1/ask is unavailable: no calibration")
        best = a.best if a.best is not None and a.best.passage < min(k, len(a.hits)) else None
        if best is None or not a.related(self.r.fusion.min_dense_without_terms):
            return best, 0.0
        return best, round(float(min(1.0, max(0.0, self.cal.confidence(a.x)))), 4)

    def describe(self) -> dict:
        out = self.cal.describe() if self.cal else {"error": "no calibration"}
        return {**out, "reader": self.reader.describe()} if self.reader is not None else out

    def ask(self, question: str, k: int = 5, max_context_tokens: int = 1500, encoding: str = "cl100k_base",
            history: list[dict] | None = None, min_confidence: float | None = None) -> AskResult:
        """Answer when confidence ≥ `min_confidence` (default: the calibrated threshold)."""
        t0 = time.perf_counter()
        if self.cal is None:
            raise AskUnavailable("/v1/ask is unavailable: no calibration")
        enc = get_encoding(encoding)  # UnknownEncoding → 422
        a = self.analyze(question, k, history)
        hits = a.hits[:k]
        best, confidence = self.decide(a, k)
        threshold = self.cal.threshold if min_confidence is None else min_confidence
        answerable = best is not None and confidence >= threshold
        passages, order = merge_passages(hits, question, self.r.common_terms)
        answer_n = None
        text = NOT_ANSWERED
        if answerable:
            text = answer_text(hits, best)
            answer_n = order[best.passage]
        _, used, _ = pack_context(passages, max_context_tokens, enc, must=answer_n)  # which passages fit
        passages = [p for p in passages if p["n"] in used]
        renumber = {old: new for new, old in enumerate(sorted(used), start=1)}
        for p in passages:
            p["n"] = p["rank"] = renumber[p["n"]]
        answer_n = renumber[answer_n] if answer_n is not None else None
        context, used, n_tokens = pack_context(passages, max_context_tokens, enc, must=answer_n)  # exact
        passages = [p for p in passages if p["n"] in used]
        for p in passages:
            p.pop("_offsets", None)
        return AskResult(
            question=question, answerable=bool(answerable), confidence=confidence,
            answer_text=text, citations=[answer_n] if answerable else [], passages=passages, context=context,
            context_tokens=n_tokens, took_ms=round((time.perf_counter() - t0) * 1000, 2),
            index_version=self.r.index.version, retrieval_query=a.retrieval_query)


class UnavailableAnswerer:
    """Stands in for an Answerer when no calibration fits the index: every ask() is refused with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def describe(self) -> dict:
        return {"error": self.reason}

    def ask(self, *args, **kwargs) -> AskResult:
        raise AskUnavailable(f"/v1/ask is unavailable: {self.reason}")


def load_answerer(retriever: Retriever, index_dirs: list[Path], calibration: Path | None = None,
                  reader: Callable[[], Reader] | None = None) -> Answerer | UnavailableAnswerer:
    """An Answerer with the calibration found for the retriever's index (see calibration.find_calibration) and
    the reader it was fitted with (`reader()`, called only when the calibration uses one; default: the packaged
    reader), or, when either is missing or they do not fit together, an UnavailableAnswerer that says why
    (search keeps working)."""
    try:
        cal = load_calibration(retriever.index.manifest, index_dirs, calibration)
        judge = (reader or load_reader)() if cal.needs_reader else None
        answerer = Answerer(retriever, cal, judge)  # checks that the reader is the one the fit used
    except (CalibrationError, ReaderError) as e:
        log.error("/v1/ask is unavailable: %s", e)
        return UnavailableAnswerer(str(e))
    log.info("calibration %s (threshold %.3f)%s", cal.path, cal.threshold,
             f", reader {judge.path} on {judge.runtime}" if judge is not None else "")
    return answerer
