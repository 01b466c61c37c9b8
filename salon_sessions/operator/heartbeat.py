"""Reconcile the status from the workers' heartbeat hashes (`whatsapp:session:<company>`).

Pub/sub loses what is published while a subscriber is away, so the hashes are the truth:
read on startup, when new sessions appear, after a Redis gap (now, and again once the
workers have had time to rewrite their hashes), every `interval_s`, and at each session's
heartbeat deadline.

- A hash is first held to the bounds of every fact (`core.bounds`: `seq` within int64, not
  numbered or dated beyond the horizon); one that breaks them is refused, counted in
  `salon_operator_heartbeats_rejected_total{reason}`, and vouches for nothing.
- A hash written after the newest fact already applied replaces the worker's part of the
  status (phase, linked, connected, phone).
- The heartbeat's age, not only the hash's presence, decides: each session has a deadline,
  the last sign of life (the hash's `heartbeat_at`, or an event applied) plus the TTL —
  and never later than Redis' own expiry of the hash (`PTTL`). A hash whose `heartbeat_at`
  is older than the TTL is no sign of life. At the deadline the hash is read once more and,
  without a newer heartbeat, the session loses it: `connected=false`, reason
  `HeartbeatLost`, a Warning Event. So a stale `connected=true` lasts at most the TTL after
  the worker's last heartbeat, plus one status patch. A Redis restart (which empties Redis)
  does not flap: the workers rewrite their hashes every third of the TTL, well before the
  deadline.

Clocks: `heartbeat_at` is the worker's clock; pods and the operator are assumed to be
NTP-synchronised (a worker clock behind by more than the TTL reads as a lost heartbeat).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.channels import session_state_key
from salon_sessions.core.state_hash import StateHash, StateHashRefused, parse_state_hash
from salon_sessions.core.subscriber import Gap
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Key, Registry, Session
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)
CHUNK = 200
LATE_S = 0.05
"""Read a deadline's hash this long after it passed (Redis expires keys on time)."""


class HeartbeatReconciler:
    def __init__(self, redis: Redis, registry: Registry, writer: StatusWriter,
                 metrics: OperatorMetrics, *, interval_s: float = 10.0,
                 ttl_s: float = 30.0, horizon: Horizon | None = None) -> None:
        self._redis = redis
        self._registry = registry
        self._writer = writer
        self._metrics = metrics
        self._interval = interval_s
        self._ttl = ttl_s
        self._horizon = horizon or Horizon()
        self._wake = asyncio.Event()
        self._deadline: dict[Key, float] = {}
        """Monotonic time at which the session's heartbeat expires unless renewed."""

    def trigger(self, delay_s: float = 0.0) -> None:
        if delay_s <= 0:
            self._wake.set()
        else:
            asyncio.get_running_loop().call_later(delay_s, self._wake.set)

    def on_gap(self, gap: Gap) -> None:
        log.info("Redis gap of %.1fs: reconciling from heartbeats", gap.seconds)
        self.trigger()
        self.trigger(self._ttl / 3 + 1.0)

    def heard_from(self, key: Key) -> None:
        """An event of the session's worker was applied: a sign of life now."""
        self._renew(key, time.monotonic() + self._ttl)

    def _renew(self, key: Key, deadline: float) -> None:
        self._deadline[key] = max(deadline, self._deadline.get(key, deadline))

    def next_deadline(self) -> float | None:
        """The earliest deadline of a session that still has a heartbeat."""
        alive = [d for k, d in self._deadline.items()
                 if (s := self._registry.get(k)) is not None and not s.model.heartbeat_lost]
        return min(alive, default=None)

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat reconciliation failed: %s", type(exc).__name__)
            self._wake.clear()
            wait = self._interval
            deadline = self.next_deadline()
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic() + LATE_S))
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                await asyncio.sleep(0.2)  # batch the triggers of a burst of new sessions
            except TimeoutError:
                pass

    async def reconcile(self) -> None:
        started = time.monotonic()
        sessions = [s for s in self._registry if s.active]
        for key in set(self._deadline) - {s.key for s in sessions}:
            del self._deadline[key]
        for i in range(0, len(sessions), CHUNK):
            chunk = sessions[i:i + CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for session in chunk:
                    state_key = session_state_key(session.company)
                    pipe.hgetall(state_key)
                    pipe.pttl(state_key)
                results = await pipe.execute()
            now = time.monotonic()
            wall = datetime.now(UTC)
            for n, session in enumerate(chunk):
                self._apply(session, results[2 * n], results[2 * n + 1], now, wall)
        self._metrics.reconcile_seconds.labels("heartbeat").observe(time.monotonic() - started)

    def _apply(self, session: Session, raw: dict[bytes, bytes], pttl_ms: int, now: float,
               wall: datetime) -> None:
        model = session.model
        try:
            state = parse_state_hash(raw, self._horizon, wall)
        except StateHashRefused as exc:
            self._metrics.heartbeats_rejected.labels(exc.why).inc()
            log.warning("state hash of %s/%s refused: %s", session.namespace, session.name,
                        exc, extra={"company_id": session.company})
            state = None
        if state is not None and state.session not in (None, session.name):
            state = None  # another session's hash (a forged or stale key): not ours
        if state is not None and self._fresh(session.key, state, pttl_ms, now, wall):
            model.apply_heartbeat(state, wall)
            self._writer.mark(session)
            return
        deadline = self._deadline.setdefault(session.key, now + self._ttl)
        if now >= deadline and not model.heartbeat_lost:
            log.info("heartbeat of %s/%s expired", session.namespace, session.name,
                     extra={"company_id": session.company})
            self._metrics.heartbeat_lost.inc()
            model.lose_heartbeat(f"no heartbeat from the worker for {self._ttl:g}s: it is "
                                 f"stuck, gone or cut off from Redis", wall)
            self._writer.mark(session)

    def _fresh(self, key: Key, state: StateHash, pttl_ms: int, now: float,
               wall: datetime) -> bool:
        """Renew the session's deadline from the hash; False when its heartbeat is older
        than the TTL (then it vouches for nothing)."""
        beat = state.heartbeat_at or state.updated_at
        age = max(0.0, (wall - beat).total_seconds()) if beat is not None else 0.0
        deadline = now + self._ttl - age
        if pttl_ms > 0:  # Redis removes the hash then, whatever the worker's clock says
            deadline = min(deadline, now + pttl_ms / 1000)
        if deadline <= now:
            return False
        self._renew(key, deadline)
        return True
