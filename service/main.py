"""The FastAPI app factory: wires settings, resources, routes, errors, limits and metrics. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from indexer import __version__
from indexer.embed import Embedder
from service.config import Settings
from service.errors import METHOD_NOT_ALLOWED, install_error_handlers
from service.limits import Limiter
from service.metrics import Metrics, MetricsMiddleware
from service.middleware import AdmissionMiddleware, BodyLimitMiddleware, HostCheckMiddleware, SecurityHeadersMiddleware
from service.response_cache import ResponseCache
from service.routes import admin, ask, ops, page, search
from service.routes.docs import install_docs
from service.state import Resources, install_sighup

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, embedder: Embedder | None = None,
               background_load: bool = True) -> FastAPI:
    """Build the app. The model and index load in the lifespan, on a worker thread when `background_load`
    (so /healthz and /readyz answer during the load), else before the app takes requests."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.limiter = Limiter(settings.max_concurrency, settings.max_queue, settings.queue_timeout_s,
                                    settings.rate_limit, settings.rate_burst, metrics)
        resources = Resources(settings, embedder,
                              on_reload=lambda ok: metrics.count("reload", "ok" if ok else "failed"))
        app.state.resources = resources
        first = asyncio.get_running_loop().run_in_executor(None, resources.load)
        if not background_load:
            await first
        loading = asyncio.create_task(resources.keep_loading(first))  # retries with backoff until served
        remove_sighup = install_sighup(resources)  # SIGHUP → reload (main thread only)
        yield
        if remove_sighup is not None:
            remove_sighup()
        loading.cancel()
        with suppress(asyncio.CancelledError):
            await loading
        if resources.backend is not None:  # Qdrant: release the client (local mode on disk holds a lock)
            resources.backend.close()

    app = FastAPI(title="reportqa", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Semantic search and extractive question answering with precise citations.")
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.response_cache = ResponseCache(settings.response_cache)
    # outermost last: metrics see every response, headers go on every response (413s included)
    app.add_middleware(AdmissionMiddleware, paths=frozenset({"/v1/search", "/v1/ask"}))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s,
                       metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"], max_age=600)
    app.add_middleware(HostCheckMiddleware, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(search.router)
    app.include_router(ask.router)
    app.include_router(admin.router)
    app.include_router(page.router)
    if settings.docs:
        install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = _openapi_with_limits(app, settings)
    return app


def _openapi_with_limits(app: FastAPI, settings: Settings):
    """The schema's maxLength/maxItems are hard ceilings; /openapi.json shows the configured limits instead."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        props = {name: c.get("properties", {}) for name, c in schema.get("components", {}).get("schemas", {}).items()}
        limits = [("SearchRequest", "query", "maxLength", settings.max_query_chars),
                  ("AskRequest", "question", "maxLength", settings.max_query_chars),
                  ("AskRequest", "history", "maxItems", settings.max_history_turns),
                  ("Turn", "content", "maxLength", settings.max_history_chars)]
        for model, field, key, value in limits:
            if field in props.get(model, {}):
                props[model][field][key] = value
        for param in schema.get("paths", {}).get("/v1/search", {}).get("get", {}).get("parameters", []):
            if param.get("name") == "q":
                param["schema"]["maxLength"] = settings.max_query_chars
        for operations in schema.get("paths", {}).values():  # any path answers another method with a 405
            for op in operations.values():
                op.setdefault("responses", {}).setdefault("405", METHOD_NOT_ALLOWED)
        app.openapi_schema = schema
        return schema

    return openapi
