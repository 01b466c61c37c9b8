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

Both labels are bounded: a reason Redis may add later counts as `other`; a user name is what
the client sent (a failed login may carry any name), so only the project's own users are kept
(the session users, at most `MAX_USERS` of them per process), the rest count as `other`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import redis_acl
from salon_sessions.operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)
MAX_ENTRIES = 1024
"""Read at most this many entries per round (more than Redis keeps by default)."""
REASONS = frozenset({"command", "key", "channel", "auth"})
SERVICE_USERS = frozenset({redis_acl.OPERATOR_USER, redis_acl.API_USER, redis_acl.ADMIN_USER,
                           "default"})
MAX_USERS = 1000
"""Distinct session users labelled per process; further ones count as `other` (a bound on
the series whatever names failed logins carry)."""
OTHER = "other"


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

        self._users: set[str] = set()

    def labels(self, user: str, reason: str) -> tuple[str, str]:
        """(user, reason) as labelled: bounded sets (see the module's docstring)."""
        reason = reason if reason in REASONS else OTHER
        if user in SERVICE_USERS or user in self._users:
            return user, reason
        if user.startswith(redis_acl.SESSION_USER_PREFIX) and len(self._users) < MAX_USERS:
            self._users.add(user)
            return user, reason
        return OTHER, reason

    async def drain(self) -> int:
        """Move what `ACL LOG` holds into the counter; returns the refusals counted."""
        entries = await self._admin.acl_log(count=MAX_ENTRIES)
        if not entries:
            return 0
        await self._admin.acl_log_reset()
        counts = tally(list(entries))
        for (user, reason), n in counts.items():
            self._metrics.acl_denials.labels(*self.labels(user, reason)).inc(n)
            log.warning("Redis refused %d %s request(s) of user %s", n, reason, user)
        return sum(counts.values())

    async def run(self) -> None:
        while True:
            try:
                await self.drain()
            except (RedisError, OSError) as exc:
                log.warning("reading Redis's ACL LOG failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
