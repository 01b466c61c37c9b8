"""Reconcile the status from the workers' heartbeat hashes (`whatsapp:session:<company>`).

Pub/sub loses what is published while a subscriber is away, so the hashes are the truth:
read on startup, when new sessions appear, after a Redis gap (now, and again once the
workers have had time to rewrite their hashes) and every `interval_s`.

- A hash written after the newest fact already applied replaces the worker's part of the
  status (phase, linked, connected, phone).
- No hash for longer than `grace_s` (the workers' heartbeat TTL) since the session was last
  heard from means its heartbeat expired: `connected=false`, reason `HeartbeatLost` — not
  a stale `true`. Right after a Redis restart every hash is gone, but the grace keeps that
  from flapping: the workers rewrite theirs within a third of the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core.channels import session_state_key
from salon_sessions.core.subscriber import Gap
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Key, Registry, Session
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)
CHUNK = 200


class HeartbeatReconciler:
    def __init__(self, redis: Redis, registry: Registry, writer: StatusWriter,
                 metrics: OperatorMetrics, *, interval_s: float = 10.0,
                 grace_s: float = 30.0) -> None:
        self._redis = redis
        self._registry = registry
        self._writer = writer
        self._metrics = metrics
        self._interval = interval_s
        self._grace = grace_s
        self._wake = asyncio.Event()
        self._alive: dict[Key, float] = {}  # last time the session was heard from

    def trigger(self, delay_s: float = 0.0) -> None:
        if delay_s <= 0:
            self._wake.set()
        else:
            asyncio.get_running_loop().call_later(delay_s, self._wake.set)

    def on_gap(self, gap: Gap) -> None:
        log.info("Redis gap of %.1fs: reconciling from heartbeats", gap.seconds)
        self.trigger()
        self.trigger(self._grace / 3 + 1.0)

    def heard_from(self, key: Key) -> None:
        self._alive[key] = time.monotonic()

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat reconciliation failed: %s", type(exc).__name__)
            self._wake.clear()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
                await asyncio.sleep(0.2)  # batch the triggers of a burst of new sessions
            except TimeoutError:
                pass

    async def reconcile(self) -> None:
        started = time.monotonic()
        sessions = [s for s in self._registry if s.active]
        for key in set(self._alive) - {s.key for s in sessions}:
            del self._alive[key]
        for i in range(0, len(sessions), CHUNK):
            chunk = sessions[i:i + CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for session in chunk:
                    pipe.hgetall(session_state_key(session.company))
                results = await pipe.execute()
            now = time.monotonic()
            wall = datetime.now(UTC)
            for session, raw in zip(chunk, results, strict=True):
                self._apply(session, raw, now, wall)
        self._metrics.reconcile_seconds.labels("heartbeat").observe(time.monotonic() - started)

    def _apply(self, session: Session, raw: dict[bytes, bytes], now: float,
               wall: datetime) -> None:
        model = session.model
        last = self._alive.setdefault(session.key, now)
        if raw:
            fields = {k.decode(errors="replace"): v.decode(errors="replace")
                      for k, v in raw.items()}
            if fields.get("session", session.name) != session.name:
                return  # another session's hash (a forged or stale key): not ours
            self._alive[session.key] = now
            model.apply_heartbeat(fields, wall)
            self._writer.mark(session)
        elif now - last >= self._grace and not model.heartbeat_lost:
            log.info("heartbeat of %s/%s expired", session.namespace, session.name,
                     extra={"company_id": session.company})
            self._metrics.heartbeat_lost.inc()
            model.lose_heartbeat()
            self._writer.mark(session)
