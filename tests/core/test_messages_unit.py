"""The bot-facing stream contracts (`core.messages`): a send command is read whole or
refused with a reason that names no value; result and inbound entries are flat strings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from salon_sessions.core.messages import (
    MAX_COMMAND_BYTES,
    CommandRejected,
    InboundEntry,
    SendResult,
    parse_send_command,
)

COMPANY = "company_1"
GOOD = {"v": 1, "type": "send_text", "company_id": COMPANY, "idempotency_key": "k-1",
        "to": "79686484488", "text": "Hello"}


def entry(payload: object) -> dict[bytes, bytes]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {b"payload": raw}


def test_a_good_command_is_read() -> None:
    cmd = parse_send_command(entry(GOOD), COMPANY)
    assert (cmd.to, cmd.text, cmd.idempotency_key) == ("79686484488", "Hello", "k-1")


@pytest.mark.parametrize(("fields", "reason", "key"), [
    ({}, "malformed", ""),
    (entry(b"{nope"), "malformed", ""),
    (entry(b"x" * (MAX_COMMAND_BYTES + 1)), "oversized", ""),
    (entry(GOOD | {"type": "send_image"}), "unknown_type", "k-1"),
    (entry(GOOD | {"to": "secret-text-123"}), "invalid", "k-1"),
    (entry(GOOD | {"company_id": "company_2"}), "wrong_company", "k-1"),
])
def test_bad_commands_are_refused_with_a_reason(fields: dict[bytes, bytes], reason: str,
                                                key: str) -> None:
    with pytest.raises(CommandRejected) as refused:
        parse_send_command(fields, COMPANY)
    assert (refused.value.reason, refused.value.key) == (reason, key)
    assert "secret-text-123" not in str(refused.value)


def test_result_and_inbound_entries_are_flat_strings() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    result = SendResult(COMPANY, "1-0", "k-1", "failed", error="x" * 5000, ts=at).to_fields()
    assert (result["v"], result["status"], len(result["error"])) == ("1", "failed", 1024)
    assert result["ts"] == at.isoformat()
    inbound = InboundEntry(COMPANY, "m1", "79686484488@s.whatsapp.net", "Hi", False, at, at,
                           True, "unresolved_lid", sender_lid="123@lid").to_fields()
    assert (inbound["from_me"], inbound["delivered_late"], inbound["sender_phone"],
            inbound["sender_lid"]) == ("false", "true", "", "123@lid")
    assert "sender_jid" not in inbound
