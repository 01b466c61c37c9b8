"""FastAPI dependencies: the context, the company in the path, who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from salon_sessions.api.auth import Admin, Principal, bearer_from_headers
from salon_sessions.api.context import Context
from salon_sessions.api.errors import ApiError
from salon_sessions.api.kube import SessionResources
from salon_sessions.core.company import MAX_DIGITS, canonical_company_id

COMPANY_PATH_PATTERN = rf"^(company_)?[1-9][0-9]{{0,{MAX_DIGITS - 1}}}$"


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(context)]


def company_id(company_id: Annotated[str, Path(
        pattern=COMPANY_PATH_PATTERN, max_length=26,
        description="company_<digits>, or the legacy bare number (962302)",
        examples=["company_962302"])]) -> str:
    return canonical_company_id(company_id)


Company = Annotated[str, Depends(company_id)]


def admin(request: Request, ctx: Ctx) -> Admin:
    return ctx.auth.admin(bearer_from_headers(request.headers))


def for_company(request: Request, ctx: Ctx, company: Company) -> Principal:
    """The admin, or an onboarding token of exactly this company."""
    return ctx.auth.company(bearer_from_headers(request.headers), company)


AdminAuth = Annotated[Admin, Depends(admin)]
CompanyAuth = Annotated[Principal, Depends(for_company)]


def kube(ctx: Ctx) -> SessionResources:
    if ctx.kube is None:
        raise ApiError(503, "kubernetes_unconfigured",
                       "session management needs a Kubernetes API (no kubeconfig, not in a "
                       "cluster)")
    return ctx.kube


Kube = Annotated[SessionResources, Depends(kube)]
