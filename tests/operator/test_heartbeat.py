"""The heartbeat's age decides (not only the hash's presence), and a hash beyond the bounds
vouches for nothing. The reconciler's decision on one read, with a stub status writer and
explicit clocks (no Redis: `_apply` is what runs on each hash read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from salon_sessions.core.resource import Phase
from salon_sessions.operator.heartbeat import HeartbeatReconciler
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Registry, Session

WALL = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MONO = 1000.0
TTL = 30.0


class Writer:
    def __init__(self) -> None:
        self.marked = 0

    def mark(self, session: Session, *, urgent: bool | None = None) -> bool:
        self.marked += 1
        return True


def setup() -> tuple[HeartbeatReconciler, Session, OperatorMetrics]:
    registry = Registry()
    session = registry.observe({
        "metadata": {"name": "company-1", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"companyId": "company_1"}})
    assert session is not None
    session.model.reconciled(1, suspended=False)
    metrics = OperatorMetrics(CollectorRegistry())
    hb = HeartbeatReconciler(None, registry, Writer(), metrics,  # type: ignore[arg-type]
                             ttl_s=TTL)
    return hb, session, metrics


def raw(beat: datetime, **fields: str) -> dict[bytes, bytes]:
    base: dict[str, Any] = {
        "seq": str(int(beat.timestamp() * 1_000_000)), "phase": "Connected",
        "linked": "true", "connected": "true", "phone": "79686484488",
        "session": "company-1", "updated_at": beat.isoformat(),
        "heartbeat_at": beat.isoformat(), **fields}
    return {k.encode(): str(v).encode() for k, v in base.items()}


def test_connected_lasts_at_most_the_ttl_after_the_last_heartbeat() -> None:
    hb, session, _ = setup()
    beat = WALL - timedelta(seconds=20)  # the worker froze 20 s ago, right after a write
    hb._apply(session, raw(beat), int(TTL * 1000), MONO, WALL)
    assert session.model.connected is True
    # Redis says the hash lives 10 more s; the heartbeat says the same: deadline MONO + 10
    later = 9.9
    hb._apply(session, {}, -2, MONO + later, WALL + timedelta(seconds=later))
    assert session.model.connected is True
    hb._apply(session, {}, -2, MONO + 10.0, WALL + timedelta(seconds=10))
    assert session.model.connected is False
    assert session.model.heartbeat_lost is True
    assert [w.reason for w in session.model.warnings] == ["HeartbeatLost"]
    assert hb.next_deadline() is None  # lost: nothing to wake up for


def test_a_hash_whose_heartbeat_is_older_than_the_ttl_is_no_sign_of_life() -> None:
    hb, session, _ = setup()
    stale = WALL - timedelta(seconds=TTL + 5)  # kept without an expiry (TTL -1)
    hb._apply(session, raw(stale), -1, MONO, WALL)
    assert session.model.connected is False  # not applied
    hb._apply(session, raw(stale), -1, MONO + TTL, WALL + timedelta(seconds=TTL))
    assert session.model.heartbeat_lost is True


def test_redis_expiry_caps_a_heartbeat_from_a_clock_ahead() -> None:
    hb, session, _ = setup()
    ahead = WALL + timedelta(seconds=10)  # within the skew
    hb._apply(session, raw(ahead), 3000, MONO, WALL)  # but Redis drops it in 3 s
    assert session.model.connected is True
    deadline = hb.next_deadline()
    assert deadline is not None
    assert abs(deadline - (MONO + 3.0)) < 1e-6


def test_a_hash_beyond_the_bounds_is_refused_and_vouches_for_nothing() -> None:
    hb, session, metrics = setup()
    forged = raw(WALL, seq="99999999999999999999")
    hb._apply(session, forged, 30000, MONO, WALL)
    ahead = raw(WALL + timedelta(seconds=200))
    hb._apply(session, ahead, 30000, MONO, WALL)
    assert session.model.connected is False
    assert session.model.last_event_seq == 0
    assert metrics.heartbeats_rejected.labels("seq")._value.get() == 1
    assert metrics.heartbeats_rejected.labels("future")._value.get() == 1
    hb._apply(session, {}, -2, MONO + TTL, WALL + timedelta(seconds=TTL))
    assert session.model.heartbeat_lost is True
    session.model.refresh(WALL)
    assert session.model.phase is Phase.STARTING
