"""Publisher retry logic against the real Redis, with transient failures injected in front
of it (on a fake clock, so that budgets are exact), against real permanent errors (a wrong
password, an ACL without PUBLISH), and against a closed port."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.codec import decode
from salon_sessions.core.events import EventSource, QrData
from salon_sessions.core.metrics import PublisherMetrics
from salon_sessions.core.publisher import Publisher, PublishFailed, RetryPolicy
from salon_sessions.core.redis_client import connect_redis

EVENT = EventSource("company_1", "company-1").event(QrData(code="2@x", timeout_s=20))


class FlakyRedis:
    """The real Redis behind a few injected transient failures; advances a fake clock."""

    def __init__(self, real: Redis, errors: list[Exception], clock: FakeClock,
                 call_s: float = 0.0) -> None:
        self.real = real
        self.errors = errors
        self.clock = clock
        self.call_s = call_s

    async def publish(self, channel: str, payload: bytes) -> int:
        self.clock.now += self.call_s
        if self.errors:
            raise self.errors.pop(0)
        return int(await self.real.publish(channel, payload))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
async def real_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _sample(registry: CollectorRegistry, name: str) -> float:
    """By type, except the latency histogram (all types together: bounded series)."""
    labels = {} if name.startswith("salon_pubsub_publish_seconds") else {"type": "qr"}
    return registry.get_sample_value(name, labels) or 0.0


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


async def test_transient_errors_are_retried_then_published(real_redis: Redis) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    channel = f"test:publisher:{uuid.uuid4().hex}"
    redis = FlakyRedis(real_redis, [RedisConnectionError("down"), OSError("reset")], clock)
    publisher = _publisher(redis, clock, RetryPolicy(max_attempts=5), registry)
    async with real_redis.pubsub() as sub:
        await sub.subscribe(channel)
        assert await publisher.publish(EVENT, channel) == 1  # our subscriber
        async with asyncio.timeout(5):
            while (msg := await sub.get_message(ignore_subscribe_messages=True,
                                                timeout=1)) is None:
                pass
    assert decode(msg["data"]) == EVENT
    assert len(clock.sleeps) == 2
    assert clock.sleeps[1] > clock.sleeps[0] / 2
    assert _sample(registry, "salon_pubsub_publish_attempts_total") == 3
    assert _sample(registry, "salon_pubsub_publish_retries_total") == 2
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 0
    assert _sample(registry, "salon_pubsub_publish_seconds_count") == 1


async def test_attempts_are_bounded(real_redis: Redis) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = FlakyRedis(real_redis, [RedisConnectionError("down")] * 10, clock)
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


async def test_total_time_is_bounded(real_redis: Redis) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    redis = FlakyRedis(real_redis, [RedisConnectionError("down")] * 100, clock, call_s=0.5)
    policy = RetryPolicy(max_attempts=100, max_total_s=3.0, backoff=Backoff(0.2, 0.4))
    start = clock.now
    with pytest.raises(PublishFailed):
        await _publisher(redis, clock, policy, registry).publish(EVENT)
    assert clock.now - start <= 3.0 + 0.5  # never sleeps past the budget
    assert _sample(registry, "salon_pubsub_publish_attempts_total") < 10


async def test_a_wrong_password_is_not_retried(redis_url: str) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    client = connect_redis(_with_credentials(redis_url, "default", "wrong-password"))
    try:
        with pytest.raises(PublishFailed, match="after 1 attempt") as caught:
            await _publisher(client, clock, RetryPolicy(), registry).publish(EVENT)
    finally:
        await client.aclose()
    assert isinstance(caught.value.last_error, AuthenticationError)
    assert clock.sleeps == []
    assert _sample(registry, "salon_pubsub_publish_attempts_total") == 1
    assert _sample(registry, "salon_pubsub_publish_failures_total") == 1


async def test_a_missing_publish_permission_is_not_retried(real_redis: Redis,
                                                           redis_url: str) -> None:
    user, password = f"t-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await real_redis.execute_command("ACL", "SETUSER", user, "on", f">{password}",
                                     "~*", "&*", "+@all", "-publish")
    client = connect_redis(_with_credentials(redis_url, user, password))
    clock, registry = FakeClock(), CollectorRegistry()
    try:
        with pytest.raises(PublishFailed, match="after 1 attempt") as caught:
            await _publisher(client, clock, RetryPolicy(), registry).publish(EVENT)
    finally:
        await client.aclose()
        await real_redis.execute_command("ACL", "DELUSER", user)
    assert isinstance(caught.value.last_error, NoPermissionError)
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
