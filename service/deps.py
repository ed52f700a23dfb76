"""FastAPI dependencies: the serving state, the snapshot a request is served from, and authentication.

`ReadyDep` is what the read endpoints (/v1/search, /v1/ask, /v1/index) depend on: it checks the API key
(when `REPORTQA_API_KEYS` is set) and then takes the current snapshot once, refusing with 503 while there is
none. `AdminDep` guards /v1/admin/*: off (404) without `REPORTQA_ADMIN_TOKEN`, 401 without a bearer token,
403 with a wrong one. Tokens and keys are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.config import Settings
from service.errors import NotReady
from service.metrics import Metrics
from service.state import Resources, Snapshot

ADMIN_OFF = "the admin endpoints are off; set REPORTQA_ADMIN_TOKEN to enable them"


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _matches(given: str, secrets: list[str]) -> bool:
    ok = False
    for s in secrets:  # every key is compared, so the time does not tell which one came close
        ok |= hmac.compare_digest(given.encode("utf-8"), s.encode("utf-8"))
    return ok


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def check_api_key(request: Request) -> None:
    keys = _settings(request).api_key_list()
    if not keys:
        return
    given = bearer_token(request) or request.headers.get("x-api-key", "").strip()
    if not given:
        raise _unauthorized("an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
    if not _matches(given, keys):
        raise HTTPException(status_code=403, detail="the API key is not valid")


async def get_ready(request: Request) -> Snapshot:
    """The snapshot this request is served from, taken once: a reload meanwhile does not affect it."""
    check_api_key(request)
    res: Resources = request.app.state.resources
    snapshot = res.snapshot
    if snapshot is not None:
        return snapshot
    if res.status == "error":
        raise NotReady(f"the service cannot serve: {res.error}")
    raise NotReady("the index is still loading; retry shortly (GET /readyz says when it is ready)")


async def require_admin(request: Request) -> None:
    token = _settings(request).admin_token_value()
    if token is None:
        raise HTTPException(status_code=404, detail=ADMIN_OFF)
    given = bearer_token(request)
    if given is None:
        raise _unauthorized("admin endpoints need Authorization: Bearer <REPORTQA_ADMIN_TOKEN>")
    if not _matches(given, [token]):
        raise HTTPException(status_code=403, detail="the admin token is not valid")


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ResourcesDep = Annotated[Resources, Depends(get_resources)]
ReadyDep = Annotated[Snapshot, Depends(get_ready)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Depends(require_admin)
