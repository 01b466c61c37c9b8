"""Is Redis durable enough for the message streams? Read from `INFO persistence`.

The inbound, outbound and results streams and the idempotency markers (sent and seen keys)
live only in Redis. Without its append-only file (AOF) a Redis restart loses every
message the bot has not read and every send still pending, and the markers that keep a
redelivered command from being sent twice; RDB snapshots alone lose everything written
since the last snapshot. So the project requires AOF (`appendfsync everysec`
recommended, docs/HELM.md) and checks for it in two places:

- the API's `/readyz` (`api.routes.health`) reports a `redis_persistence` check, and fails
  readiness while `SALON_REDIS_REQUIRE_PERSISTENCE` is true (the default);
- the operator's leader polls INFO every `interval_s` (`operator.redis_persistence`) into
  `salon_redis_persistence_enabled` and `salon_redis_aof_last_write_ok`, which the alert
  `SalonRedisNotPersistent` watches. Both are NaN until read and after a failed read
  (Redis being unreachable is other alerts' business); a standby replica has neither.

`INFO` tells neither the fsync policy (`appendfsync`) nor the RDB `save` schedule, and the
project's Redis users may not run CONFIG GET: "durable" here means AOF on and its last
write succeeded. The messages name INFO's fields only, never a URL or credential.

It lives in `core` because both the API and the operator read it (the API imports only
`core`, `db` and itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

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
