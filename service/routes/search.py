"""GET and POST /v1/search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.deps import MetricsDep, ReadyDep
from service.errors import BadInput, responses
from service.limits import LimiterDep, client_key
from service.results import search_response
from service.schemas import MAX_FILTER_CHARS, MAX_TEXT_CHARS, Filters, Mode, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])


def check_text(text: str, field: list[str], limit: int) -> str:
    """Blank or over-long text is refused (never truncated)."""
    if not text.strip():
        raise BadInput(field, "must not be empty or only white space")
    if len(text) > limit:
        raise BadInput(field, f"is {len(text)} characters long; the limit is {limit}. Shorten it "
                       "(the service never truncates a query silently).", "string_too_long")
    return text.strip()


async def _search(req: SearchRequest, request: Request, res, metrics, limiter, loc: list[str]) -> dict:
    query = check_text(req.query, loc, res.settings.max_query_chars)
    retriever = res.retriever
    if req.mode != "lexical":
        retriever.check_query_length(query)  # QueryTooLong: a 422 (service/errors.py) before taking a slot
    async with limiter.slot(client_key(request)):
        out = await run_in_threadpool(search_response, retriever, query, req.k, req.mode,
                                      req.filters.doc_id, req.filters.section)
    metrics.count("search", req.mode)
    return out



@router.post("/search", response_model=SearchResponse, summary="Search passages (JSON body)",
             responses=responses(400, 401, 403, 408, 413, 422, 429, 503))
async def search_post(req: SearchRequest, request: Request, res: ReadyDep, metrics: MetricsDep,
                      limiter: LimiterDep) -> dict:
    return await _search(req, request, res, metrics, limiter, ["body", "query"])


@router.get("/search", response_model=SearchResponse, summary="Search passages (query string)",
            responses=responses(400, 401, 403, 413, 422, 429, 503))
async def search_get(
    request: Request,
    res: ReadyDep,
    metrics: MetricsDep,
    limiter: LimiterDep,
    q: Annotated[str, Query(description="the question or keywords", max_length=MAX_TEXT_CHARS)],
    k: Annotated[int, Query(ge=1, le=50)] = 10,
    mode: Annotated[Mode, Query(description="hybrid | dense | lexical")] = "hybrid",
    doc_id: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
    section: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)] = None,
) -> dict:
    try:
        req = SearchRequest(query=q, k=k, mode=mode, filters=Filters(doc_id=doc_id, section=section))
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc = ["query", "q" if err["loc"][:1] == ("query",) else err["loc"][-1]]
            errors.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
        raise RequestValidationError(errors) from None
    return await _search(req, request, res, metrics, limiter, ["query", "q"])
