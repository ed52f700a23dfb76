"""GET and POST /v1/search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.deps import MetricsDep, ReadyDep
from service.errors import BadInput
from service.results import search_response
from service.schemas import Filters, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])


def check_text(text: str, field: list[str], limit: int) -> str:
    """Blank or over-long text is refused (never truncated)."""
    if not text.strip():
        raise BadInput(field, "must not be empty or only white space")
    if len(text) > limit:
        raise BadInput(field, f"is {len(text)} characters long; the limit is {limit}. Shorten it "
                       "(the service never truncates a query silently).", "string_too_long")
    return text.strip()


async def _search(req: SearchRequest, res, metrics, loc: list[str]) -> dict:
    query = check_text(req.query, loc, res.settings.max_query_chars)
    metrics.count("search", req.mode)
    return await run_in_threadpool(search_response, res.retriever, query, req.k, req.mode,
                                   req.filters.doc_id, req.filters.section)


@router.post("/search", response_model=SearchResponse, summary="Search passages (JSON body)")
async def search_post(req: SearchRequest, res: ReadyDep, metrics: MetricsDep) -> dict:
    return await _search(req, res, metrics, ["body", "query"])


@router.get("/search", response_model=SearchResponse, summary="Search passages (query string)")
async def search_get(
    res: ReadyDep,
    metrics: MetricsDep,
    q: Annotated[str, Query(description="the question or keywords")],
    k: Annotated[int, Query(ge=1, le=50)] = 10,
    mode: Annotated[str, Query(description="hybrid | dense | lexical")] = "hybrid",
    doc_id: Annotated[str | None, Query()] = None,
    section: Annotated[str | None, Query()] = None,
) -> dict:
    try:
        req = SearchRequest(query=q, k=k, mode=mode, filters=Filters(doc_id=doc_id, section=section))
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc = ["query", "q" if err["loc"][:1] == ("query",) else err["loc"][-1]]
            errors.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
        raise RequestValidationError(errors) from None
    return await _search(req, res, metrics, ["query", "q"])
