"""The search page at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
INDEX_HTML = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/")
def page() -> FileResponse:
    return FileResponse(INDEX_HTML, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
