"""Publisher and subscriber against the stack's real Redis, including a Redis restart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.channels import health_ping_channel
from salon_sessions.core.events import Event, EventSource, PingData, QrData
from salon_sessions.core.metrics import ConsumerMetrics, PublisherMetrics, SubscriberMetrics
from salon_sessions.core.publisher import Publisher, RetryPolicy
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.subscriber import Gap, PubSubMessage, ResilientSubscriber, iter_events

SOURCE = EventSource("company_42", "company-42")


async def _until(check: Callable[[], object], within: float = 30, what: str = "it") -> None:
    """Poll `check`; the bound only stops a broken test, it is not a speed assertion."""
    try:
        async with asyncio.timeout(within):
            while True:
                if check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def _collecting(sub: ResilientSubscriber) -> AsyncIterator[list[Event]]:
    received: list[Event] = []

    async def run() -> None:
        registry = CollectorRegistry()
        async with contextlib.aclosing(sub.messages()) as messages:
            async for event in iter_events(messages, ConsumerMetrics(registry), "test"):
                received.append(event)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 30)
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _qr(n: int) -> Event:
    return SOURCE.event(QrData(code=f"2@code-{n}", timeout_s=20))


async def test_publish_subscribe_round_trip_and_drops(redis_url: str) -> None:
    channel = f"test:{uuid.uuid4().hex}"
    client = connect_redis(redis_url)
    registry = CollectorRegistry()
    consumer = ConsumerMetrics(registry)
    sub = ResilientSubscriber(client, [channel], name="rt", metrics=SubscriberMetrics(registry))
    received: list[Event] = []

    async def run() -> None:
        async with contextlib.aclosing(sub.messages()) as messages:
            async for event in iter_events(messages, consumer, "rt"):
                received.append(event)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 30)
        publisher = Publisher(client, PublisherMetrics(registry))
        await client.publish(channel, b"{garbage")
        await client.publish(channel, b'{"v": 9, "type": "qr"}')
        sent = _qr(1)
        assert await publisher.publish(sent, channel) == 1
        await _until(lambda: received, what="the event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
    assert received == [sent]
    assert registry.get_sample_value(
        "salon_events_dropped_total", {"consumer": "rt", "reason": "malformed"}) == 1
    assert registry.get_sample_value(
        "salon_events_dropped_total", {"consumer": "rt", "reason": "unknown_version"}) == 1
    assert registry.get_sample_value(
        "salon_events_consumed_total", {"consumer": "rt", "type": "qr"}) == 1


async def test_pattern_subscription_receives_per_session_pings(redis_url: str) -> None:
    client = connect_redis(redis_url)
    prefix = f"test:{uuid.uuid4().hex}:"
    sub = ResilientSubscriber(client, patterns=[prefix + "*"], name="pat",
                              metrics=SubscriberMetrics(CollectorRegistry()))
    messages: list[PubSubMessage] = []

    async def run() -> None:
        async with contextlib.aclosing(sub.messages()) as it:
            async for message in it:
                messages.append(message)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 30)
        channel = prefix + health_ping_channel("7")
        await client.publish(channel, b"hello")
        await _until(lambda: messages)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
    assert messages == [PubSubMessage(channel=channel, data=b"hello", pattern=prefix + "*")]


@pytest.mark.slow
async def test_subscriber_and_publisher_survive_a_redis_restart(
        redis_url: str, restart_redis: Callable[[], None]) -> None:
    channel = f"test:{uuid.uuid4().hex}"
    registry = CollectorRegistry()
    sub_client, pub_client = connect_redis(redis_url), connect_redis(redis_url)
    gaps: list[Gap] = []
    sub = ResilientSubscriber(sub_client, [channel], name="restart",
                              metrics=SubscriberMetrics(registry), on_gap=gaps.append,
                              backoff=Backoff(0.05, 0.5))
    publisher = Publisher(pub_client, PublisherMetrics(registry),
                          policy=RetryPolicy(max_attempts=50, max_total_s=60,
                                             backoff=Backoff(0.05, 0.5)))
    try:
        async with _collecting(sub) as received:
            await publisher.publish(_qr(1), channel)
            await _until(lambda: len(received) == 1, what="the first event")

            # Publish continuously while Redis restarts: every publish must succeed
            # (retried through the outage), none may raise.
            stop = asyncio.Event()

            async def keep_publishing() -> int:
                n = 0
                while not stop.is_set():
                    n += 1
                    await publisher.publish(SOURCE.event(PingData(correlation_id=f"p{n}")),
                                            channel)
                    await asyncio.sleep(0.02)
                return n

            publishing = asyncio.create_task(keep_publishing())
            await asyncio.to_thread(restart_redis)
            await _until(lambda: gaps, what="the gap report")
            await asyncio.wait_for(sub.subscribed.wait(), 30)
            stop.set()
            published = await publishing
            assert published > 0

            after = _qr(2)
            assert await publisher.publish(after, channel) == 1
            await _until(lambda: any(e.id == after.id for e in received), what="event after")
            assert registry.get_sample_value(
                "salon_pubsub_subscriber_connected", {"subscriber": "restart"}) == 1
    finally:
        await sub_client.aclose()
        await pub_client.aclose()

    assert len(gaps) == 1
    assert gaps[0].seconds > 0
    assert gaps[0].ended_at > gaps[0].started_at
    assert registry.get_sample_value(
        "salon_pubsub_subscriber_reconnects_total", {"subscriber": "restart"}) == 1
    assert registry.get_sample_value(
        "salon_pubsub_subscriber_gap_seconds_count", {"subscriber": "restart"}) == 1
    assert registry.get_sample_value(
        "salon_pubsub_subscriber_connected", {"subscriber": "restart"}) == 0  # stopped
    assert not sub.subscribed.is_set()
    assert registry.get_sample_value(
        "salon_pubsub_publish_failures_total", {"type": "ping"}) in (None, 0)
