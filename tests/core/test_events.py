from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salon_sessions.core.codec import (
    MAX_EVENT_BYTES,
    EventTooLarge,
    Rejection,
    RejectReason,
    decode,
    encode,
)
from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventData,
    EventSource,
    EventType,
    LinkedData,
    LinkedEvent,
    LinkExpiredData,
    LoggedOutData,
    PairingCodeData,
    PairingCodeEvent,
    PasskeyRequiredData,
    PasskeyStage,
    PingData,
    PongData,
    QrData,
    SeqCounter,
)

SOURCE = EventSource("962302", "company-962302")

ONE_OF_EACH: list[EventData] = [
    QrData(code="2@abc,def,ghi,jkl", timeout_s=20),
    PairingCodeData(code="ABCD-EFGH", phone="+7 968 648-44-88"),
    LinkedData(jid="79686484488:32@s.whatsapp.net", phone="79686484488", method="qr"),
    ConnectedData(jid="79686484488:32@s.whatsapp.net"),
    DisconnectedData(reason="stream replaced", will_reconnect=True),
    LoggedOutData(reason="401", on_connect=True),
    PasskeyRequiredData(stage=PasskeyStage.CONFIRMATION, code="ABCD-EF12"),
    LinkExpiredData(expire_after_s=1800),
    ErrorData(code="store_unavailable", message="db down", fatal=False),
    PingData(correlation_id="c0ffee"),
    PongData(correlation_id="c0ffee"),
]


def test_every_type_has_a_model() -> None:
    assert {SOURCE.event(d).type for d in ONE_OF_EACH} == set(EventType)


@pytest.mark.parametrize("data", ONE_OF_EACH, ids=lambda d: type(d).__name__)
def test_round_trip(data: EventData) -> None:
    event = SOURCE.event(data)
    wire = encode(event)
    decoded = decode(wire)
    assert decoded == event
    assert decode(wire.decode()) == event
    obj = json.loads(wire)
    assert set(obj) == {"v", "id", "type", "company_id", "session", "seq", "ts", "data"}
    assert obj["v"] == 1
    assert obj["company_id"] == "company_962302"


def test_envelope_is_canonical_and_typed() -> None:
    event = SOURCE.event(PairingCodeData(code="abcd-efgh", phone="79686484488"),
                         ts=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert isinstance(event, PairingCodeEvent)
    assert event.data.code == "ABCDEFGH"
    assert event.data.display == "ABCD-EFGH"
    assert json.loads(encode(event))["ts"] == "2025-01-02T03:04:05Z"


def test_seq_increases_per_source_even_if_the_clock_goes_back() -> None:
    readings = iter([100, 100, 50, 200, 10])
    counter = SeqCounter(clock_us=lambda: next(readings))
    assert [counter.next() for _ in range(5)] == [100, 101, 102, 200, 201]


def test_seq_of_a_restarted_source_continues_above_the_old_one() -> None:
    before = [SOURCE.event(ONE_OF_EACH[0]).seq for _ in range(3)]
    restarted = EventSource("company_962302", "company-962302")
    assert restarted.event(ONE_OF_EACH[0]).seq > max(before)
    assert before == sorted(set(before))


def _valid() -> dict[str, Any]:
    return json.loads(encode(SOURCE.event(ONE_OF_EACH[2])))


def _with(**changes: Any) -> bytes:
    obj = _valid()
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", RejectReason.MALFORMED),
    (b"{not json", RejectReason.MALFORMED),
    (b"\xff\xfe\x00", RejectReason.MALFORMED),
    (b"[1, 2]", RejectReason.MALFORMED),
    (b'"linked"', RejectReason.MALFORMED),
    (b"[" * 100_000 + b"]" * 100_000, RejectReason.OVERSIZED),
    (b"[" * 30_000 + b"]" * 30_000, RejectReason.MALFORMED),
    (_with(v=2), RejectReason.UNKNOWN_VERSION),
    (_with(v="1"), RejectReason.UNKNOWN_VERSION),
    (_with(v=True), RejectReason.UNKNOWN_VERSION),
    (_with(v=...), RejectReason.UNKNOWN_VERSION),
    (_with(type="message"), RejectReason.UNKNOWN_TYPE),
    (_with(type=...), RejectReason.UNKNOWN_TYPE),
    (_with(type=None), RejectReason.UNKNOWN_TYPE),
    (_with(company_id="salon-1"), RejectReason.INVALID),
    (_with(session="Not_A_Name"), RejectReason.INVALID),
    (_with(seq=-1), RejectReason.INVALID),
    (_with(ts="yesterday"), RejectReason.INVALID),
    (_with(ts="2025-01-01T00:00:00"), RejectReason.INVALID),  # naive time
    (_with(data=...), RejectReason.INVALID),
    (_with(data={"jid": "120363025246125486@g.us"}), RejectReason.INVALID),
    (_with(data={"jid": "79686484488@s.whatsapp.net", "phone": "123"}), RejectReason.INVALID),
    (_with(type="pairing_code"), RejectReason.INVALID),
])
def test_bad_input_is_a_typed_rejection_not_an_exception(raw: bytes, reason: RejectReason) -> None:
    result = decode(raw)
    assert isinstance(result, Rejection)
    assert result.reason is reason, result.detail
    assert result.size == len(raw)


def test_rejection_names_fields_without_echoing_values() -> None:
    secret = "hunter2-" * 4
    result = decode(_with(data={"jid": secret}))
    assert isinstance(result, Rejection)
    assert "data.jid" in result.detail
    assert secret not in result.detail


def test_oversized_is_checked_before_parsing() -> None:
    obj = _valid()
    obj["data"]["push_name"] = "x" * 200
    raw = json.dumps(obj).encode()
    assert isinstance(decode(raw), LinkedEvent)
    result = decode(raw, max_bytes=len(raw) - 1)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.OVERSIZED


def test_encoding_an_oversized_event_raises() -> None:
    event = SOURCE.event(QrData(code="x" * 4096, timeout_s=20))
    assert len(encode(event)) < MAX_EVENT_BYTES
    with pytest.raises(EventTooLarge):
        encode(event, max_bytes=1000)


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    obj = _valid()
    obj["trace_id"] = "abc"
    obj["data"]["new_field"] = 1
    assert isinstance(decode(json.dumps(obj)), LinkedEvent)


@given(st.binary(max_size=300))
def test_decode_never_raises_on_random_bytes(raw: bytes) -> None:
    result = decode(raw)
    assert isinstance(result, Rejection)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["v", "type", "data", "seq", "ts", "id", "code"]),
                      children, max_size=5),
    max_leaves=20,
))
def test_decode_never_raises_on_random_json(obj: object) -> None:
    result = decode(json.dumps(obj))
    assert isinstance(result, Rejection)


def test_correlation_ids_name_their_origin() -> None:
    from salon_sessions.core.events import correlation_id, correlation_origin

    operator_id, api_id = correlation_id("operator"), correlation_id("api")
    assert correlation_origin(operator_id) == "operator"
    assert correlation_origin(api_id) == "api"
    assert operator_id != correlation_id("operator")
    assert correlation_origin("0123456789abcdef") == ""
    PingData(correlation_id=operator_id)  # fits the wire pattern
