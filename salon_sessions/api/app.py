"""The FastAPI application: `create_app(settings)`.

The lifespan opens one Redis client, one shared Redis subscription (the bus), a small
PostgreSQL pool (readiness only) and the Kubernetes client, and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, CollectorRegistry

from salon_sessions import __version__
from salon_sessions.api import errors
from salon_sessions.api.auth import Authenticator, TokenSigner
from salon_sessions.api.bus import Bus
from salon_sessions.api.context import Context
from salon_sessions.api.fleet import Fleet
from salon_sessions.api.hub import Hub
from salon_sessions.api.kube import KubeError, SessionResources
from salon_sessions.api.live import RedisUnavailable, redis_error
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.middleware import AccessLog, RequestLimits
from salon_sessions.api.ratelimit import PairingRateLimit
from salon_sessions.api.routes import admin, health, onboarding, page, sessions
from salon_sessions.api.views import live_view, snapshot_message
from salon_sessions.api.ws_transport import Transport
from salon_sessions.core.events import Event
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.settings import ApiSettings
from salon_sessions.core.subscriber import Gap
from salon_sessions.db.connections import create_pool

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).resolve().parent / "page"
DOCS_DIR = Path(__file__).resolve().parent / "apidocs"
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
"""Swagger UI's and ReDoc's JavaScript and CSS, from the `fastapi-offline` package: the docs
work where no CDN can be reached (an air-gapped cluster)."""
BEARER_SCHEME = "bearerAuth"
DOCS_HEADERS = {
    "Cache-Control": "no-store",
    # as the onboarding page's, plus inline styles (ReDoc's styled-components and Swagger
    # UI set them from their scripts) and ReDoc's search worker (a blob: URL it creates)
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
ADMIN_DIR = Path(__file__).resolve().parent / "admin"

DESCRIPTION = """\
Onboarding API of salon-sessions: create a salon's WhatsApp session, follow it live, link
the salon's phone by QR or pairing code.

**Auth.** Management calls take the admin token (`Authorization: Bearer <admin token>`;
**Authorize** in `/docs` sets it for the calls tried from there).
The onboarding page, the QR, the pairing code, the status and the WebSocket also take a
company-scoped onboarding token (`POST /v1/sessions/{company_id}/tokens`), valid for its
company only (403 for any other) until it expires (401 after). Errors are JSON:
`{"error": {"code", "message", "field"}}`.
"""


def create_app(settings: ApiSettings, *, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    metrics = ApiMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await _start(settings, metrics)
        app.state.ctx = ctx
        try:
            yield
        finally:
            await _stop(ctx)

    app = FastAPI(title="salon-sessions onboarding API", version=__version__,
                  description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)
    errors.install(app)
    errors.translate(app, KubeError, sessions.kube_error)
    errors.translate(app, RedisUnavailable, redis_error)
    _install_docs(app)
    app.include_router(sessions.router)
    app.include_router(onboarding.router)
    app.include_router(health.router)
    app.include_router(page.router)
    app.include_router(admin.router)
    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")
    app.mount("/admin/static", StaticFiles(directory=ADMIN_DIR), name="admin-static")
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, metrics=metrics)
    return app


@cache
def _docs_html(name: str) -> str:
    return (DOCS_DIR / name).read_text(encoding="utf-8")


def _install_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from this server: our own HTML (no inline script;
    the init code is in `apidocs/*.js`) with the assets of the `fastapi-offline` package;
    and a bearer security scheme on every operation that takes a token (those that document
    a 401), so that Swagger UI's Authorize applies to them."""
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/docs/ui", StaticFiles(directory=DOCS_DIR), name="docs-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_docs_html("swagger.html"), headers=DOCS_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(_docs_html("redoc.html"), headers=DOCS_HEADERS)

    errors.amend_openapi(app, _add_bearer_scheme)


def _add_bearer_scheme(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "the admin token (`SALON_ADMIN_TOKEN`), or a company's onboarding "
                       "token (`POST /v1/sessions/{company_id}/tokens`) for its own calls"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{BEARER_SCHEME: []}]


async def _start(settings: ApiSettings, metrics: ApiMetrics) -> Context:
    redis = connect_redis(settings.redis_url, max_connections=settings.redis_max_connections,
                          pool_timeout_s=settings.redis_pool_timeout_s, client_name="salon-api")
    secret = settings.token_secret.get_secret_value() if settings.token_secret else None
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if admin is None:
        log.warning("no admin token configured: management calls are refused")
    auth = Authenticator(admin, TokenSigner(secret.encode()) if secret else None)
    kube = await SessionResources.connect(settings.kubeconfig, settings.namespace,
                                          settings.kube_timeout_s)

    async def snapshot(company_id: str) -> str:
        view = await live_view(redis, company_id, settings.namespace, None)
        return snapshot_message(view, settings.ws_heartbeat_s)

    hub = Hub(metrics, queue_size=settings.ws_queue_size, heartbeat_s=settings.ws_heartbeat_s,
              max_per_company=settings.ws_max_clients_per_company, snapshot=snapshot,
              send_timeout_s=settings.ws_send_timeout_s)

    fleet = Fleet(kube, redis, hub.broadcast_admin) if kube is not None else None

    def on_event(event: Event) -> None:
        hub.route(event)
        if fleet is not None:
            fleet.note(event)

    async def on_gap(gap: Gap) -> None:
        if fleet is not None:
            fleet.restate()
        await hub.restate()

    bus = Bus(redis, metrics, on_event, on_gap)
    pg = await create_pool(settings.database_url, "salon-api", pooler=settings.database_pooler,
                           max_size=2, idle_s=300.0, timeout=3, command_timeout=3)
    ctx = Context(settings=settings, redis=redis, metrics=metrics, auth=auth, kube=kube,
                  hub=hub, bus=bus, rate=PairingRateLimit(redis, settings.pairing_codes_per_minute),
                  ws=Transport(metrics, settings.ws_send_timeout_s, release=hub.unregister),
                  pg=pg, fleet=fleet)
    ctx.tasks = [asyncio.create_task(bus.run(), name="bus"),
                 asyncio.create_task(hub.heartbeats(), name="heartbeats"),
                 asyncio.create_task(hub.watch_sends(), name="send-watchdog")]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bus.subscriber.subscribed.wait(), 5)
    return ctx


async def _stop(ctx: Context) -> None:
    ctx.hub.close_all()
    if ctx.fleet is not None:
        await ctx.fleet.stop()
    for task in ctx.tasks:
        task.cancel()
    await asyncio.gather(*ctx.tasks, return_exceptions=True)
    if ctx.pg is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.pg.close(), 5)
    if ctx.kube is not None:
        with contextlib.suppress(Exception):
            await ctx.kube.close()
    with contextlib.suppress(Exception):
        await ctx.redis.aclose()
