"""The FastAPI app factory: wires settings, resources, routes, errors and metrics. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from indexer import __version__
from indexer.embed import Embedder
from service.config import Settings
from service.errors import install_error_handlers
from service.metrics import Metrics, MetricsMiddleware
from service.routes import admin, ask, ops, page, search
from service.state import Resources, install_sighup

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, embedder: Embedder | None = None,
               background_load: bool = True) -> FastAPI:
    """Build the app. The model and index load in the lifespan, on a worker thread when `background_load`
    (so /healthz and /readyz answer during the load), else before the app takes requests."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        resources = Resources(settings, embedder)
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

    app = FastAPI(title="reportqa", version=__version__, lifespan=lifespan,
                  description="Semantic search and extractive question answering with precise citations.")
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.settings = settings
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(search.router)
    app.include_router(ask.router)
    app.include_router(admin.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
