"""`iter_decoded` without Redis: each event with the message it came in; what the decoder
refuses (an event on another company's channel included) and what lies beyond the horizon
is counted and dropped, as `iter_events` (which wraps it) does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from salon_sessions.core.channels import events_channel, health_pong_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import DisconnectedData, EventSource
from salon_sessions.core.metrics import ConsumerMetrics
from salon_sessions.core.subscriber import PubSubMessage, iter_decoded, iter_events

SOURCE = EventSource("company_7", "company-7")


async def _messages(*messages: PubSubMessage) -> AsyncIterator[PubSubMessage]:
    for message in messages:
        yield message


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_events_come_with_their_channel_and_the_rest_is_counted() -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    on_events = SOURCE.event(DisconnectedData(reason="a"))
    on_pongs = SOURCE.event(DisconnectedData(reason="b"))
    ahead = SOURCE.event(DisconnectedData(reason="c")).model_copy(
        update={"ts": datetime.now(UTC) + timedelta(hours=1)})
    messages = [
        PubSubMessage(events_channel("company_7"), encode(on_events)),
        PubSubMessage(health_pong_channel("company_7"), encode(on_pongs)),
        PubSubMessage(events_channel("company_8"), encode(on_events)),  # another company's
        PubSubMessage(events_channel("company_7"), b"{garbage"),
        PubSubMessage(events_channel("company_7"), encode(ahead)),
    ]
    got = [(message.channel, event.id) async for message, event in
           iter_decoded(_messages(*messages), metrics, "test")]
    assert got == [(events_channel("company_7"), on_events.id),
                   (health_pong_channel("company_7"), on_pongs.id)]
    assert _value(registry, "salon_events_dropped_total", consumer="test",
                  reason="wrong_company") == 1
    assert _value(registry, "salon_events_dropped_total", consumer="test",
                  reason="malformed") == 1
    assert _value(registry, "salon_events_dropped_total", consumer="test",
                  reason="future") == 1
    events = [e.id async for e in iter_events(_messages(*messages), metrics, "test")]
    assert events == [on_events.id, on_pongs.id]
