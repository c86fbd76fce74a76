"""GET /: the upload page (self-contained: assets under /static, no CDN)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])
ASSETS = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def _page() -> str:
    return (ASSETS / "templates" / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, summary="Upload a CSV and see the scored rows")
async def index() -> HTMLResponse:
    return HTMLResponse(_page())
