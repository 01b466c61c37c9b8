"""The simulated phone's actions are checked before the simulator acts on them (no stack)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from salon_sessions.core.events import PasskeyStage
from salon_sessions.worker.simulator.actions import (
    DEFAULT_BAN_CODE,
    DEFAULT_BAN_S,
    DEFAULT_REFUSAL_CODE,
    MAX_ACTION_BYTES,
    BadAction,
    Logout,
    Passkey,
    PhoneAction,
    RefuseConnect,
    ReplaceStream,
    Scan,
    TempBan,
    parse_action,
)


def parse(**action: Any) -> PhoneAction:
    return parse_action(json.dumps(action).encode())


@pytest.mark.parametrize(("action", "expected"), [
    ({"action": "logout"}, Logout(None)),
    ({"action": "logout", "code": 406}, Logout(406)),
    ({"action": "logout", "code": "403"}, Logout(403)),
    ({"action": "passkey", "stage": "request"}, Passkey(PasskeyStage.REQUEST)),
    ({"action": "passkey", "stage": "confirmation"}, Passkey(PasskeyStage.CONFIRMATION)),
    ({"action": "passkey", "stage": "confirmation", "code": "abcd2345"},
     Passkey(PasskeyStage.CONFIRMATION, "ABCD-2345")),
    ({"action": "stream_replaced"}, ReplaceStream()),
    ({"action": "temporary_ban"}, TempBan(DEFAULT_BAN_CODE, DEFAULT_BAN_S)),
    ({"action": "temporary_ban", "code": 107, "expire_s": 2.5}, TempBan(107, 2.5)),
    ({"action": "temporary_ban", "code": 102, "expire_s": None}, TempBan(102, None)),
    ({"action": "connect_failure"}, RefuseConnect(DEFAULT_REFUSAL_CODE)),
    ({"action": "connect_failure", "code": 419}, RefuseConnect(419)),
    ({"action": "scan", "qr": "2@x", "phone": "+7 968 648-44-88"}, Scan("2@x", "79686484488")),
])
def test_good_actions(action: dict[str, Any], expected: PhoneAction) -> None:
    assert parse(**action) == expected


@pytest.mark.parametrize(("action", "why"), [
    ({"action": "passkey"}, "unknown stage"),
    ({"action": "passkey", "stage": "approve"}, "unknown stage"),
    ({"action": "passkey", "stage": "request", "code": "ABCD-2345"}, "confirmation stage"),
    ({"action": "passkey", "stage": "confirmation", "code": "ABC-2345"}, "XXXX-XXXX"),
    ({"action": "logout", "code": "four hundred"}, "not a number"),
    ({"action": "logout", "code": True}, "not a number"),
    ({"action": "logout", "code": 4.5}, "not a number"),
    ({"action": "logout", "code": 0}, "out of range"),
    ({"action": "connect_failure", "code": "5o3"}, "not a number"),
    ({"action": "connect_failure", "code": 10**7}, "out of range"),
    ({"action": "temporary_ban", "code": [101]}, "not a number"),
    ({"action": "temporary_ban", "expire_s": "soon"}, "not a number"),
    ({"action": "temporary_ban", "expire_s": -1}, "out of range"),
    ({"action": "temporary_ban", "expire_s": 10**9}, "out of range"),
    ({"action": "scan", "qr": "2@x", "phone": "12"}, "bad phone"),
    ({"action": "explode"}, "unknown action"),
    ({"no": "action"}, "no 'action'"),
])
def test_bad_actions_are_refused_with_a_reason(action: dict[str, Any], why: str) -> None:
    with pytest.raises(BadAction) as refused:
        parse(**action)
    assert why in refused.value.why


def test_oversized_and_malformed_messages() -> None:
    with pytest.raises(BadAction, match="too large"):
        parse_action(b"{" + b" " * MAX_ACTION_BYTES + b"}")
    with pytest.raises(BadAction, match="not JSON"):
        parse_action(b"{nope")
    with pytest.raises(BadAction, match="no 'action'"):
        parse_action(b"[1, 2]")
