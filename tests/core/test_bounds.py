"""The one rule on what a worker claims about order and time (events and state hashes),
and the display-name rule (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from salon_sessions.api.models import SessionCreate
from salon_sessions.core.bounds import (
    SEQ_MAX,
    Horizon,
    parse_seq,
    state_out_of_bounds,
)
from salon_sessions.core.codec import Rejection, decode
from salon_sessions.core.display_name import (
    DISPLAY_NAME_CRD_PATTERN,
    DISPLAY_NAME_PATTERN,
    InvalidDisplayName,
    check_display_name,
)
from salon_sessions.core.events import ConnectedData, EventSource, event_ahead

NOW = datetime.now(UTC).replace(microsecond=0)  # one instant for the pure rules below
NOW_US = int(NOW.timestamp() * 1_000_000)


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("1764417600000000", 1764417600000000), (str(SEQ_MAX), SEQ_MAX),
    (str(SEQ_MAX + 1), None), ("99999999999999999999", None), ("-1", None), ("", None),
    ("12a", None), ("١٢", None), (" 1", None), ("1" * 400, None),
])
def test_parse_seq_keeps_int64(text: str, value: int | None) -> None:
    assert parse_seq(text) == value


def test_the_horizon_bounds_seq_and_times_alike() -> None:
    horizon = Horizon(300)
    assert not horizon.ahead(NOW_US, (NOW,), NOW)
    assert not horizon.ahead(NOW_US + 299 * 10**6, (NOW + timedelta(seconds=299),), NOW)
    assert horizon.ahead(NOW_US + 301 * 10**6, (), NOW)
    assert horizon.ahead(None, (NOW + timedelta(seconds=200),), NOW) is False
    assert Horizon(100).ahead(None, (NOW + timedelta(seconds=200),), NOW)
    assert horizon.ahead(SEQ_MAX + 1, (), NOW)
    assert horizon.ahead(-1, (), NOW)
    assert not horizon.ahead(None, (None,), NOW)


def test_events_use_the_same_rule() -> None:
    # the clock now, not at import: EventSource numbers by the real clock when it is called,
    # which is minutes after collection in a whole-suite run
    now = datetime.now(UTC)
    src = EventSource("company_1", "company-1")
    event = src.event(ConnectedData(), ts=now + timedelta(seconds=200))
    assert event_ahead(event, Horizon(100), now)
    assert not event_ahead(event, Horizon(300), now)
    # a seq beyond int64 never even decodes
    raw = event.model_dump_json().replace(f'"seq":{event.seq}', '"seq":99999999999999999999')
    assert isinstance(decode(raw), Rejection)


def test_state_hashes_use_the_same_rule() -> None:
    horizon = Horizon(300)
    good = {"seq": str(NOW_US), "updated_at": NOW.isoformat(), "heartbeat_at": NOW.isoformat(),
            "pairing_code_expires_at": (NOW + timedelta(hours=1)).isoformat()}
    assert state_out_of_bounds(good, horizon, NOW) is None
    assert state_out_of_bounds({}, horizon, NOW) is None
    assert state_out_of_bounds({**good, "seq": "99999999999999999999"}, horizon, NOW) == "seq"
    assert state_out_of_bounds({**good, "seq": "x"}, horizon, NOW) == "seq"
    assert state_out_of_bounds({**good, "seq": str(NOW_US + 10**12)}, horizon, NOW) == "future"
    later = (NOW + timedelta(seconds=400)).isoformat()
    for name in ("updated_at", "heartbeat_at", "last_connected_at"):
        assert state_out_of_bounds({**good, name: later}, horizon, NOW) == "future", name


@pytest.mark.parametrize("name", ["Salon Aurora", "Салон «Аврора»", "صالون", "美容院",
                                  "👩\u200d🎤 Studio",
                                  "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"])
def test_display_names_people_write(name: str) -> None:
    assert check_display_name(name) == name
    assert SessionCreate(company_id="1", display_name=name).display_name == name


@pytest.mark.parametrize("char", ["\x00", "\n", "\t", "\x1b", "\x7f", "\x85", "\u061c",
                                  "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069",
                                  "\u2028", "\ufeff"])
def test_control_and_bidi_characters_are_refused(char: str) -> None:
    with pytest.raises(InvalidDisplayName):
        check_display_name(f"Salon{char}x")
    with pytest.raises(ValidationError) as info:
        SessionCreate(company_id="1", display_name=f"Salon{char}x")
    assert "Salon" not in str(info.value)  # errors never echo the value


def test_the_two_spellings_are_one_class() -> None:
    """The CRD's RE2 pattern and Python's denote the same characters."""
    as_python = re.sub(r"\\x\{([0-9A-F]{4})\}", lambda m: f"\\u{m.group(1).lower()}",
                       DISPLAY_NAME_CRD_PATTERN)
    assert as_python == DISPLAY_NAME_PATTERN
