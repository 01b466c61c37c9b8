"""Is Redis durable enough for the message streams? Read from `INFO persistence`.

The inbound, outbound and results streams and the idempotency markers (sent and seen keys)
live only in Redis. Without its append-only file (AOF) a Redis restart loses every
message the bot has not read and every send still pending, and the markers that keep a
redelivered command from being sent twice; RDB snapshots alone lose everything written
since the last snapshot. So the project requires AOF (`appendfsync everysec`
recommended, docs/HELM.md) and checks for it in two places:

- the API's `/readyz` (`api.routes.health`) reports a `redis_persistence` check, and fails
  readiness while `SALON_REDIS_REQUIRE_PERSISTENCE` is true (the default);
- the operator's leader polls INFO every `interval_s` (`RedisPersistenceGauges`) into
  `salon_redis_persistence_enabled` and `salon_redis_aof_last_write_ok`, which the alert
  `SalonRedisNotPersistent` watches. Both are NaN until read and after a failed read
  (Redis being unreachable is other alerts' business); a standby replica has neither.

`INFO` tells neither the fsync policy (`appendfsync`) nor the RDB `save` schedule, and the
project's Redis users may not run CONFIG GET: "durable" here means AOF on and its last
write succeeded. The messages name INFO's fields only, never a URL or credential.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

HOW_TO = "set `appendonly yes` and `appendfsync everysec` (docs/HELM.md, Redis persistence)"


@dataclass(frozen=True)
class Persistence:
    """The fields of `INFO persistence` that decide durability."""

    aof_enabled: bool
    aof_last_write_ok: bool
    rdb_snapshots: bool
    """Redis has saved or tried to save an RDB snapshot since it started (a hint only:
    INFO does not show the `save` schedule)."""

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Persistence:
        """From redis-py's parsed `INFO persistence` (values are ints or strings)."""
        def text(name: str) -> str:
            value = info.get(name, "")
            return value.decode() if isinstance(value, bytes) else str(value)

        return cls(
            aof_enabled=text("aof_enabled") == "1",
            aof_last_write_ok=text("aof_last_write_status") in ("ok", ""),
            rdb_snapshots=text("rdb_saves") not in ("", "0")
            or text("rdb_last_bgsave_status") == "err",
        )

    @property
    def durable(self) -> bool:
        return self.aof_enabled and self.aof_last_write_ok

    @property
    def reason(self) -> str | None:
        """A short code for the readiness check's `error` (None when durable)."""
        if not self.aof_enabled:
            return "aof_disabled"
        if not self.aof_last_write_ok:
            return "aof_write_failed"
        return None

    def message(self) -> str:
        """What an operator should know, in one sentence."""
        if not self.aof_enabled:
            lost = ("written since the last RDB snapshot (RDB snapshots alone are not "
                    "durable enough for the streams)" if self.rdb_snapshots
                    else "(no RDB snapshot was taken either)")
            return (f"Redis runs without its append-only file (INFO persistence: "
                    f"aof_enabled:0): a Redis restart loses the message streams and the "
                    f"idempotency markers {lost}; {HOW_TO}")
        if not self.aof_last_write_ok:
            return ("Redis failed its last append-only file write (INFO persistence: "
                    "aof_last_write_status:err; disk full or read-only?): writes are not "
                    "durable until it succeeds again")
        return "append-only file on, last write ok"


async def read(redis: Redis) -> Persistence:
    """`INFO persistence` of `redis` (the user needs `+info`)."""
    return Persistence.from_info(await redis.info("persistence"))


class RedisPersistenceGauges:
    """The leader's poll of `INFO persistence` into two gauges (NaN while unknown)."""

    def __init__(self, redis: Redis, registry: CollectorRegistry, *,
                 interval_s: float = 30.0) -> None:
        self._redis = redis
        self._interval = interval_s
        self._last: Persistence | None = None
        self.enabled = Gauge(
            "salon_redis_persistence_enabled",
            "1 when Redis runs with its append-only file (INFO persistence aof_enabled), 0 "
            "when not (a restart loses the message streams); NaN until the leader read it",
            registry=registry)
        self.last_write_ok = Gauge(
            "salon_redis_aof_last_write_ok",
            "1 when Redis's last append-only file write succeeded (aof_last_write_status), "
            "0 when it failed; NaN until the leader read it", registry=registry)
        self._unknown()

    def _unknown(self) -> None:
        self.enabled.set(math.nan)
        self.last_write_ok.set(math.nan)

    async def poll(self) -> Persistence | None:
        """Read INFO once and set the gauges; None (and NaN) when Redis did not answer."""
        try:
            status = await read(self._redis)
        except (RedisError, OSError) as exc:
            self._unknown()
            log.warning("reading Redis's INFO persistence failed: %s", type(exc).__name__)
            return None
        self.enabled.set(1 if status.aof_enabled else 0)
        self.last_write_ok.set(1 if status.aof_last_write_ok else 0)
        if not status.durable and status != self._last:
            log.warning("%s", status.message())
        self._last = status
        return status

    async def run(self) -> None:
        try:
            while True:
                await self.poll()
                await asyncio.sleep(self._interval)
        finally:
            self._unknown()  # a leader that stops leading no longer knows
