"""The operator leader's poll of Redis's `INFO persistence` into two gauges, which the alert
`SalonRedisNotPersistent` watches; what "durable" means and why the project requires the
append-only file is `core.redis_persistence`'s docstring (the API's `/readyz` reads the same).
"""

from __future__ import annotations

import asyncio
import logging
import math

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core.redis_persistence import Persistence, read

log = logging.getLogger(__name__)


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
