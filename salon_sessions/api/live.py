"""What the workers say, read from Redis: the per-session state hash, the latest QR, and
control requests (pairing code, restart, logout) with their errors mapped to HTTP. The
reads raise `RedisUnavailable` (no HTTP), so that the terminal command (`api.qr_cli`) uses
them too.

A state hash that breaks the bounds of every worker fact (`core.bounds`: `seq` outside
int64, numbered or dated beyond the horizon) is treated as absent, as an unreadable one
is: the page never shows "connected" on the word of a forged hash."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from salon_sessions.api.errors import ApiError
from salon_sessions.api.models import LiveState
from salon_sessions.core import channels, control
from salon_sessions.core.bounds import Horizon
from salon_sessions.core.redis_client import as_text
from salon_sessions.core.state_hash import StateHashRefused, parse_state_hash

log = logging.getLogger(__name__)
T = TypeVar("T")

_CONTROL_STATUS = {
    "no_worker": (503, "no worker is running for this session (is the session pod up?)"),
    "not_ready": (503, None),
    "pairing_code_pending": (409, None),
    "already_linked": (409, None),
    "link_expired": (409, None),
    "invalid": (422, None),
}


class RedisUnavailable(Exception):
    """Redis did not answer a read (retried once): try again later. The routes answer it
    with 503 `redis_unavailable` (`redis_error`), the terminal command with a message."""


def _down(exc: BaseException) -> RedisUnavailable:
    log.warning("Redis unavailable: %s", type(exc).__name__)
    return RedisUnavailable("Redis is unavailable")


def redis_error(exc: RedisUnavailable) -> ApiError:
    """What a caller of the HTTP API sees when Redis is down."""
    return ApiError(503, "redis_unavailable", str(exc))


def redis_unavailable(exc: BaseException) -> ApiError:
    """A Redis failure met in a route (or a call made for one), as its HTTP answer."""
    return redis_error(_down(exc))


async def _read(op: Callable[[], Awaitable[T]]) -> T:
    """A read, retried once after a connection error: after a Redis restart the pool's
    first connection is dead, the second attempt opens a new one. `RedisUnavailable` when
    it fails."""
    try:
        return await op()
    except (RedisConnectionError, OSError):
        pass
    except RedisError as exc:
        raise _down(exc) from None
    try:
        return await op()
    except (RedisError, OSError) as exc:
        raise _down(exc) from None


async def read_state(redis: Redis, company_id: str,
                     horizon: Horizon | None = None) -> LiveState | None:
    raw = await _read(lambda: redis.hgetall(channels.session_state_key(company_id)))
    return parse_state(raw, company_id, horizon)


def parse_state(raw: dict[Any, Any], company_id: str,
                horizon: Horizon | None = None) -> LiveState | None:
    """A state hash as HGETALL returns it; None when empty, out of bounds or unreadable
    (`core.state_hash`: the page shows the whole state or nothing)."""
    try:
        state = parse_state_hash(raw, horizon or Horizon())
    except StateHashRefused as exc:
        log.warning("session state hash refused: %s", exc, extra={"company_id": company_id})
        return None
    if state is None:
        return None
    if state.unreadable:
        log.warning("unreadable session state hash", extra={"company_id": company_id})
        return None
    return LiveState.model_validate({name: getattr(state, name)
                                     for name in LiveState.model_fields})


async def read_qr(redis: Redis, company_id: str) -> str | None:
    raw = await _read(lambda: redis.get(channels.latest_qr_key(company_id)))
    return None if raw is None else as_text(raw)


async def qr_available(redis: Redis, company_id: str) -> bool:
    return bool(await _read(lambda: redis.exists(channels.latest_qr_key(company_id))))


async def command(redis: Redis, company_id: str, cmd: str, timeout_s: float, *,
                  conflict_field: str = "path.company_id", **params: Any) -> dict[str, Any]:
    """One control request to the session's worker; its refusals become 409/503.
    `conflict_field` is what a 409 names as the field at fault."""
    try:
        return await control.request(redis, company_id, cmd, timeout_s=timeout_s, **params)
    except control.ControlError as exc:
        status, message = _CONTROL_STATUS.get(exc.code, (502, None))
        field = {"invalid": "body.phone", "pairing_code_pending": conflict_field,
                 "already_linked": "path.company_id",
                 "link_expired": "path.company_id"}.get(exc.code)
        raise ApiError(status, exc.code, message or str(exc), field=field) from None
    except TimeoutError:
        raise ApiError(504, "worker_timeout",
                       f"the worker did not answer within {timeout_s:g}s") from None
    except (RedisError, OSError) as exc:
        raise redis_unavailable(exc) from None
