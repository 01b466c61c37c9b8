"""The admin console (`/admin`), the paged list of every session and the console's one
WebSocket (`/v1/admin/ws`), all fed by `fleet.Fleet`. Admin token only."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from salon_sessions.api.auth import bearer_from_headers, bearer_from_subprotocols
from salon_sessions.api.context import Context
from salon_sessions.api.deps import COMPANY_PATH_PATTERN, AdminAuth, Ctx
from salon_sessions.api.errors import ApiError, responses
from salon_sessions.api.fleet import Fleet, sort_key
from salon_sessions.api.hub import ADMIN
from salon_sessions.api.routes.page import SECURITY_HEADERS
from salon_sessions.api.ws_transport import Client
from salon_sessions.core.company import canonical_company_id

router = APIRouter(tags=["admin"])
PAGE = Path(__file__).resolve().parent.parent / "admin" / "index.html"
PHASE_PATTERN = r"^[A-Z][A-Za-z]{0,39}$"


class SessionRow(BaseModel):
    """One salon as the console shows it (the phone is masked)."""

    company_id: str
    name: str | None = None
    display_name: str | None = None
    phase: str = Field(description="the live phase when a worker reports, else the operator's; "
                       "Pending before the operator wrote any status")
    linked: bool
    connected: bool
    phone: str | None = Field(default=None, description="all but the last 4 digits masked",
                              examples=["•••••••4488"])
    last_connected_at: str | None = None
    worker_healthy: bool | None = Field(default=None, description=(
        "the WorkerHealthy condition: true, false, null while unknown"))
    worker_reason: str | None = None
    worker_live: bool = Field(description="a worker's state hash is present (it heartbeats)")
    reason: str | None = Field(default=None, description="WhatsApp's reason for the state "
                               "(`live.reason`)")
    pairing_code_pending: bool = False
    link_method: str = "qr"
    suspended: bool = False
    created_at: str | None = None
    deleting: bool = False


class SessionList(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "sessions": [{"company_id": "company_962302", "name": "company-962302",
                      "display_name": "Salon Aurora", "phase": "Connected", "linked": True,
                      "connected": True, "phone": "•••••••4488",
                      "last_connected_at": "2026-11-29T10:03:00Z", "worker_healthy": True,
                      "worker_reason": "PongReceived", "worker_live": True,
                      "link_method": "qr"}],
        "total": 1, "next_after": None}]}}

    sessions: list[SessionRow]
    total: int = Field(description="sessions matching the filter, all pages together")
    next_after: str | None = Field(description="pass as `after` for the next page; null on "
                                   "the last")


@cache
def _html() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/admin", response_class=HTMLResponse, include_in_schema=True,
            responses={200: {"content": {"text/html": {}}}}, summary="The admin console")
async def admin_page() -> HTMLResponse:
    """Every salon live, with the operator's actions. The page needs no token; it asks for
    the admin token once and keeps it in the tab's session storage."""
    return HTMLResponse(_html(), headers=SECURITY_HEADERS)


async def _synced_fleet(ctx: Context) -> Fleet:
    if ctx.fleet is None:
        raise ApiError(503, "kubernetes_unconfigured",
                       "the session list needs a Kubernetes API (no kubeconfig, not in a "
                       "cluster)")
    ctx.fleet.ensure_started()
    try:
        async with asyncio.timeout(ctx.settings.kube_timeout_s):
            await ctx.fleet.synced.wait()
    except TimeoutError:
        raise ApiError(503, "kubernetes_unavailable",
                       "the SalonSessions could not be listed in time") from None
    return ctx.fleet


@router.get("/v1/sessions", response_model=SessionList, tags=["sessions"],
            responses=responses(401, 403, 422, 503),
            summary="Every session, paged (admin)")
async def list_sessions(
        ctx: Ctx, _: AdminAuth,
        phase: Annotated[str | None, Query(pattern=PHASE_PATTERN, description=(
            "only this phase (Connected, AwaitingLink, LoggedOut, ...)"))] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 100,
        after: Annotated[str | None, Query(pattern=COMPANY_PATH_PATTERN, max_length=26,
                                           description="the previous page's `next_after`")
                         ] = None) -> SessionList:
    """In company id order (numeric), from the API's own view of the SalonSessions and
    their workers (the one the console shows). Phones are masked."""
    fleet = await _synced_fleet(ctx)
    order = fleet.ordered()
    if phase is not None:
        order = [c for c in order if fleet.rows[c]["phase"] == phase]
    start = 0
    if after is not None:
        cursor = sort_key(canonical_company_id(after))
        start = next((i for i, c in enumerate(order) if sort_key(c) > cursor), len(order))
    page = order[start:start + limit]
    more = start + limit < len(order)
    return SessionList(sessions=[SessionRow.model_validate(fleet.rows[c]) for c in page],
                       total=len(order), next_after=page[-1] if more and page else None)


@router.websocket("/v1/admin/ws")
async def admin_events(websocket: WebSocket) -> None:
    """First a `snapshot` of every session (`{"kind": "snapshot", "rev", "sessions":
    [...]}`), then `{"kind": "changes", "rev", "sessions": [changed rows], "removed":
    [company ids]}` (a lone change at once, then at most every 0.2 s), and `heartbeat`s.
    Admin token only: the `Authorization` header or the subprotocols `salon.v1,
    bearer.<token>`."""
    ctx: Context = websocket.app.state.ctx
    offered = list(websocket.scope.get("subprotocols") or [])
    try:
        token = bearer_from_subprotocols(offered) or bearer_from_headers(websocket.headers)
        ctx.auth.admin(token)
        if ctx.hub.full(ADMIN):
            raise ApiError(429, "too_many_clients", "too many admin consoles",
                           headers={"Retry-After": "5"})
        fleet = await _synced_fleet(ctx)
    except ApiError as exc:
        await ctx.ws.refuse(websocket, exc)
        return
    client = ctx.hub.register(ADMIN)
    snapshot = fleet.snapshot_message(ctx.settings.ws_heartbeat_s)  # no await in between

    async def opening(_: Client) -> str:
        return snapshot

    await ctx.ws.serve(websocket, client, opening)
