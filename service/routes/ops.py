"""Operations: /healthz, /readyz, /v1/index, /metrics."""

from __future__ import annotations

from dataclasses import asdict
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from service.deps import MetricsDep, ReadyDep, ResourcesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="200 while the process lives")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="200 once the model and index are loaded, 503 before (or if they cannot be)")
def readyz(res: ResourcesDep):
    if res.status == "ready":
        return {"status": "ready", "index_version": res.index.version}
    body = {"status": res.status}
    if res.error:
        body["detail"] = res.error
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


DOCUMENTS_PAGE_DEFAULT = 100
DOCUMENTS_PAGE_MAX = 1000


@router.get("/v1/index", summary="What is being served; the document list is paged (?offset=&limit=)")
def index_info(
    res: ReadyDep,
    offset: Annotated[int, Query(ge=0, description="first document of the page (0-based)")] = 0,
    limit: Annotated[int, Query(ge=1, le=DOCUMENTS_PAGE_MAX,
                                description=f"documents per page (1..{DOCUMENTS_PAGE_MAX})")] = DOCUMENTS_PAGE_DEFAULT,
) -> dict:
    """`documents` holds one page, in corpus order (by path); `total` counts all documents and `next_offset`
    is where the next page starts (null on the last page)."""
    m = res.index.manifest
    documents = res.index.documents
    page = list(islice(documents.values(), offset, offset + limit))
    end = offset + len(page)
    return {
        "index_version": m["index_version"],
        "built_at": m["built_at"],
        "schema_version": m["schema_version"],
        "package_version": m.get("package_version"),
        "model": m["model"],
        "chunker": m.get("chunker"),
        "lexical": m.get("lexical"),
        "fusion": asdict(res.retriever.fusion),
        "counts": m.get("counts"),
        "chunks": len(res.index.chunks),
        "documents": page,
        "total": len(documents),
        "offset": offset,
        "limit": limit,
        "next_offset": end if end < len(documents) else None,
        "warnings": m.get("warnings", []),
    }


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
def metrics(res: ResourcesDep, metrics: MetricsDep) -> PlainTextResponse:
    gauges = {"ready": 1.0 if res.status == "ready" else 0.0,
              "index_chunks": float(len(res.index.chunks)) if res.index else 0.0}
    return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")
