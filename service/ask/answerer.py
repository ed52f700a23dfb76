"""The thin top of /v1/ask: retrieve, pick the answer sentence, compute the features, apply the calibration,
pack the context. Returns an `AskResult`; the HTTP route turns it into the response."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from indexer.tokens import get_encoding
from service.ask.calibration import Calibration
from service.ask.context import merge_passages, pack_context
from service.ask.evidence import Candidate, TermWeights, answer_text, candidates, find_slot
from service.ask.features import Signals, feature_vector
from service.ask.question import QuestionAnalysis, analyze_question, retrieval_query
from service.retrieval import Hit, Retriever

NOT_ANSWERED = "The report does not say: none of its passages answers this question."


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
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["answer"] = {"text": d.pop("answer_text"), "citations": d.pop("citations")}
        d.update(d.pop("extra"))
        return d


class Answerer:
    def __init__(self, retriever: Retriever, calibration: Calibration) -> None:
        self.r = retriever
        self.cal = calibration
        self.weights = TermWeights(retriever.doc_freq, len(retriever.chunks))

    def analyze(self, question: str, k: int = 5, history: list[dict] | None = None,
                sentence_weights: dict[str, float] | None = None) -> Analysis:
        """Retrieve for the question (with earlier user turns for a follow-up), score candidate sentences
        (with `sentence_weights`, default the calibration's) and compute the features."""
        rq = retrieval_query(question, history or [])
        q = analyze_question(rq)
        qvec = self.r.encode_query(rq)
        lexical = self.r.lexical_scores(rq)
        hits = self.r.search(rq, k=max(k, 5), mode="hybrid", query_vec=qvec, lexical=lexical)
        sims = self.r.sentence_scores(qvec)
        cands = candidates(q, hits, sims, self.r.sentence_starts, self.weights,
                           sentence_weights or self.cal.sentence_weights)
        best = cands[0] if cands else None
        signals = Signals(question=q, hits=hits, best=best, slot=find_slot(q, hits, self.weights),
                          weights=self.weights, lexical_top=float(lexical.max()) if hits else 0.0)
        return Analysis(retrieval_query=rq, question=q, qvec=qvec, hits=hits, sentence_sims=sims,
                        candidates=cands, x=feature_vector(signals))

    def ask(self, question: str, k: int = 5, max_context_tokens: int = 1500, encoding: str = "cl100k_base",
            history: list[dict] | None = None) -> AskResult:
        t0 = time.perf_counter()
        enc = get_encoding(encoding)  # UnknownEncoding → 422
        a = self.analyze(question, k, history)
        hits, best, x = a.hits[:k], a.best, a.x
        if best is not None and best.passage >= len(hits):
            best = None
        p_ans = self.cal.p_answerable(x)
        answerable = best is not None and p_ans >= self.cal.threshold
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
        confidence = self.cal.p_correct(x) if answerable else 1.0 - p_ans
        return AskResult(
            question=question, answerable=bool(answerable),
            confidence=round(float(min(1.0, max(0.0, confidence))), 4),
            answer_text=text, citations=[answer_n] if answerable else [], passages=passages, context=context,
            context_tokens=n_tokens, took_ms=round((time.perf_counter() - t0) * 1000, 2),
            index_version=self.r.index.version, retrieval_query=a.retrieval_query)
