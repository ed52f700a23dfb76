"""Shaping retrieval hits into the contract's result objects (shared by the API and in-process eval)."""

from __future__ import annotations

import time

from service.highlights import query_terms, spans_for
from service.retrieval import Hit, Retriever
from service.schemas import Citation

CITATION_FIELDS = tuple(Citation.model_fields)  # the contract's citation, read off the chunk record


def citation(chunk: dict) -> dict:
    return {f: chunk[f] for f in CITATION_FIELDS}


def search_result(hit: Hit, rank: int, query: str, common: frozenset[str] = frozenset(),
                  wanted: frozenset[str] | None = None) -> dict:
    """One result object; `wanted` (the query's highlight stems, `query_terms(query, common)`) when the
    caller computed it once for all its hits."""
    c = hit.chunk
    return {
        "rank": rank,
        "chunk_id": c["chunk_id"],
        "score": round(hit.score, 6),
        "text": c["text"],
        "tokens": c["tokens"],
        "highlights": spans_for(c["text"], query_terms(query, common) if wanted is None else wanted),
        "citation": citation(c),
        "scores": {"dense": None if hit.dense is None else round(hit.dense, 6), "lexical": round(hit.lexical, 6)},
    }


def search_response(retriever: Retriever, query: str, k: int = 10, mode: str = "hybrid",
                    doc_id: str | None = None, section: str | None = None) -> dict:
    t0 = time.perf_counter()
    hits = retriever.search(query, k=k, mode=mode, doc_id=doc_id, section=section)
    wanted = query_terms(query, retriever.common_terms)
    results = [search_result(h, i + 1, query, wanted=wanted) for i, h in enumerate(hits)]
    return {
        "query": query,
        "mode": mode,
        "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        "index_version": retriever.index.version,
        "results": results,
    }
