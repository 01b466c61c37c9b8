"""Publish events to Redis with bounded retries (exponential backoff with jitter)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.channels import events_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import Event
from salon_sessions.core.metrics import PublisherMetrics

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, TimeoutError, OSError,
)
"""Transient errors. Authentication and command errors (`RedisError`) fail at once."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_s: float = 10.0
    attempt_timeout_s: float = 2.0
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_total_s <= 0 or self.attempt_timeout_s <= 0:
            raise ValueError("retry policy bounds must be positive")


class PublishFailed(Exception):
    def __init__(self, channel: str, event_type: str, attempts: int, elapsed_s: float,
                 last_error: BaseException | None) -> None:
        self.channel = channel
        self.event_type = event_type
        self.attempts = attempts
        self.last_error = last_error
        cause = f"{type(last_error).__name__}: {last_error}"
        super().__init__(f"publishing {event_type} to {channel} failed after {attempts} "
                         f"attempt(s) in {elapsed_s:.2f}s: {cause}")


class Publisher:
    """Publishes events; retries transient Redis errors within `policy`'s bounds."""

    def __init__(self, redis: Redis, metrics: PublisherMetrics, *,
                 policy: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._redis = redis
        self._metrics = metrics
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    async def publish(self, event: Event, channel: str | None = None) -> int:
        """Publish `event` on `channel` (default: its company's events channel); returns the
        number of subscribers that received it.

        Raises `PublishFailed` when the attempts or the time budget run out, or at once on
        a non-transient error.
        """
        payload = encode(event)
        channel = channel or events_channel(event.company_id)
        kind = event.type.value
        policy = self._policy
        started = self._clock()
        deadline = started + policy.max_total_s
        last: BaseException | None = None
        attempt = 0
        while attempt < policy.max_attempts:
            attempt += 1
            self._metrics.attempts.labels(kind).inc()
            remaining = deadline - self._clock()
            try:
                async with asyncio.timeout(min(policy.attempt_timeout_s, max(remaining, 0.001))):
                    receivers = await self._redis.publish(channel, payload)
            except AuthenticationError as exc:
                last = exc
                break
            except RETRYABLE as exc:
                last = exc
            except RedisError as exc:  # a command error: retrying cannot help
                last = exc
                break
            else:
                self._metrics.latency.observe(self._clock() - started)
                return int(receivers)
            if attempt >= policy.max_attempts:
                break
            delay = policy.backoff.delay(attempt, self._rng)
            if self._clock() + delay >= deadline:
                break
            self._metrics.retries.labels(kind).inc()
            log.warning("publish of %s to %s failed (attempt %d: %s: %s); retrying in %.3fs",
                        kind, channel, attempt, type(last).__name__, last, delay,
                        extra={"company_id": event.company_id})
            await self._sleep(delay)
        self._metrics.failures.labels(kind).inc()
        raise PublishFailed(channel, kind, attempt, self._clock() - started, last)
