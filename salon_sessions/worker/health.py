"""The worker's answer to health pings (`whatsapp:health:ping:<company>`): a pong with the
session's phase on `whatsapp:health:pong:<company>`.

Its own object because it is the operator's liveness check of the session, separate from
what the session does: it answers only what it is asked (a ping of this company, anything
else counted as rejected), and the worker's listener calls it only as the proven holder of
the session lock (a standby stays silent and counts the ping as ignored).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels
from salon_sessions.core.codec import decode, encode
from salon_sessions.core.events import EventSource, PingEvent, PongData
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.state import SessionState


@dataclass(eq=False, kw_only=True)
class HealthResponder:
    """Answers this company's pings with the session's phase."""

    redis: Redis
    company_id: str
    source: EventSource
    state: SessionState
    metrics: WorkerMetrics

    async def on_ping(self, raw: bytes) -> None:
        ping = decode(raw)
        if not isinstance(ping, PingEvent) or ping.company_id != self.company_id:
            reason = getattr(ping, "reason", "wrong_company_or_type")
            self.metrics.rejected.labels("health", str(reason)).inc()
            return
        pong = self.source.event(PongData(correlation_id=ping.data.correlation_id,
                                          phase=self.state.phase))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(channels.health_pong_channel(self.company_id),
                                     encode(pong))
            self.metrics.pings.inc()

    def ignored(self) -> None:
        """A ping reached a worker that does not hold the session: it stays silent."""
        self.metrics.pings_ignored.inc()
