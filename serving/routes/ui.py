"""GET /ui: the live page (shop + operations), plain HTML/JS/CSS shipped in the package; GET / leads there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(tags=["ui"])
STATIC_DIR = Path(__file__).resolve().parents[1] / "ui" / "static"
STATIC_PATH = "/ui/static"
# Only our own files may run or load: no CDN, no inline script, nothing rendered can call out.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui", response_class=HTMLResponse, summary="Live page: shop and operations views")
async def page() -> HTMLResponse:
    """A shop whose clicks go through POST /events and Kafka, with the recommendations they lead to,
    and a live operations view; no build step, no third-party assets."""
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=SECURITY_HEADERS)
