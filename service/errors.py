"""Errors: the core's own exceptions mapped to HTTP in one place. Bad input → 4xx with a clear message."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.tokens import UnknownEncoding
from service.retrieval import UnknownFilter

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """Input that passed the schema but cannot be served (too long, blank, budget too small…)."""

    def __init__(self, loc: list[str], message: str, type_: str = "value_error") -> None:
        super().__init__(message)
        self.loc, self.message, self.type = loc, message, type_


class NotReady(RuntimeError):
    pass


def _error(loc: list, msg: str, type_: str) -> dict:
    return {"loc": loc, "msg": msg, "type": type_}


def _summary(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", []) if x not in ("body", "query"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


def _validation_response(errors: list[dict], status: int = 422) -> JSONResponse:
    clean = [{k: v for k, v in e.items() if k in ("loc", "msg", "type", "ctx")} for e in errors]
    body = {"detail": jsonable_encoder(clean), "message": _summary(clean)}
    return JSONResponse(body, status_code=status)


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

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)
