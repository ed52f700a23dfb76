"""/v1/admin: reload the index without a restart, and see which versions there are.

Off (404) unless REPORTQA_ADMIN_TOKEN is set; then every call needs `Authorization: Bearer <token>`
(401 without it, 403 with a wrong one).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from indexer.store import IndexLoadError, UnknownVersion, list_versions, read_current
from service.deps import AdminDep, ResourcesDep
from service.errors import error_body, responses
from service.schemas import ValidationErrorBody

_AUTH = responses(400, 401, 403, 404)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep], responses=_AUTH)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, min_length=1, max_length=128,
                                description="a version under <index root>/versions/; default: the one CURRENT names")


class ReloadResponse(BaseModel):
    previous: str | None = Field(description="the version served before (null if none was)")
    current: str = Field(description="the version served from now on")


class ReloadFailure(BaseModel):
    detail: str = Field(description="why the version was not swapped in")
    message: str = Field(description="the same sentence (the field every error body has)")
    serving: str | None = Field(description="the version that keeps serving (null if none)")


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Load an index version, check it and swap it in; the old one serves until then, and on failure",
    responses={422: {"model": ReloadFailure | ValidationErrorBody,
                     "description": "no such version (ReloadFailure), or a malformed body (field by field)"},
               500: {"model": ReloadFailure, "description": "the version cannot be served (incomplete, corrupt, "
                                                            "incompatible, fails its probe queries)"}},
)
async def reload(res: ResourcesDep, body: ReloadRequest | None = None):
    version = body.version if body is not None else None
    try:
        previous, current = await run_in_threadpool(res.reload, version)
    except UnknownVersion as e:
        return JSONResponse(error_body(str(e), serving=res.version), status_code=422)
    except IndexLoadError as e:
        return JSONResponse(error_body(f"reload failed, the old version keeps serving: {e}", serving=res.version),
                            status_code=500)
    return {"previous": previous, "current": current}


@router.get("/versions", summary="The versions in the index root, which one CURRENT names, which one is served")
async def versions(res: ResourcesDep) -> dict:
    root = res.settings.index_dir
    try:
        current = read_current(root)
        current_error = None
    except IndexLoadError as e:
        current, current_error = None, str(e)
    return {
        "root": str(root),
        "current": current,
        "current_error": current_error,
        "serving": res.version,
        "versions": [{"version": v.name, "built_at": v.built_at, "chunks": v.chunks} for v in list_versions(root)],
        "last_reload": res.last_reload,
    }
