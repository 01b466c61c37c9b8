"""The onboarding page (static HTML, JS and CSS; the token travels in the URL fragment).

The route fills in what the page cannot know by itself, as `<meta>` tags (no inline script:
the CSP forbids it): the canonical company id (empty for a malformed link, which gets the
same friendly "not valid" page with 404, never raw JSON), and the phone-number hints of the
configured default region (`SALON_DEFAULT_REGION`)."""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from salon_sessions.api.deps import COMPANY_PATH_PATTERN, Ctx
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id
from salon_sessions.core.phone import phone_example

router = APIRouter(tags=["page"])
PAGE_DIR = Path(__file__).resolve().parent.parent / "page"
PAGE = PAGE_DIR / "index.html"
FAVICON = PAGE_DIR / "favicon.svg"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_META = re.compile(r'<meta name="(salon-[a-z-]+)" content="">')


@cache
def _html() -> str:
    return PAGE.read_text(encoding="utf-8")


def render_page(company: str, region: str | None) -> str:
    """index.html with its `salon-*` meta tags filled in (HTML-escaped): the company, the
    default region (`""` when unset: international numbers only) and an example number in
    the form the API accepts with it."""
    values = {"salon-company": company, "salon-phone-region": region or "",
              "salon-phone-example": phone_example(region)}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return f'<meta name="{name}" content="{html.escape(values.get(name, ""))}">'

    return _META.sub(fill, _html())


def _company_or_empty(raw: str) -> str:
    if len(raw) > 26 or not re.fullmatch(COMPANY_PATH_PATTERN, raw):
        return ""
    try:
        return canonical_company_id(raw)
    except InvalidCompanyId:
        return ""


# Not in the OpenAPI document: an HTML page for people, not an API operation (and a
# malformed link gets the page too, not the JSON error every operation documents).
@router.get("/onboarding/{company_id}", response_class=HTMLResponse, include_in_schema=False)
async def onboarding_page(ctx: Ctx, company_id: str) -> HTMLResponse:
    """Open it with the link from `POST /v1/sessions/{company_id}/tokens`
    (`/onboarding/company_962302#token=...`). The page itself needs no token; everything
    it loads does. `?lang=ru|en` picks the language (default: the browser's)."""
    company = _company_or_empty(company_id)
    return HTMLResponse(render_page(company, ctx.settings.default_region),
                        status_code=200 if company else 404, headers=SECURITY_HEADERS)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers ask for it whether the page links an icon or not; the same SVG mark."""
    return FileResponse(FAVICON, media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})
