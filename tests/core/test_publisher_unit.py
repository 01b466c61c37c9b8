"""Publisher retry logic against a scripted Redis stand-in and against a closed port."""

from __future__ import annotations

import random
import socket

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.codec import decode
from salon_sessions.core.events import EventSource, QrData
from salon_sessions.core.metrics import PublisherMetrics
from salon_sessions.core.publisher import Publisher, PublishFailed, RetryPolicy
from salon_sessions.core.redis_client import connect_redis

EVENT = EventSource("company_1", "company-1").event(QrData(code="2@x", timeout_s=20))


class ScriptedRedis:
    """Fails with the scripted errors, then succeeds; advances a fake clock per call."""

    def __init__(self, errors: list[Exception], clock: FakeClock, call_s: float = 0.0) -> None:
        self.errors = errors
        self.clock = clock
        self.call_s = call_s
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, channel: str, payload: bytes) -> int:
        self.clock.now += self.call_s
        if self.errors:
            raise self.errors.pop(0)
        self.published.append((channel, payload))
        return 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, {"type": "qr"}) or 0.0


def _publisher(redis: object, clock: FakeClock, policy: RetryPolicy,
               registry: CollectorRegistry) -> Publisher:
    return Publisher(redis, PublisherMetrics(registry), policy=policy,  # type: ignore[arg-type]
                     sleep=clock.sleep, clock=clock, rng=random.Random(7))


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    rng = random.Random(1)
    for n, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)]:
        delays = {backoff.delay(n, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


async def test_transient_errors_are_retried_then_published() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = ScriptedRedis([RedisConnectionError("down"), OSError("reset")], clock)
    publisher = _publisher(redis, clock, RetryPolicy(max_attempts=5), registry)
    assert await publisher.publish(EVENT) == 3
    assert decode(redis.published[0][1]) == EVENT
    assert redis.published[0][0] == "whatsapp:events"
    assert len(clock.sleeps) == 2
    assert clock.sleeps[1] > clock.sleeps[0] / 2
    assert _sample(registry, "salon_pubsub_publish_attempts_total") == 3
    assert _sample(registry, "salon_pubsub_publish_retries_total") == 2
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 0
    assert _sample(registry, "salon_pubsub_publish_seconds_count") == 1


async def test_attempts_are_bounded() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = ScriptedRedis([RedisConnectionError("down")] * 10, clock)
    publisher = _publisher(redis, clock, RetryPolicy(max_attempts=4, max_total_s=100),
                           registry)
    with pytest.raises(PublishFailed, match="after 4 attempt") as caught:
        await publisher.publish(EVENT)
    assert isinstance(caught.value.last_error, RedisConnectionError)
    assert len(redis.errors) == 6
    assert _sample(registry, "salon_pubsub_publish_attempts_total") == 4
    assert _sample(registry, "salon_pubsub_publish_retries_total") == 3
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 1
    assert _sample(registry, "salon_pubsub_publish_seconds_count") == 0


async def test_total_time_is_bounded() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = ScriptedRedis([RedisConnectionError("down")] * 100, clock, call_s=0.5)
    policy = RetryPolicy(max_attempts=100, max_total_s=3.0, backoff=Backoff(0.2, 0.4))
    start = clock.now
    with pytest.raises(PublishFailed):
        await _publisher(redis, clock, policy, registry).publish(EVENT)
    assert clock.now - start <= 3.0 + 0.5  # never sleeps past the budget
    assert _sample(registry, "salon_pubsub_publish_attempts_total") < 10


@pytest.mark.parametrize("error", [AuthenticationError("bad password"), ResponseError("NOPERM")])
async def test_permanent_errors_are_not_retried(error: Exception) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = ScriptedRedis([error], clock)
    with pytest.raises(PublishFailed, match="after 1 attempt"):
        await _publisher(redis, clock, RetryPolicy(), registry).publish(EVENT)
    assert clock.sleeps == []
    assert _sample(registry, "salon_pubsub_publish_attempts_total") == 1
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 1


async def test_unreachable_redis_fails_after_bounded_attempts() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = CollectorRegistry()
    client = connect_redis(f"redis://:pw@127.0.0.1:{port}/0")
    publisher = Publisher(client, PublisherMetrics(registry),
                          policy=RetryPolicy(max_attempts=3, backoff=Backoff(0.01, 0.02)))
    try:
        with pytest.raises(PublishFailed, match="after 3 attempt"):
            await publisher.publish(EVENT)
    finally:
        await client.aclose()
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 1
    assert _sample(registry, "salon_pubsub_publish_retries_total") == 2
