"""Swagger UI at /docs and ReDoc at /redoc from local assets (the PyPI package fastapi-offline ships Swagger
UI's bundle and ReDoc's standalone script): no CDN, so the pages work offline and load no third-party code.
Each page gets a CSP that allows its own inline start-up script by hash."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.middleware import docs_csp

ASSETS_URL = "/docs-assets"


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def _page(html: HTMLResponse) -> HTMLResponse:
    return HTMLResponse(html.body, headers={"Content-Security-Policy": docs_csp(bytes(html.body)),
                                            "Cache-Control": "no-cache"})


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add the two pages (the app must be created with docs_url=None, redoc_url=None)."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return _page(get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{title} — API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png"))

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return _page(get_redoc_html(openapi_url=app.openapi_url, title=f"{title} — API reference",
                                    redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                                    redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False))

    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
