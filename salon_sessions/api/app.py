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
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, CollectorRegistry

from salon_sessions import __version__
from salon_sessions.api import errors
from salon_sessions.api.auth import Authenticator, TokenSigner
from salon_sessions.api.bus import Bus
from salon_sessions.api.context import Context
from salon_sessions.api.fleet import Fleet
from salon_sessions.api.hub import Hub
from salon_sessions.api.kube import SessionResources
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.middleware import AccessLog, RequestLimits
from salon_sessions.api.ratelimit import PairingRateLimit
from salon_sessions.api.routes import admin, health, onboarding, page, sessions
from salon_sessions.api.views import live_view, snapshot_message
from salon_sessions.core.events import Event
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.settings import ApiSettings
from salon_sessions.core.subscriber import Gap
from salon_sessions.db.connections import create_pool

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).resolve().parent / "page"
ADMIN_DIR = Path(__file__).resolve().parent / "admin"

DESCRIPTION = """\
Onboarding API of salon-sessions: create a salon's WhatsApp session, follow it live, link
the salon's phone by QR or pairing code.

**Auth.** Management calls take the admin token (`Authorization: Bearer <admin token>`).
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
                  description=DESCRIPTION, lifespan=lifespan)
    errors.install(app)
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
