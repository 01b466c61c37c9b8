"""The background consumer of the sessions' events (`whatsapp:events:<company>`) and pongs
(`whatsapp:health:pong:<company>`), both subscribed by pattern.

Every message is decoded by `core.subscriber.iter_decoded` (`core.codec`, the decoder every
consumer shares); what the decoder rejects is counted and dropped, including an event that
names another company than its channel's (`wrong_company`: with per-session Redis users a
worker can publish on its own channels only, so this is what a forged event looks like).
Decoded events are refused, counted, when they name no session this operator knows, when
their `session` is not the SalonSession of their `company_id`, when they are numbered or
dated beyond the horizon (`core.bounds`: a forged `seq` near 2**63 would freeze the status
forever), or when their `seq`
is not above the last one applied (duplicates and late arrivals). Nothing else changes the
status, so garbage and hostile messages change nothing.

A gap in the subscription (Redis restarted) triggers a heartbeat reconciliation: pub/sub
does not buffer, the state hashes are the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from salon_sessions.core.bounds import DEFAULT_MAX_SKEW_S, Horizon
from salon_sessions.core.channels import EVENTS_PATTERN, HEALTH_PONG_PATTERN, HEALTH_PONG_PREFIX
from salon_sessions.core.events import Event, EventType, PongEvent, event_ahead
from salon_sessions.core.subscriber import Gap, ResilientSubscriber, iter_decoded
from salon_sessions.operator.metrics import CONSUMER, OperatorMetrics
from salon_sessions.operator.model import Applied
from salon_sessions.operator.registry import Registry, Session
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)


class EventsConsumer:
    def __init__(self, redis: Redis, registry: Registry, writer: StatusWriter,
                 metrics: OperatorMetrics, *, on_pong: Callable[[PongEvent], None],
                 on_applied: Callable[[Session, Event], None],
                 on_gap: Callable[[Gap], None],
                 max_skew_s: float = DEFAULT_MAX_SKEW_S) -> None:
        self._redis = redis
        self._registry = registry
        self._writer = writer
        self._metrics = metrics
        self._on_pong = on_pong
        self._on_applied = on_applied
        self._on_gap = on_gap
        self._horizon = Horizon(max_skew_s)
        self.subscriber = ResilientSubscriber(
            redis, patterns=[EVENTS_PATTERN, HEALTH_PONG_PATTERN], name=CONSUMER,
            metrics=metrics.subscriber, on_gap=self._gap)

    def _gap(self, gap: Gap) -> None:
        self._on_gap(gap)

    async def run(self) -> None:
        async for message, event in iter_decoded(
                self.subscriber.messages(), self._metrics.consumer, CONSUMER, self._horizon,
                on_future=self._future):
            self.route(message.channel, event)

    def _future(self, event: Event) -> None:
        self._reject("future", event)

    def route(self, channel: str, result: Event) -> None:
        """A decoded event within the horizon: a pong to the pinger, a session event to
        its owner's model."""
        if channel.startswith(HEALTH_PONG_PREFIX):
            if isinstance(result, PongEvent):
                self._on_pong(result)
            elif result.type is not EventType.PING:
                self._reject("unexpected_type", result)
            return
        if result.type in (EventType.PING, EventType.PONG):
            self._reject("unexpected_type", result)
            return
        self.apply(result)

    def _reject(self, reason: str, event: Event) -> None:
        self._metrics.events_rejected.labels(reason).inc()
        log.info("event %s %s refused: %s", event.type.value, event.id, reason,
                 extra={"company_id": event.company_id})

    def apply(self, event: Event) -> None:
        owner = self._registry.owner(event.company_id)
        if owner is None:
            self._reject("unknown_session", event)
            return
        now = datetime.now(UTC)
        if event_ahead(event, self._horizon, now):  # handle() checked it; apply() is public
            self._reject("future", event)
            return
        if event.session != owner.name:  # a duplicate SalonSession runs no worker
            self._reject("session_mismatch", event)
            return
        outcome = owner.model.apply_event(event, now)
        if outcome is not Applied.APPLIED:
            self._reject(outcome.value, event)
            return
        if self._writer.mark(owner) and owner.pending_event_ts is None:
            owner.pending_event_ts = event.ts
        self._on_applied(owner, event)
