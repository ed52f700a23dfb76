"""GET and POST /v1/search.

The body is validated against `SearchResponse` and serialized by pydantic-core here, once (what FastAPI would
do for a returned dict), and sent as bytes; a repeated request is answered from the response cache
(service/response_cache.py) without a slot, the rate limit still applying.
"""

from __future__ import annotations

import time
from typing import Annotated

import pydantic_core
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from service.deps import MetricsDep, ReadyDep
from service.errors import BadInput, responses
from service.limits import LimiterDep, client_key
from service.response_cache import CachedBody, ResponseCache
from service.results import search_response
from service.schemas import (
    MAX_FILTER_CHARS,
    MAX_TEXT_CHARS,
    Filters,
    Mode,
    QueryInt,
    SearchRequest,
    SearchResponse,
)

router = APIRouter(prefix="/v1", tags=["search"])
RESPONSE = TypeAdapter(SearchResponse)
TOOK_MARK = -1.25e-300  # a took_ms no request reports, found again in the JSON
TOOK_KEY_MARK = b'"took_ms":' + pydantic_core.to_json(TOOK_MARK)


def check_text(text: str, field: list[str], limit: int) -> str:
    """Blank or over-long text is refused (never truncated)."""
    if not text.strip():
        raise BadInput(field, "must not be empty or only white space")
    if len(text) > limit:
        raise BadInput(field, f"is {len(text)} characters long; the limit is {limit}. Shorten it "
                       "(the service never truncates a query silently).", "string_too_long")
    return text.strip()


def cacheable_body(out: dict) -> CachedBody:
    """`out` (search_response's dict) validated as a SearchResponse and serialized by pydantic-core, as FastAPI
    does for a returned dict, then cut around its `took_ms` value (a key that cannot occur inside a string
    value: quotes there are escaped)."""
    r = RESPONSE.validate_python(out)
    head, took, tail = RESPONSE.dump_json(r.model_copy(update={"took_ms": TOOK_MARK})).partition(TOOK_KEY_MARK)
    if not took:
        raise RuntimeError("took_ms not found in the serialized response")
    return CachedBody(head + b'"took_ms":', tail)


async def _search(req: SearchRequest, request: Request, res, metrics, limiter, loc: list[str]) -> Response:
    t0 = time.perf_counter()
    query = check_text(req.query, loc, res.settings.max_query_chars)
    retriever = res.retriever
    cache: ResponseCache = request.app.state.response_cache
    key = (retriever.index.version, query, req.k, req.mode, req.filters.doc_id, req.filters.section)
    hit = cache.get(key)
    if hit is not None:
        limiter.take_token(client_key(request))  # RateLimited: a 429, as for a computed answer
        metrics.count("search", req.mode)
        metrics.response_cache_hit()
        return Response(hit.body(round((time.perf_counter() - t0) * 1000, 2)), media_type="application/json")
    if req.mode != "lexical":
        retriever.check_query_length(query)  # QueryTooLong: a 422 (service/errors.py) before taking a slot
    async with limiter.slot(client_key(request)):
        out = await run_in_threadpool(search_response, retriever, query, req.k, req.mode,
                                      req.filters.doc_id, req.filters.section)
    metrics.count("search", req.mode)
    body = cacheable_body(out)
    if cache.enabled:
        cache.put(key, body)
        metrics.response_cache_miss()
    return Response(body.body(out["took_ms"]), media_type="application/json")


@router.post("/search", response_model=SearchResponse, summary="Search passages (JSON body)",
             responses=responses(400, 401, 403, 408, 413, 422, 429, 503))
async def search_post(req: SearchRequest, request: Request, res: ReadyDep, metrics: MetricsDep,
                      limiter: LimiterDep) -> Response:
    return await _search(req, request, res, metrics, limiter, ["body", "query"])


@router.get("/search", response_model=SearchResponse, summary="Search passages (query string)",
            responses=responses(400, 401, 403, 413, 422, 429, 503))
async def search_get(
    request: Request,
    res: ReadyDep,
    metrics: MetricsDep,
    limiter: LimiterDep,
    q: Annotated[str, Query(description="the question or keywords", max_length=MAX_TEXT_CHARS)],
    k: Annotated[QueryInt, Query(ge=1, le=50)] = 10,
    mode: Annotated[Mode, Query(description="hybrid | dense | lexical")] = "hybrid",
    doc_id: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
    section: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
) -> Response:
    try:
        req = SearchRequest(query=q, k=k, mode=mode, filters=Filters(doc_id=doc_id, section=section))
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc = ["query", "q" if err["loc"][:1] == ("query",) else err["loc"][-1]]
            errors.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
        raise RequestValidationError(errors) from None
    return await _search(req, request, res, metrics, limiter, ["query", "q"])
