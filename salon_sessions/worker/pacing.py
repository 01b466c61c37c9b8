"""Outbound pacing for one session: token buckets with jitter, and a circuit breaker.

WhatsApp bans numbers that send too fast, in bursts, or to many new contacts at once. A bot
bug that loops over its send call could get a salon's number banned within minutes, so the
worker, not the bot, decides when each send may go:

- a bucket for every send (`rate_per_minute`, `burst`) and a stricter one for the first
  message to a number the session never exchanged a message with (`new_contacts_per_hour`,
  `new_contact_burst`); a send takes a token from each bucket that applies;
- a random pause of up to `jitter_s` on top, so that sends have no machine rhythm;
- a breaker: when WhatsApp refuses a send as rate-limited or restricted, nothing is sent
  until the restriction ends (WhatsApp's time, else `breaker_s`).

The buckets are GCRA (the "generic cell rate algorithm", the token bucket written as one
"theoretical arrival time" per bucket): one number of state per bucket, which the worker
keeps in Redis (`whatsapp:pace:<company>`), so a restarted or crash-looping worker does not
start with a full burst, and an open breaker stays open. Written here rather than taken from
a library: the rate-limit libraries on PyPI (`limits`, `aiolimiter`) answer "may I now?" for
a fixed window or in one process; this needs "at what time may I?" (the results stream
promises an `expected_at`) for two buckets at once, with the state in our own Redis key.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from salon_sessions.core import channels
from salon_sessions.core.redis_client import REDIS_ERRORS, as_text

log = logging.getLogger(__name__)


class DelayReason(enum.StrEnum):
    """Why a send waits (the `reason` of a `delayed` result)."""

    PACING = "pacing"
    NEW_CONTACT = "new_contact"
    SENDING_PAUSED = "sending_paused"


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    enabled: bool = True
    rate_per_minute: float = 20.0
    burst: int = 5
    new_contacts_per_hour: float = 20.0
    new_contact_burst: int = 3
    jitter_s: float = 2.0
    breaker_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Slot:
    """When a send may go, and why it waits (None: it need not)."""

    at: float
    """Unix time."""
    reason: DelayReason | None


@dataclass(slots=True)
class _Bucket:
    """GCRA: `tat` is the theoretical arrival time of the next send at the sustained rate;
    a send at `now` conforms when `now >= tat - tolerance`."""

    interval_s: float
    tolerance_s: float
    tat: float = 0.0

    def earliest(self, now: float) -> float:
        return max(now, self.tat - self.tolerance_s)

    def take(self, at: float) -> None:
        self.tat = max(self.tat, at) + self.interval_s


def _bucket(per_second: float, burst: int) -> _Bucket:
    interval = 1.0 / per_second
    return _Bucket(interval_s=interval, tolerance_s=(burst - 1) * interval)


class Pacer:
    """The pacing state of one session (one sender: the worker's outbound task)."""

    def __init__(self, redis: Redis, company_id: str, policy: PacingPolicy,
                 rng: random.Random | None = None) -> None:
        self._redis = redis
        self._key = channels.send_pace_key(company_id)
        self._policy = policy
        self._rng = rng or random.Random()
        self._all = _bucket(policy.rate_per_minute / 60.0, policy.burst)
        self._new = _bucket(policy.new_contacts_per_hour / 3600.0, policy.new_contact_burst)
        self.paused_until = 0.0
        self.paused_reason = ""
        self._loaded = False

    @property
    def policy(self) -> PacingPolicy:
        return self._policy

    async def load(self) -> None:
        """Read the saved state once (a Redis error: start empty, save later)."""
        if self._loaded:
            return
        try:
            raw = await self._redis.hgetall(self._key)
        except REDIS_ERRORS:
            return
        state = {as_text(k): as_text(v) for k, v in raw.items()}
        self._all.tat = _number(state.get("tat"))
        self._new.tat = _number(state.get("tat_new"))
        self.paused_until = _number(state.get("paused_until"))
        self.paused_reason = state.get("paused_reason", "")
        self._loaded = True

    def slot(self, now: float, *, new_contact: bool) -> Slot:
        """The earliest time the next send may go (nothing taken yet)."""
        if now < self.paused_until:
            return Slot(self.paused_until, DelayReason.SENDING_PAUSED)
        if not self._policy.enabled:
            return Slot(now, None)
        at, reason = self._all.earliest(now), DelayReason.PACING
        if new_contact:
            new_at = self._new.earliest(now)
            if new_at > at:
                at, reason = new_at, DelayReason.NEW_CONTACT
        return Slot(at, reason if at > now else None)

    def jitter(self) -> float:
        return self._rng.uniform(0.0, self._policy.jitter_s) if self._policy.enabled else 0.0

    async def take(self, at: float, *, new_contact: bool) -> None:
        """A send goes at `at`: take its tokens and save."""
        if self._policy.enabled:
            self._all.take(at)
            if new_contact:
                self._new.take(at)
        await self._save()

    async def pause(self, now: float, reason: str, retry_after_s: float | None) -> float:
        """WhatsApp refused a send as rate-limited or restricted: stop sending until the
        restriction ends (its time when it gave one, else `breaker_s`). Returns the end."""
        span = retry_after_s if retry_after_s and retry_after_s > 0 else self._policy.breaker_s
        self.paused_until = max(self.paused_until, now + span)
        self.paused_reason = reason
        await self._save()
        return self.paused_until

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    async def _save(self) -> None:
        if not self._policy.enabled and not self.paused_until:
            return  # nothing to keep: no buckets, no breaker
        # kept while it matters (a bucket is full again after burst x interval), plus a day
        keep = max(self._all.tat, self._new.tat, self.paused_until)
        ttl = int(max(keep - datetime.now(UTC).timestamp(), 0)) + 86400
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key, mapping={
                    "tat": repr(self._all.tat), "tat_new": repr(self._new.tat),
                    "paused_until": repr(self.paused_until),
                    "paused_reason": self.paused_reason,
                    "updated_at": datetime.now(UTC).isoformat()})
                pipe.expire(self._key, ttl)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("pacing state not saved (%s); kept in memory", type(exc).__name__)


def typing_seconds(text: str, max_s: float) -> float:
    """How long "typing..." shows before a message: ~1 s per 15 characters, at least 0.5 s,
    at most `max_s` (0 disables it)."""
    if max_s <= 0:
        return 0.0
    return min(max(len(text) / 15.0, 0.5), max_s)


def _number(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
