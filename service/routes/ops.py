"""Operations: /healthz, /readyz, /v1/index, /metrics.

The handlers are `async def`, do no blocking work and take no sync dependencies (FastAPI runs those on the
worker-thread pool): they run on the event loop and never wait behind searches in that pool (a liveness probe
must answer while the service is busy).
"""

from __future__ import annotations

from dataclasses import asdict
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service.deps import ReadyDep
from service.errors import responses
from service.metrics import CONTENT_TYPE
from service.schemas import QueryInt

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    index_version: str | None = None
    detail: str | None = None


@router.get("/healthz", response_model=Health, summary="200 while the process lives", responses=responses(400))
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            summary="200 once the model and index are loaded, 503 before",
            responses={**responses(400), 503: {
                "model": Readiness, "description": "loading, or the index cannot be served (detail)",
                "headers": responses(503)[503]["headers"]}})
async def readyz(request: Request):
    res = request.app.state.resources
    if res.status == "ready":
        return {"status": "ready", "index_version": res.index.version}
    body = {"status": res.status}
    if res.error:
        body["detail"] = res.error
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


DOCUMENTS_PAGE_DEFAULT = 100
DOCUMENTS_PAGE_MAX = 1000


@router.get("/v1/index", summary="What is being served; the document list is paged (?offset=&limit=)",
            responses=responses(400, 401, 403, 422, 503))
async def index_info(
    res: ReadyDep,
    request: Request,
    offset: Annotated[QueryInt, Query(ge=0, le=2**31, description="first document of the page (0-based)")] = 0,
    limit: Annotated[QueryInt, Query(ge=1, le=DOCUMENTS_PAGE_MAX,
                                description=f"documents per page (1..{DOCUMENTS_PAGE_MAX})")] = DOCUMENTS_PAGE_DEFAULT,
) -> dict:
    """`documents` holds one page, in corpus order (by path); `total` counts all documents and `next_offset`
    is where the next page starts (null on the last page)."""
    m = res.index.manifest
    backend = request.app.state.resources.backend
    dense = None if backend is not None else m.get("dense")  # under Qdrant the FAISS spec is not what serves
    if dense is None:
        index_type = f"qdrant ({backend.where})" if backend is not None else "faiss (not recorded by this build)"
    else:
        index_type = f"{dense['engine']} {dense['factory']} ({'exact' if dense['exact'] else 'approximate'})"
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
        "index_type": index_type,  # where dense scores come from: FAISS's index type here, or Qdrant
        "dense_index": dense,  # the FAISS index the build chose (factory string, why, exact or not); null on Qdrant
        "fusion": asdict(res.retriever.fusion),
        "encoder": {"kind": request.app.state.resources.encoder_kind or "given",
                    "note": request.app.state.resources.encoder_note,
                    # questions are encoded with this query adapter (indexer.query_adapter); null: the plain model
                    "query_adapter": getattr(res.retriever.embedder, "query_adapter", None)},
        "counts": m.get("counts"),
        "chunks": len(res.index.chunks),
        "documents": page,
        "total": len(documents),
        "offset": offset,
        "limit": limit,
        "next_offset": end if end < len(documents) else None,
        "warnings": m.get("warnings", []),
        "calibration": res.answerer.describe() if res.answerer is not None else None,
    }


@router.get("/metrics", summary="Prometheus text format",
            responses={**responses(400), 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request) -> Response:
    res, metrics = request.app.state.resources, request.app.state.metrics
    metrics.ready.set(1.0 if res.status == "ready" else 0.0)
    metrics.index_chunks.set(float(len(res.index.chunks)) if res.index else 0.0)
    return Response(metrics.render(), media_type=CONTENT_TYPE)
