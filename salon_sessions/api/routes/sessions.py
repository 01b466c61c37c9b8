"""Management of SalonSessions (admin) and their status (admin or the company's token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status

from salon_sessions.api import live
from salon_sessions.api.deps import AdminAuth, Company, CompanyAuth, Ctx, Kube
from salon_sessions.api.errors import ApiError, responses
from salon_sessions.api.kube import KubeError, SpecRejected
from salon_sessions.api.models import (
    LogoutView,
    RenewView,
    RestartView,
    SessionCreate,
    SessionView,
    TokenRequest,
    TokenView,
    read_phone,
)
from salon_sessions.api.views import live_view
from salon_sessions.core.events import LinkMethod
from salon_sessions.core.resource import Phase

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def kube_error(exc: KubeError) -> ApiError:
    """What a caller sees of a failed SalonSession call: the schema's refusal is the
    caller's (422 on the body), anything else the cluster's (503). `api.app` has every
    route answer a `KubeError` with it (`errors.translate`)."""
    if isinstance(exc, SpecRejected):
        return ApiError(422, "invalid", exc.message, field="body")
    return ApiError(503, "kubernetes_unavailable", exc.message)


@router.post("", status_code=201, response_model=SessionView,
             responses={200: {"model": SessionView, "description": "It existed: returned as is"},
                        **responses(401, 403, 413, 415, 422, 503)},
             summary="Create the session of a company, or get it if it exists")
async def create_session(ctx: Ctx, _: AdminAuth, kube: Kube, response: Response,
                         body: SessionCreate) -> SessionView:
    """Creates the company's SalonSession (named `company-<digits>`); idempotent: when it
    exists it is returned unchanged with 200. Legacy company ids (`962302`) are accepted and
    stored canonically."""
    if body.link_method is LinkMethod.PAIRING_CODE and body.phone_number is None:
        raise ApiError(422, "invalid", "phone_number is required when link_method is "
                       "pairingCode", field="body.phone_number")
    spec: dict[str, Any] = {
        "link": {"method": body.link_method.value},
        "driver": (body.driver or ctx.settings.default_driver).value,
    }
    if body.phone_number is not None:
        spec["link"]["phoneNumber"] = read_phone(body.phone_number, ctx.settings.default_region,
                                                 "body.phone_number")
    if body.display_name is not None:
        spec["displayName"] = body.display_name
    obj, created = await kube.create(body.company_id, spec)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await live_view(ctx.redis, body.company_id, kube.namespace, obj, created)


@router.get("/{company_id}", response_model=SessionView,
            responses=responses(401, 403, 404, 422, 503),
            summary="Status of a company's session")
async def get_session(ctx: Ctx, company: Company, _: CompanyAuth) -> SessionView:
    """From the SalonSession (spec, operator status) and the worker's live state in Redis."""
    obj = await ctx.kube.get(company) if ctx.kube is not None else None
    namespace = ctx.settings.namespace
    view = await live_view(ctx.redis, company, namespace, obj)
    if obj is None and view.live is None:
        raise ApiError(404, "not_found", f"no session for {company}", field="path.company_id")
    return view


@router.delete("/{company_id}", status_code=204, response_class=Response,
               responses=responses(401, 403, 404, 422, 503),
               summary="Delete a company's session")
async def delete_session(company: Company, _: AdminAuth, kube: Kube) -> Response:
    """Deletes the SalonSession; the operator's finalizer removes the worker and (unless
    `deletionPolicy: Retain`) the credentials."""
    if not await kube.delete(company):
        raise ApiError(404, "not_found", f"no session for {company}", field="path.company_id")
    return Response(status_code=204)


@router.post("/{company_id}/restart", response_model=RestartView,
             responses=responses(401, 403, 409, 422, 503, 504),
             summary="Restart the session's WhatsApp connection")
async def restart_session(ctx: Ctx, company: Company, _: AdminAuth,
                          force: bool = Query(default=False, description=(
                              "discard a pending pairing code; without it the restart is "
                              "refused (409) while a code is pending"))) -> RestartView:
    result = await live.command(ctx.redis, company, "restart", ctx.settings.control_timeout_s,
                                conflict_field="query.force", force=force)
    return RestartView(restarting=bool(result.get("restarting")))


@router.post("/{company_id}/logout", response_model=LogoutView,
             responses=responses(401, 403, 422, 503, 504),
             summary="Log the device out (the phone must link again)")
async def logout_session(ctx: Ctx, company: Company, _: AdminAuth) -> LogoutView:
    result = await live.command(ctx.redis, company, "logout", ctx.settings.control_timeout_s)
    return LogoutView(logged_out=bool(result.get("logged_out")))


@router.post("/{company_id}/link/renew", status_code=202, response_model=RenewView,
             responses=responses(401, 403, 404, 409, 422, 429, 503, 504),
             summary="Renew the onboarding: linking goes on for another expireAfter")
async def renew_link(ctx: Ctx, company: Company, _: CompanyAuth) -> RenewView:
    """An onboarding ends when `spec.link.expireAfter` (default 30 minutes) passes without
    a link: the worker stops asking WhatsApp for QR codes and pairing codes and the phase
    is `LinkExpired`. This resumes it: QR codes come again (a new `qr` event) and it ends
    `expireAfter` from now; called before the end, it moves the end. **409**
    `already_linked` when a device is linked, **404** `not_found` without a SalonSession,
    **503** `no_worker` when no worker runs for it (suspended, starting). Counts against the
    company's pairing-code rate limit (**429** with `Retry-After`)."""
    if ctx.kube is not None and await ctx.kube.get(company) is None:
        raise ApiError(404, "not_found", f"no session for {company}", field="path.company_id")
    await ctx.rate.check(company)
    result = await live.command(ctx.redis, company, "renew_link",
                                ctx.settings.control_timeout_s)
    return RenewView(phase=Phase(str(result["phase"])),
                     expires_at=datetime.fromisoformat(str(result["expires_at"])))


@router.post("/{company_id}/tokens", status_code=201, response_model=TokenView,
             responses=responses(401, 403, 404, 413, 415, 422, 503),
             summary="Issue an onboarding token and link for a company")
async def issue_token(request: Request, ctx: Ctx, company: Company, _: AdminAuth, kube: Kube,
                      body: Annotated[TokenRequest | None, Body()] = None) -> TokenView:
    """A company-scoped token (valid for this company only, until it expires) and the
    onboarding link that carries it in its fragment. 404 `not_found` when the company has
    no SalonSession: a link is only issued for a session that exists."""
    signer = ctx.auth.signer
    if signer is None:
        raise ApiError(503, "auth_unconfigured", "onboarding tokens are not configured")
    if await kube.get(company) is None:
        raise ApiError(404, "not_found", f"no session for {company}", field="path.company_id")
    ttl = (body.ttl_s if body is not None else None) or ctx.settings.token_ttl_s
    token, expires = signer.issue(company, ttl)
    base = (ctx.settings.public_url or str(request.base_url)).rstrip("/")
    return TokenView(company_id=company, token=token, expires_at=expires,
                     onboarding_url=f"{base}/onboarding/{company}#token={token}")
