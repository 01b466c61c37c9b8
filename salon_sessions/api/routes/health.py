"""Health: liveness, readiness, the pub/sub round trips, Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from salon_sessions.api.auth import bearer_from_headers
from salon_sessions.api.context import Context
from salon_sessions.api.deps import COMPANY_PATH_PATTERN, AdminAuth, Ctx
from salon_sessions.api.errors import ApiError, responses
from salon_sessions.api.live import redis_unavailable
from salon_sessions.api.models import Check, Liveness, PubSubHealth, Readiness, SimpleHealth
from salon_sessions.core import channels, redis_persistence
from salon_sessions.core.codec import encode
from salon_sessions.core.company import canonical_company_id, resource_name
from salon_sessions.core.events import PingEvent, SeqCounter
from salon_sessions.core.redis_client import as_text

router = APIRouter(tags=["health"])
_seq = SeqCounter()
READY_TIMEOUT_S = 3.0


def _unhealthy(ctx: Context, check: str, reason: str, message: str) -> ApiError:
    ctx.metrics.health_failures.labels(check, reason).inc()
    return ApiError(503, reason, message)


def _require_subscription(ctx: Context, check: str) -> None:
    if not ctx.bus.subscriber.subscribed.is_set():
        raise _unhealthy(ctx, check, "no_subscription",
                         "the API's Redis subscription is down (Redis unreachable?)")


async def _any_worker(ctx: Context) -> str:
    """A company whose worker listens on its ping channel now (found through the state
    hashes, which expire when a worker stops heartbeating)."""
    try:
        seen = 0
        async for key in ctx.redis.scan_iter(match=channels.SESSION_STATE_PATTERN, count=200):
            company = as_text(key).rsplit(":", 1)[1]
            counts = await ctx.redis.pubsub_numsub(channels.health_ping_channel(company))
            if counts and int(counts[0][1]) > 0:
                return company
            seen += 1
            if seen >= 100:
                break
    except (RedisError, OSError) as exc:
        raise redis_unavailable(exc) from None
    raise _unhealthy(ctx, "pubsub", "no_worker", "no session worker is running")


@router.get("/health/pubsub", response_model=PubSubHealth,
            responses=responses(401, 403, 422, 503),
            summary="Ping -> pong round trip through a session's worker")
async def pubsub(request: Request, ctx: Ctx, company_id: str | None = Query(
        default=None, pattern=COMPANY_PATH_PATTERN, max_length=26,
        description="the worker to ping (company token: its own only); default: any "
        "running worker (admin only)")) -> PubSubHealth:
    """Publishes a `ping` with a fresh correlation id on `whatsapp:health:<company>` and
    waits for the worker's `pong` on `whatsapp:health:pong:<company>`. 503 when no worker
    listens or none answers in time."""
    token = bearer_from_headers(request.headers)
    if company_id is None:
        ctx.auth.admin(token)
        company = await _any_worker(ctx)
    else:
        company = canonical_company_id(company_id)
        ctx.auth.company(token, company)
    _require_subscription(ctx, "pubsub")
    ping = PingEvent.fresh(company, resource_name(company), _seq.next(), "api")
    correlation = ping.data.correlation_id
    channel = channels.health_ping_channel(company)
    waiter = ctx.bus.pongs.expect(correlation)
    try:
        started = time.perf_counter()
        try:
            receivers = await ctx.redis.publish(channel, encode(ping))
        except (RedisError, OSError) as exc:
            raise redis_unavailable(exc) from None
        if not receivers:
            raise _unhealthy(ctx, "pubsub", "no_worker",
                             f"no worker listens on {channel}: the session's worker is not "
                             f"running")
        try:
            async with asyncio.timeout(ctx.settings.pong_timeout_s):
                pong, answered = await waiter
        except TimeoutError:
            raise _unhealthy(ctx, "pubsub", "no_pong",
                             f"the worker did not answer within "
                             f"{ctx.settings.pong_timeout_s:g}s") from None
    finally:
        ctx.bus.pongs.forget(correlation)
    seconds = answered - started
    ctx.metrics.health_rtt.labels("pubsub").observe(seconds)
    return PubSubHealth(company_id=company, channel=channel, latency_ms=round(seconds * 1e3, 3),
                        worker_phase=pong.data.phase.value if pong.data.phase else None)


@router.get("/health/pubsub/simple", response_model=SimpleHealth,
            responses=responses(401, 403, 503),
            summary="Redis publish -> subscribe self-test")
async def pubsub_simple(ctx: Ctx, _: AdminAuth) -> SimpleHealth:
    """Publishes a nonce on the API's own channel and waits for it on the API's shared
    subscription: the Redis pub/sub path without any worker."""
    _require_subscription(ctx, "simple")
    nonce = uuid.uuid4().hex
    waiter = ctx.bus.selftests.expect(nonce)
    try:
        started = time.perf_counter()
        try:
            await ctx.redis.publish(channels.API_SELFTEST_CHANNEL, nonce)
        except (RedisError, OSError) as exc:
            raise redis_unavailable(exc) from None
        try:
            async with asyncio.timeout(ctx.settings.pong_timeout_s):
                received = await waiter
        except TimeoutError:
            raise _unhealthy(ctx, "simple", "no_message",
                             "the self-test message did not come back") from None
    finally:
        ctx.bus.selftests.forget(nonce)
    seconds = received - started
    ctx.metrics.health_rtt.labels("simple").observe(seconds)
    return SimpleHealth(channel=channels.API_SELFTEST_CHANNEL,
                        latency_ms=round(seconds * 1e3, 3))


@router.get("/healthz", response_model=Liveness, summary="Liveness (the process serves)")
async def healthz() -> Liveness:
    return Liveness()


async def _timed(check: Callable[[], Awaitable[object]]) -> Check:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await check()
    except TimeoutError:
        return Check(ok=False, error="timed out")
    except Exception as exc:
        return Check(ok=False, error=type(exc).__name__)
    return Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1e3, 3))


async def _redis_persistence(ctx: Context) -> Check:
    """Redis runs with its append-only file (`core.redis_persistence`): without it a
    Redis restart loses the message streams and idempotency markers. Fails readiness only
    while `redis_require_persistence`; otherwise the same finding is reported, ok."""
    required = ctx.settings.redis_require_persistence
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            status = await redis_persistence.read(ctx.redis)
    except TimeoutError:
        return Check(ok=not required, error="timed out",
                     message="could not read Redis's INFO persistence")
    except Exception as exc:
        return Check(ok=not required, error=type(exc).__name__,
                     message="could not read Redis's INFO persistence")
    latency = round((time.perf_counter() - started) * 1e3, 3)
    if status.durable:
        return Check(ok=True, latency_ms=latency)
    message = status.message()
    if not required:
        message += " (reported only: SALON_REDIS_REQUIRE_PERSISTENCE is false)"
    return Check(ok=not required, latency_ms=latency, error=status.reason, message=message)


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "A dependency is down"}},
            summary="Readiness: Redis (persistent), PostgreSQL and the Kubernetes API")
async def readyz(ctx: Ctx) -> JSONResponse:
    """Each dependency answers in time; and Redis runs with its append-only file
    (`redis_persistence`: required unless SALON_REDIS_REQUIRE_PERSISTENCE=false, then only
    reported)."""
    async def redis() -> None:
        await ctx.redis.ping()

    async def postgres() -> None:
        if ctx.pg is None:
            raise RuntimeError("no pool")
        async with ctx.pg.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def kubernetes() -> None:
        if ctx.kube is None:
            raise RuntimeError("not configured")
        await ctx.kube.ping()

    names = ("redis", "postgres", "kubernetes", "redis_persistence")
    results = await asyncio.gather(*(_timed(f) for f in (redis, postgres, kubernetes)),
                                   _redis_persistence(ctx))
    checks = dict(zip(names, results, strict=True))
    ready = all(c.ok for c in results)
    body = Readiness(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
