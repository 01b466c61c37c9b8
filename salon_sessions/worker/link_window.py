"""The bound on an onboarding (`spec.link.expireAfter`): how long a worker asks WhatsApp for
QR codes and pairing codes for a device that does not link.

The window starts the first time a worker starts linking an unlinked device (and again
after a logout), and ends `expire_after_s` later. Its start is kept in Redis
(`whatsapp:link:<company>`, no TTL), not only in the worker's memory: a worker that restarts
or crash-loops reads it back, so an expired onboarding stays expired and a running one keeps
its deadline. A link deletes it (the next logout starts a new window); a renewal rewrites it
with the time of the renewal.

Which failure keeps what:

- worker restart, crash loop, pod deleted or rescheduled, operator restart: the record is in
  Redis, nothing changes;
- Redis restart: kept by its append-only file (the chart requires persistence by default);
- Redis data lost (no persistence, FLUSHALL): a running worker (expired or not) writes its
  window back from memory within a third of the heartbeat TTL (`verify`) or right after the
  subscription gap; a worker that starts after the loss starts a new window, so an
  abandoned onboarding costs at most one more `expire_after_s` of codes;
- SalonSession deleted: the finalizer deletes the record with the other session keys.

No I/O happens at import; every Redis error is absorbed (the worker goes on with what it
has in memory and writes it later).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from redis.asyncio import Redis

from salon_sessions.core.bounds import parse_time
from salon_sessions.core.channels import link_window_key
from salon_sessions.core.redis_client import REDIS_ERRORS, as_text

log = logging.getLogger(__name__)
Unsaved = Literal["open", "renew"] | None


class LinkWindow:
    """One session's onboarding window: its start in memory and in Redis."""

    def __init__(self, redis: Redis, company_id: str, expire_after_s: int) -> None:
        self._redis = redis
        self._company = company_id
        self._key = link_window_key(company_id)
        self.expire_after_s = expire_after_s
        self.started_at: datetime | None = None
        self.unsaved: Unsaved = None
        """What Redis does not know yet: a window opened (written only if Redis has none:
        an older start wins) or renewed (overwrites)."""

    # ---- pure ---------------------------------------------------------------------
    def expires_at(self) -> datetime | None:
        if self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=self.expire_after_s)

    def expired(self, now: datetime) -> bool:
        ends = self.expires_at()
        return ends is not None and now >= ends

    # ---- Redis --------------------------------------------------------------------
    async def load(self) -> None:
        """Read the start from Redis (a worker that starts, or starts its driver again).
        Redis unreachable: keep what is in memory."""
        try:
            raw = await self._redis.get(self._key)
        except REDIS_ERRORS as exc:
            log.warning("onboarding window not read (%s); going on with what is known",
                        type(exc).__name__, extra={"company_id": self._company})
            return
        started = parse_time(None if raw is None else as_text(raw))
        if started is not None:
            # a start in the future (a clock ahead, a hand-written value) counts from now
            self.started_at, self.unsaved = min(started, datetime.now(UTC)), None
        elif self.started_at is not None and self.unsaved is None:
            self.unsaved = "open"  # Redis lost it: write it back

    async def open(self, now: datetime) -> None:
        """Start a window now unless one is known; an older one in Redis wins."""
        if self.started_at is None:
            self.started_at, self.unsaved = now, "open"
        await self.persist()

    async def renew(self, now: datetime) -> None:
        """A new window from now (`POST .../link/renew`)."""
        self.started_at, self.unsaved = now, "renew"
        await self.persist()

    async def persist(self) -> None:
        """Write what Redis does not know yet (no-op when it does)."""
        if self.unsaved is None or self.started_at is None:
            return
        value = self.started_at.astimezone(UTC).isoformat()
        try:
            if self.unsaved == "renew":
                await self._redis.set(self._key, value)
            else:
                await self._redis.set(self._key, value, nx=True)
                raw = await self._redis.get(self._key)
                stored = parse_time(None if raw is None else as_text(raw))
                if stored is not None:
                    self.started_at = stored
        except REDIS_ERRORS as exc:
            log.warning("onboarding window not written (%s); retrying",
                        type(exc).__name__, extra={"company_id": self._company})
            return
        self.unsaved = None

    async def clear(self) -> None:
        """The device linked: the onboarding is over (a later logout opens a new one)."""
        self.started_at, self.unsaved = None, None
        try:
            await self._redis.delete(self._key)
        except REDIS_ERRORS as exc:
            log.warning("onboarding window not cleared (%s)", type(exc).__name__,
                        extra={"company_id": self._company})

    async def verify(self) -> None:
        """Write the window back if Redis lost it (the worker checks every third of its
        heartbeat TTL)."""
        if self.started_at is None or self.unsaved is not None:
            await self.persist()
            return
        try:
            missing = await self._redis.get(self._key) is None
        except REDIS_ERRORS:
            return
        if missing:
            self.unsaved = "open"
            await self.persist()

    def forget_saved(self) -> None:
        """Redis came back after a gap and may have lost the record: write it again."""
        if self.started_at is not None and self.unsaved is None:
            self.unsaved = "open"
