"""Errors: the core's own exceptions mapped to HTTP in one place. Bad input → 4xx with a clear message."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.tokens import UnknownEncoding
from service.limits import Overloaded, RateLimited
from service.retrieval import QueryTooLong, UnknownFilter
from service.schemas import ErrorBody, ValidationErrorBody

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """Input that passed the schema but cannot be served (too long, blank, budget too small…)."""

    def __init__(self, loc: list[str], message: str, type_: str = "value_error") -> None:
        super().__init__(message)
        self.loc, self.message, self.type = loc, message, type_


class NotReady(RuntimeError):
    pass


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(value: Any) -> Any:
    """Lone surrogates (from JSON escapes) replaced by U+FFFD, so that an error that quotes the input can
    still be sent as UTF-8 (it would otherwise fail to encode: a 500 and a broken connection)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request: a body that is not UTF-8 JSON, or a Host header "
          "that is not served (REPORTQA_ALLOWED_HOSTS)"},
    408: {"model": ErrorBody, "description": "The request body did not arrive in time (REPORTQA_BODY_TIMEOUT_S)"},
    401: {"model": ErrorBody, "description": "No credentials: REPORTQA_API_KEYS is set (read endpoints) or the "
          "admin endpoints need the bearer token", "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    403: {"model": ErrorBody, "description": "The API key or admin token is not valid"},
    404: {"model": ErrorBody, "description": "Not found (the admin endpoints are off without REPORTQA_ADMIN_TOKEN)"},
    413: {"model": ErrorBody, "description": "The request body is over REPORTQA_MAX_BODY_BYTES"},
    422: {"model": ValidationErrorBody, "description": "Bad input: `message` says what is wrong"},
    429: {"model": ErrorBody, "description": "Per-client rate limit exceeded (REPORTQA_RATE_LIMIT)",
          "headers": _RETRY_AFTER},
    503: {"model": ErrorBody, "description": "Not ready (index loading or unloadable), or overloaded",
          "headers": _RETRY_AFTER},
}
METHOD_NOT_ALLOWED = {"description": "This path does not take this method; `Allow` lists the ones it takes",
                      "headers": {"Allow": {"schema": {"type": "string"}}},
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route can return, for its OpenAPI description (`responses=` on the route)."""
    return {code: _RESPONSES[code] for code in codes}


def allowed_methods(request: Request, allow: str) -> str:
    """`allow` (what the router says: the methods of the first route at this path) plus what the API documents
    for the path (e.g. GET and POST /v1/search are two routes)."""
    methods = {m.strip() for m in allow.split(",") if m.strip()}
    documented = request.app.openapi().get("paths", {}).get(request.url.path, {})
    methods |= {m.upper() for m in documented if m.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def error_body(detail: str, **extra: Any) -> dict:
    """The body of every error but a 422: `detail` (as FastAPI writes it) and `message`, the same sentence, the
    field a client reads for any error (a 422 has `message` too, summarizing its field-by-field `detail`)."""
    return {"detail": detail, "message": detail, **extra}


def _error(loc: list, msg: str, type_: str) -> dict:
    return {"loc": loc, "msg": msg, "type": type_}


def _summary(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        where = list(e.get("loc", []))
        if e.get("type") == "json_invalid":  # loc is ("body", character offset); ctx says what is wrong there
            at = where[1] if len(where) > 1 else "?"
            cause = (e.get("ctx") or {}).get("error")
            parts.append(f"the body is not valid JSON (at character {at}{': ' + str(cause) if cause else ''})")
            continue
        if where[:1] in (["body"], ["query"]) and len(where) > 1:  # the part of the request, not the field
            where = where[1:]
        loc = ".".join(str(x) for x in where)
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


def _validation_response(errors: list[dict], status: int = 422) -> JSONResponse:
    kept = [{k: v for k, v in e.items() if k in ("loc", "msg", "type", "ctx")} for e in errors]
    body = {"detail": jsonable_encoder(kept), "message": _summary(kept)}
    return JSONResponse(clean(body), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return _validation_response(list(exc.errors()))

    @app.exception_handler(BadInput)
    async def _bad(_: Request, exc: BadInput):
        return _validation_response([_error(exc.loc, exc.message, exc.type)])

    @app.exception_handler(UnknownFilter)
    async def _filter(_: Request, exc: UnknownFilter):
        return _validation_response([_error(["filters", exc.field], str(exc), "unknown_filter")])

    @app.exception_handler(UnknownEncoding)
    async def _encoding(_: Request, exc: UnknownEncoding):
        return _validation_response([_error(["body", "encoding"], str(exc), "unknown_encoding")])

    @app.exception_handler(QueryTooLong)
    async def _too_long(request: Request, exc: QueryTooLong):
        if request.url.path.endswith("/ask"):
            loc = ["body", "question"]
            hint = (" A follow-up question is searched together with the last user turns of `history`: when "
                    "those make it too long, send shorter turns.")
        else:
            loc = ["query", "q"] if request.method == "GET" else ["body", "query"]
            hint = " Or search with mode=lexical, which does not embed the query."
        message = str(exc) + hint
        return _validation_response([_error(loc, message, "query_too_long_for_model")])

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded):
        return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited):
        return JSONResponse(error_body(str(exc)), status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady):
        return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.get("Allow", ""))
        return JSONResponse(clean(error_body(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error; the server log has the details"), status_code=500)
