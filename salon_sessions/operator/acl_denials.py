"""Redis's refusals as a metric: every NOPERM (and failed login) a session's worker — or
anyone — meets is counted in `salon_redis_acl_denials_total{user, reason}`.

Redis enforces the per-session users (`core.redis_acl`) and records each refusal in its
`ACL LOG`: entries of (reason, context, object, user) with a `count` that grows while the
same refusal repeats. The log is bounded (`acllog-max-len`, 128 by default) and lives only
in Redis's memory, so the leader drains it every `interval_s`: it reads the entries, adds
their counts to the counter and resets the log. A refusal logged between the read and the
reset is lost (a window of one round trip), which the alert can afford: one forged write is
seldom alone. `reason` is Redis's (`command`, `key`, `channel`, `auth`); `user` is the
Redis user (`salon-session.<namespace>.<name>` for a session, which names the salon).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)
MAX_ENTRIES = 1024
"""Read at most this many entries per round (more than Redis keeps by default)."""


def tally(entries: list[dict[str, Any]]) -> Tally[tuple[str, str]]:
    """Refusals per (user, reason) in `ACL LOG` entries as redis-py returns them."""
    counts: Tally[tuple[str, str]] = Tally()
    for entry in entries:
        user = _text(entry.get("username"))
        reason = _text(entry.get("reason"))
        try:
            counts[(user, reason)] += int(entry.get("count", 1))
        except (TypeError, ValueError):
            counts[(user, reason)] += 1
    return counts


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value) if value is not None else ""


class AclDenials:
    def __init__(self, admin: Redis, metrics: OperatorMetrics, *,
                 interval_s: float = 15.0) -> None:
        self._admin = admin
        self._metrics = metrics
        self._interval = interval_s

    async def drain(self) -> int:
        """Move what `ACL LOG` holds into the counter; returns the refusals counted."""
        entries = await self._admin.acl_log(count=MAX_ENTRIES)
        if not entries:
            return 0
        await self._admin.acl_log_reset()
        counts = tally(list(entries))
        for (user, reason), n in counts.items():
            self._metrics.acl_denials.labels(user, reason).inc(n)
            log.warning("Redis refused %d %s request(s) of user %s", n, reason, user)
        return sum(counts.values())

    async def run(self) -> None:
        while True:
            try:
                await self.drain()
            except (RedisError, OSError) as exc:
                log.warning("reading Redis's ACL LOG failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
