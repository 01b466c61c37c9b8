"""A Redis pub/sub subscription that survives Redis restarts, and an event decoder on top.

Redis pub/sub does not buffer: whatever is published while a subscriber is disconnected is
lost. `ResilientSubscriber` therefore reconnects and resubscribes with backoff, and reports
every such gap (callback, log line, `salon_pubsub_subscriber_gap_seconds`) so that its
consumer can re-read the state it may have missed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.bounds import Horizon
from salon_sessions.core.codec import Rejection, decode
from salon_sessions.core.events import Event, event_ahead
from salon_sessions.core.metrics import ConsumerMetrics, SubscriberMetrics
from salon_sessions.core.publisher import RETRYABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    channel: str
    data: bytes
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """A period without a subscription; messages published during it were missed."""

    started_at: datetime
    ended_at: datetime
    seconds: float
    error: str


GapHandler = Callable[[Gap], Awaitable[None] | None]


class ResilientSubscriber:
    def __init__(self, redis: Redis, channels: Sequence[str] = (),
                 patterns: Sequence[str] = (), *, name: str,
                 metrics: SubscriberMetrics, on_gap: GapHandler | None = None,
                 backoff: Backoff | None = None, poll_s: float = 1.0,
                 subscribe_timeout_s: float = 5.0, rng: random.Random | None = None) -> None:
        if not channels and not patterns:
            raise ValueError("subscribe to at least one channel or pattern")
        self._redis = redis
        self._channels = tuple(channels)
        self._patterns = tuple(patterns)
        self._name = name
        self._metrics = metrics
        self._on_gap = on_gap
        self._backoff = backoff or Backoff(base=0.1, cap=5.0)
        self._poll_s = poll_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._rng = rng or random.Random()
        self.subscribed = asyncio.Event()
        """Set while the subscription is confirmed by Redis."""

    async def messages(self) -> AsyncIterator[PubSubMessage]:
        """Messages forever; cancel the consumer (or `aclose()` the iterator) to stop."""
        lost_at: tuple[float, datetime, str] | None = None
        failures = 0
        delay = 0.0
        while True:
            pubsub = self._redis.pubsub()
            try:
                buffered = await self._subscribe(pubsub)
                failures = 0
                self.subscribed.set()
                self._metrics.connected.labels(self._name).set(1)
                if lost_at is not None:
                    await self._report_gap(*lost_at)
                    lost_at = None
                for message in buffered:
                    yield message
                while True:
                    received = _parse(await pubsub.get_message(timeout=self._poll_s))
                    if received is not None:
                        yield received
            except RETRYABLE as exc:
                failures += 1
                if lost_at is None:
                    cause = f"{type(exc).__name__}: {exc}"
                    lost_at = (time.monotonic(), datetime.now(UTC), cause)
                    log.warning("subscriber %s lost Redis (%s); reconnecting", self._name, cause)
                delay = self._backoff.delay(failures, self._rng)
                log.debug("subscriber %s: attempt %d failed, next in %.2fs",
                          self._name, failures, delay)
            finally:
                self.subscribed.clear()
                self._metrics.connected.labels(self._name).set(0)
                await _close_quietly(pubsub)
            await asyncio.sleep(delay)

    async def _subscribe(self, pubsub: PubSub) -> list[PubSubMessage]:
        buffered: list[PubSubMessage] = []
        async with asyncio.timeout(self._subscribe_timeout_s):
            if self._channels:
                await pubsub.subscribe(*self._channels)
            if self._patterns:
                await pubsub.psubscribe(*self._patterns)
            pending = len(self._channels) + len(self._patterns)
            while pending:
                raw = await pubsub.get_message(timeout=self._poll_s)
                if raw is not None and raw.get("type") in ("subscribe", "psubscribe"):
                    pending -= 1
                elif (message := _parse(raw)) is not None:
                    buffered.append(message)
        return buffered

    async def _report_gap(self, since: float, started_at: datetime, error: str) -> None:
        seconds = time.monotonic() - since
        gap = Gap(started_at=started_at, ended_at=started_at + timedelta(seconds=seconds),
                  seconds=seconds, error=error)
        self._metrics.reconnects.labels(self._name).inc()
        self._metrics.gap_seconds.labels(self._name).observe(seconds)
        log.warning("subscriber %s resubscribed after a %.2fs gap; messages published "
                    "meanwhile were missed", self._name, seconds)
        if self._on_gap is not None:
            try:
                result = self._on_gap(gap)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("gap handler of subscriber %s failed", self._name)


def _parse(raw: dict[str, Any] | None) -> PubSubMessage | None:
    if raw is None or raw.get("type") not in ("message", "pmessage"):
        return None
    data = raw["data"]
    pattern = raw.get("pattern")
    return PubSubMessage(
        channel=_text(raw["channel"]),
        data=data if isinstance(data, bytes) else str(data).encode(),
        pattern=None if pattern is None else _text(pattern),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except Exception:  # the connection may already be gone
        log.debug("closing a pubsub failed", exc_info=True)


FutureHandler = Callable[[Event], None]


async def iter_decoded(messages: AsyncIterator[PubSubMessage], metrics: ConsumerMetrics,
                       consumer: str, horizon: Horizon | None = None, *,
                       on_future: FutureHandler | None = None,
                       ) -> AsyncIterator[tuple[PubSubMessage, Event]]:
    """`iter_events` with each event's message (for a consumer that routes on the
    channel). `on_future`: the consumer rejects the events beyond the horizon itself; they
    are then counted as consumed (handed over), not as dropped, and not yielded."""
    horizon = horizon or Horizon()
    async for message in messages:
        result = decode(message.data, channel=message.channel)
        if isinstance(result, Rejection):
            metrics.dropped.labels(consumer, result.reason.value).inc()
            log.warning("%s dropped a message on %s: %s (%s)", consumer, message.channel,
                        result.reason.value, result.detail)
            continue
        if event_ahead(result, horizon):
            if on_future is not None:
                metrics.consumed.labels(consumer, result.type.value).inc()
                on_future(result)
                continue
            metrics.dropped.labels(consumer, "future").inc()
            log.warning("%s dropped a %s event on %s: beyond the horizon", consumer,
                        result.type.value, message.channel)
            continue
        metrics.consumed.labels(consumer, result.type.value).inc()
        yield message, result


async def iter_events(messages: AsyncIterator[PubSubMessage], metrics: ConsumerMetrics,
                      consumer: str, horizon: Horizon | None = None) -> AsyncIterator[Event]:
    """Decode messages to events; count and drop everything the decoder rejects (including
    an event on another company's channel), and the events beyond the horizon
    (`core.bounds`, reason `future`)."""
    async for _, event in iter_decoded(messages, metrics, consumer, horizon):
        yield event
