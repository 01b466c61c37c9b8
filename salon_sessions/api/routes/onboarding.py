"""What the onboarding page uses: the QR, a pairing code and the live WebSocket. Each takes
the admin token or the company's own onboarding token. The WebSocket route authenticates
and says what a connection opens with; serving it is `api.ws_transport`'s."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Response, WebSocket

from salon_sessions.api import live, qr
from salon_sessions.api.auth import bearer_from_headers, bearer_from_subprotocols
from salon_sessions.api.context import Context
from salon_sessions.api.deps import COMPANY_PATH_PATTERN, Company, CompanyAuth, Ctx
from salon_sessions.api.errors import ApiError, responses
from salon_sessions.api.models import PairingCodeRequest, PairingCodeView, read_phone
from salon_sessions.api.views import live_view, snapshot_message
from salon_sessions.api.ws_transport import Client
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id
from salon_sessions.core.resource import Phase

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sessions", tags=["onboarding"])

NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
_QR_RESPONSES = {
    200: {"content": {"image/png": {}, "image/svg+xml": {}},
          "description": "The current QR (it rotates; fetch again on each `qr` event)"},
    **responses(401, 403, 404, 409, 422, 503),
}


async def _current_qr(ctx: Context, company: str) -> str:
    state = await live.read_state(ctx.redis, company)
    if state is not None and state.linked:
        raise ApiError(409, "already_linked", "the session is already linked: no QR",
                       field="path.company_id")
    if state is not None and state.phase is Phase.LINK_EXPIRED:
        raise ApiError(409, "link_expired", "the onboarding expired without a link: no QR; "
                       "renew it first (POST /v1/sessions/{company_id}/link/renew)",
                       field="path.company_id")
    payload = await live.read_qr(ctx.redis, company)
    if payload is None:
        raise ApiError(404, "no_qr", "no QR yet: the worker has not published one (or it "
                       "expired); wait for the next `qr` event", field="path.company_id")
    return payload


def _qr_response(payload: str, kind: Literal["png", "svg"]) -> Response:
    if kind == "png":
        return Response(qr.png(payload), media_type="image/png", headers=NO_STORE)
    return Response(qr.svg(payload), media_type="image/svg+xml", headers=NO_STORE)


@router.get("/{company_id}/qr.png", response_class=Response, responses=_QR_RESPONSES,
            summary="The current QR as PNG")
async def qr_png(ctx: Ctx, company: Company, _: CompanyAuth) -> Response:
    return _qr_response(await _current_qr(ctx, company), "png")


@router.get("/{company_id}/qr.svg", response_class=Response, responses=_QR_RESPONSES,
            summary="The current QR as SVG")
async def qr_svg(ctx: Ctx, company: Company, _: CompanyAuth) -> Response:
    return _qr_response(await _current_qr(ctx, company), "svg")


async def _rate_limited(ctx: Context, company: str) -> None:
    """Pairing-code requests and cancellations share one limit per company (429)."""
    try:
        await ctx.rate.check(company)
    except ApiError:
        ctx.metrics.pairing_codes.labels("rate_limited").inc()
        raise


@router.post("/{company_id}/pairing-code", response_model=PairingCodeView,
             responses=responses(401, 403, 409, 413, 415, 422, 429, 503, 504),
             summary="Request an 8-character pairing code for a phone number")
async def pairing_code(ctx: Ctx, company: Company, _: CompanyAuth,
                       body: PairingCodeRequest) -> PairingCodeView:
    """While a code is pending, the same request returns the same code and expiry; a
    request for another number is refused (409 `pairing_code_pending`) until it expires, is
    cancelled (`DELETE .../pairing-code`) or the session is restarted with `force=true`.
    The number must be valid (`phonenumbers`); national formats are read with the server's
    `SALON_DEFAULT_REGION`, else the error (422 `body.phone`) shows the international form.
    Rate limited per company (429), together with cancellations."""
    phone = read_phone(body.phone, ctx.settings.default_region, "body.phone")  # not counted
    await _rate_limited(ctx, company)
    try:
        result = await live.command(ctx.redis, company, "pairing_code",
                                    ctx.settings.control_timeout_s, conflict_field="body.phone",
                                    phone=f"+{phone}")
    except ApiError as exc:
        ctx.metrics.pairing_codes.labels(exc.code).inc()
        raise
    ctx.metrics.pairing_codes.labels("ok").inc()
    expires = datetime.fromisoformat(str(result["expires_at"]))
    code = str(result["code"])
    left = max(0, int((expires - datetime.now(UTC)).total_seconds()))
    return PairingCodeView(code=code, display=f"{code[:4]}-{code[4:]}",
                           phone=str(result["phone"]), expires_at=expires, expires_in_s=left)


@router.delete("/{company_id}/pairing-code", status_code=204, response_class=Response,
               responses=responses(401, 403, 422, 429, 503, 504),
               summary="Cancel the pending pairing code (a mistyped number)")
async def cancel_pairing_code(ctx: Ctx, company: Company, _: CompanyAuth) -> Response:
    """Ends the pending code on the worker, so that a code for another number can be
    requested at once. 204 also when no code is pending (or the session is linked).
    Counted in the pairing-code rate limit (429)."""
    await _rate_limited(ctx, company)
    try:
        await live.command(ctx.redis, company, "cancel_pairing_code",
                           ctx.settings.control_timeout_s)
    except ApiError as exc:
        ctx.metrics.pairing_codes.labels(exc.code).inc()
        raise
    ctx.metrics.pairing_codes.labels("cancelled").inc()
    return Response(status_code=204, headers=NO_STORE)


# ---- WebSocket ------------------------------------------------------------------------

@router.websocket("/{company_id}/ws")
async def events(websocket: WebSocket, company_id: str) -> None:
    """First a `snapshot` of the current state, then every event of the company as
    `{"kind": "event", "event": {...v1 envelope...}}`, and `heartbeat`s. Auth: the
    `Authorization` header, or (browsers) the subprotocols `salon.v1, bearer.<token>`."""
    ctx: Context = websocket.app.state.ctx
    offered = list(websocket.scope.get("subprotocols") or [])
    try:
        company = _ws_company(company_id)
        token = bearer_from_subprotocols(offered) or bearer_from_headers(websocket.headers)
        ctx.auth.company(token, company)
        if ctx.hub.full(company):
            raise ApiError(429, "too_many_clients", "too many WebSocket clients for this "
                           "company", headers={"Retry-After": "5"})
    except ApiError as exc:
        await ctx.ws.refuse(websocket, exc)
        return

    async def snapshot(client: Client) -> str:
        view = await live_view(ctx.redis, client.company_id, ctx.settings.namespace, None)
        if view.live is not None and view.live.seq is not None:
            client.floor = view.live.seq
        return snapshot_message(view, ctx.settings.ws_heartbeat_s)

    await ctx.ws.serve(websocket, ctx.hub.register(company), snapshot)


def _ws_company(raw: str) -> str:
    if not re.fullmatch(COMPANY_PATH_PATTERN, raw):
        raise ApiError(422, "invalid", "invalid company id", field="path.company_id")
    try:
        return canonical_company_id(raw)
    except InvalidCompanyId as exc:
        raise ApiError(422, "invalid", f"invalid company id: {exc.why}",
                       field="path.company_id") from None
