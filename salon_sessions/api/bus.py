"""The API's one Redis subscription, shared by everything that listens.

Patterns `whatsapp:events:*` (session events, fanned out to WebSocket clients by the hub)
and `whatsapp:health:pong:*` (pongs, matched to waiting `/health/pubsub` requests by
correlation id), and the API's own self-test channel (`/health/pubsub/simple`). An event
that names another company than its channel's is counted (`wrong_company`) and dropped.
Handlers run inline and never block (they only resolve futures and put into bounded
queues), so one slow client cannot hold up the subscription.

Decoding, the horizon and the counting are `core.subscriber.iter_decoded`'s, as for every
consumer: events numbered or dated beyond the horizon (`core.bounds`) are dropped and
counted as `salon_events_dropped_total{consumer="api", reason="future"}`: a forged
`connected` dated minutes ahead never reaches a page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from redis.asyncio import Redis

from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.core import channels
from salon_sessions.core.bounds import Horizon
from salon_sessions.core.events import Event, PongEvent
from salon_sessions.core.subscriber import Gap, PubSubMessage, ResilientSubscriber, iter_decoded

log = logging.getLogger(__name__)
CONSUMER = "api"
T = TypeVar("T")

EventHandler = Callable[[Event], None]
GapHandler = Callable[[Gap], Awaitable[None]]


class Waiters(Generic[T]):
    """Futures keyed by an id, resolved when the matching message arrives."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[T]] = {}

    def expect(self, key: str) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        return future

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)

    def resolve(self, key: str, value: T) -> bool:
        future = self._pending.pop(key, None)
        if future is None or future.done():
            return False
        future.set_result(value)
        return True

    def __len__(self) -> int:
        return len(self._pending)


class Bus:
    def __init__(self, redis: Redis, metrics: ApiMetrics, on_event: EventHandler,
                 on_gap: GapHandler, horizon: Horizon | None = None) -> None:
        self._metrics = metrics
        self._horizon = horizon or Horizon()
        self._on_event = on_event
        self.pongs: Waiters[tuple[PongEvent, float]] = Waiters()
        self.selftests: Waiters[float] = Waiters()
        self.subscriber = ResilientSubscriber(
            redis, [channels.API_SELFTEST_CHANNEL],
            [channels.EVENTS_PATTERN, channels.HEALTH_PONG_PATTERN], name=CONSUMER,
            metrics=metrics.subscriber, on_gap=on_gap)

    async def run(self) -> None:
        clock = time.perf_counter
        async for message, event in iter_decoded(self._without_selftests(),
                                                 self._metrics.consumer, CONSUMER,
                                                 self._horizon):
            if isinstance(event, PongEvent):
                self.pongs.resolve(event.data.correlation_id, (event, clock()))
            elif message.channel.startswith(channels.EVENTS_PREFIX):
                try:
                    self._on_event(event)
                except Exception:  # a bug in routing must not end the subscription
                    log.exception("routing a %s event failed", event.type.value,
                                  extra={"company_id": event.company_id})

    async def _without_selftests(self) -> AsyncIterator[PubSubMessage]:
        """The subscription's messages; the API's own self-test messages (not events)
        resolve their waiter here and go no further."""
        async for message in self.subscriber.messages():
            if message.channel == channels.API_SELFTEST_CHANNEL:
                self.selftests.resolve(message.data.decode(errors="replace"),
                                       time.perf_counter())
                continue
            yield message
