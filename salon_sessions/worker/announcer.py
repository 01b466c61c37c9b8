"""What the session tells its consumers: its events on Redis (`core.publisher`), and the
latest QR code kept beside them for the API's QR endpoint.

One object, injected wherever something must be said (the session's facts, control
requests, the post-connect hook, the outbound sender's errors), so that every event of the
session goes out with the same source and sequence, and a lost one is logged, not raised:
the state hash still carries the truth and the operator re-reads it.
"""

from __future__ import annotations

import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels
from salon_sessions.core.events import (
    ErrorData,
    EventData,
    EventSource,
    LinkedData,
    LinkExpiredData,
    LoggedOutData,
    QrData,
)
from salon_sessions.core.publisher import Publisher, PublishFailed

log = logging.getLogger(__name__)


class Announcer:
    """Publishes the session's events (one source, one sequence) and keeps the latest QR."""

    def __init__(self, redis: Redis, publisher: Publisher, source: EventSource) -> None:
        self._redis = redis
        """For the latest QR code, set and deleted beside the events."""
        self._publisher = publisher
        self._source = source
        self._company = source.company_id

    async def publish(self, out: list[EventData]) -> None:
        for data in out:
            with contextlib.suppress(RedisError, OSError):
                if isinstance(data, QrData):
                    await self._redis.set(channels.latest_qr_key(self._company), data.code,
                                          ex=max(data.timeout_s, 5))
                elif isinstance(data, LinkedData | LoggedOutData | LinkExpiredData):
                    await self._redis.delete(channels.latest_qr_key(self._company))
            try:
                await self._publisher.publish(self._source.event(data))
            except PublishFailed as exc:
                # the state hash still carries the truth; the operator re-reads it
                log.error("event lost: %s", exc, extra={"company_id": self._company})

    async def report_error(self, code: str, message: str) -> None:
        await self.publish([ErrorData(code=code, message=message[:2048])])

    async def publish_error(self, data: ErrorData) -> None:
        await self.publish([data])
