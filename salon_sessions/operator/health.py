"""Per-session health: a ping on the session's own channel, a pong back on its pong
channel (`whatsapp:health:pong:<company>`), the round trip into a histogram (all sessions)
and a gauge per session (its last round trip, removed when the session stops being probed).

Each active session whose worker has reported once is pinged every `interval_s` (first
pings spread over the interval so that 1,000 sessions are not pinged in one burst). A ping
unanswered after `timeout_s`, or one that no worker received (PUBLISH returned 0), is a
miss; `threshold` misses in a row set `WorkerHealthy=False`, one pong sets it back to True.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from salon_sessions.core.channels import health_ping_channel
from salon_sessions.core.events import (
    PingEvent,
    PongEvent,
    SeqCounter,
    correlation_origin,
)
from salon_sessions.core.publisher import Publisher, PublishFailed, RetryPolicy
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Key, Registry, Session
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)
PING_ORIGIN = "operator"
PING_POLICY = RetryPolicy(max_attempts=2, max_total_s=1.0, attempt_timeout_s=1.0)


@dataclass
class _Pending:
    key: Key
    company: str
    sent: float


@dataclass
class _Probe:
    next_at: float
    company: str
    misses: int = 0


class HealthPinger:
    def __init__(self, redis: Redis, registry: Registry, writer: StatusWriter,
                 metrics: OperatorMetrics, *, interval_s: float = 15.0,
                 timeout_s: float = 5.0, threshold: int = 3, tick_s: float | None = None,
                 max_parallel: int = 32) -> None:
        self._registry = registry
        self._writer = writer
        self._metrics = metrics
        self._publisher = Publisher(redis, metrics.publisher, policy=PING_POLICY)
        self._interval = interval_s
        self._timeout = timeout_s
        self._threshold = threshold
        self._tick = tick_s or min(1.0, interval_s / 5)
        self._parallel = asyncio.Semaphore(max_parallel)
        self._pending: dict[str, _Pending] = {}
        self._probes: dict[Key, _Probe] = {}
        self._seq = SeqCounter()
        self._rng = random.Random()

    def ping_soon(self, namespace: str, name: str) -> None:
        """Probe this session at the next tick (it just connected)."""
        probe = self._probes.get((namespace, name))
        if probe is not None:
            probe.next_at = 0.0

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self._tick)

    async def tick(self) -> None:
        now = time.monotonic()
        self._expire(now)
        due: list[Session] = []
        seen: set[Key] = set()
        for session in self._registry:
            if not session.active or session.model.worker_phase is None:
                continue  # no worker has reported since the pod was (re)started
            seen.add(session.key)
            probe = self._probes.get(session.key)
            if probe is None:
                probe = self._probes[session.key] = _Probe(
                    now + self._rng.uniform(0, self._interval), session.company)
            if probe.next_at <= now:
                probe.next_at = now + self._interval
                due.append(session)
        for key in set(self._probes) - seen:
            self._forget(self._probes.pop(key).company)
        if due:
            await asyncio.gather(*(self._ping(s) for s in due))

    async def _ping(self, session: Session) -> None:
        ping = PingEvent.fresh(session.company, session.name, self._seq.next(), PING_ORIGIN)
        correlation = ping.data.correlation_id
        self._pending[correlation] = _Pending(session.key, session.company, time.monotonic())
        async with self._parallel:
            try:
                receivers = await self._publisher.publish(ping, health_ping_channel(
                    session.company))
            except PublishFailed as exc:
                self._pending.pop(correlation, None)
                self._metrics.pings.labels("publish_failed").inc()
                log.warning("health ping not sent: %s", exc,
                            extra={"company_id": session.company})
                return
        self._metrics.pings.labels("sent").inc()
        if receivers == 0 and self._pending.pop(correlation, None) is not None:
            self._metrics.pings.labels("no_receiver").inc()
            self._miss(session.key, "no worker is subscribed to its health channel")

    def on_pong(self, pong: PongEvent) -> None:
        if correlation_origin(pong.data.correlation_id) != PING_ORIGIN:
            return  # an answer to someone else's ping (the API's /health/pubsub)
        pending = self._pending.get(pong.data.correlation_id)
        if pending is None or pending.company != pong.company_id:
            self._metrics.events_rejected.labels("unknown_pong").inc()
            return
        del self._pending[pong.data.correlation_id]
        seconds = time.monotonic() - pending.sent
        self._metrics.roundtrip.observe(seconds)
        if pending.key in self._probes:  # not for a session gone meanwhile
            self._metrics.session_roundtrip.labels(pending.company).set(seconds)
        self._metrics.pings.labels("answered").inc()
        probe = self._probes.get(pending.key)
        if probe is not None:
            probe.misses = 0
        session = self._registry.get(pending.key)
        if session is not None and (session.model.healthy is not True
                                    or session.model.restarted is not None):
            session.model.set_health(True, "")
            self._writer.mark(session)

    def _forget(self, company: str) -> None:
        """Drop the session's round-trip series (one per session, not one per session ever
        seen) unless another probed session has the same company."""
        if all(p.company != company for p in self._probes.values()):
            with contextlib.suppress(KeyError):
                self._metrics.session_roundtrip.remove(company)

    def _expire(self, now: float) -> None:
        for correlation, pending in list(self._pending.items()):
            if now - pending.sent >= self._timeout:
                del self._pending[correlation]
                self._metrics.pings.labels("missed").inc()
                self._miss(pending.key, "")

    def _miss(self, key: Key, why: str) -> None:
        probe = self._probes.get(key)
        session = self._registry.get(key)
        if probe is None or session is None or not session.active:
            return
        probe.misses += 1
        if probe.misses >= self._threshold and session.model.healthy is not False:
            detail = f" ({why})" if why else ""
            session.model.set_health(
                False, f"{probe.misses} consecutive health pings unanswered{detail}")
            self._writer.mark(session)
