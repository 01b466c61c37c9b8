"""The onboarding page (static HTML, JS and CSS; the token travels in the URL fragment)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from salon_sessions.api.deps import Company
from salon_sessions.api.errors import responses

router = APIRouter(tags=["page"])
PAGE = Path(__file__).resolve().parent.parent / "page" / "index.html"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@cache
def _html() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/onboarding/{company_id}", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}}}, **responses(422)},
            summary="The onboarding page of a company")
async def onboarding_page(company: Company) -> HTMLResponse:
    """Open it with the link from `POST /v1/sessions/{company_id}/tokens`
    (`/onboarding/company_962302#token=...`). The page itself needs no token; everything
    it loads does. `?lang=ru|en` picks the language (default: the browser's)."""
    return HTMLResponse(_html(), headers=SECURITY_HEADERS)
