"""The state hash's one writer and one parser (`core.state_hash`) agree, and the reading
rules are the same for every reader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.events import PasskeyStage
from salon_sessions.core.resource import Phase
from salon_sessions.core.state_hash import StateHash, StateHashRefused, parse_state_hash

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def written() -> StateHash:
    return StateHash(phase=Phase.PAIRING_CODE_ISSUED, linked=False, connected=False,
                     pairing_code_pending=True, pairing_code_phone="79686484488",
                     pairing_code_expires_at=NOW + timedelta(minutes=3),
                     passkey_stage=PasskeyStage.CONFIRMATION, passkey_code="ABCD-1234",
                     reason="banned", will_retry=False, updated_at=NOW, pod="w-0",
                     driver="simulator", session="company-1", lock="holding the session lock",
                     metrics_port=9100, seq=42, heartbeat_at=NOW)


def as_redis(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_what_the_worker_writes_reads_back_the_same() -> None:
    state = written()
    fields = state.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert (fields["linked"], fields["will_retry"], fields["phone"]) == ("false", "false", "")
    assert "post_connect_hook" not in fields  # an envelope field is written only when set
    assert parse_state_hash(as_redis(fields), Horizon(), NOW) == state
    assert parse_state_hash(fields, Horizon(), NOW) == state


def test_an_empty_hash_is_absent() -> None:
    assert parse_state_hash({}, Horizon(), NOW) is None


def test_free_text_is_dropped_and_other_garbage_named_unreadable() -> None:
    fields = written().to_fields() | {
        "reason": "Owned By Mallory", "passkey_code": "<script>", "phone": "+1 555",
        "phase": "Hacked", "updated_at": "yesterday", "will_retry": "maybe",
        "metrics_port": "-1"}
    state = parse_state_hash(fields, Horizon(), NOW)
    assert state is not None
    assert (state.reason, state.passkey_code, state.phone) == (None, None, None)
    assert (state.phase, state.updated_at, state.will_retry) == (None, None, None)
    assert state.unreadable == {"phase", "updated_at", "will_retry", "metrics_port"}
    assert state.seq == 42  # the readable facts are kept


@pytest.mark.parametrize(("change", "why"), [
    ({"seq": "9" * 30}, "seq"),
    ({"updated_at": (NOW + timedelta(days=400)).isoformat()}, "future"),
])
def test_a_hash_beyond_the_bounds_is_refused_whole(change: dict[str, str], why: str) -> None:
    with pytest.raises(StateHashRefused) as refused:
        parse_state_hash(written().to_fields() | change, Horizon(), NOW)
    assert refused.value.why == why
