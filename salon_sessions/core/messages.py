"""The message streams a bot reads and writes (docs/BOT.md): the send command on
`whatsapp:messages:out:<company>`, its results on `whatsapp:messages:results:<company>`,
and the salons' inbound messages on `whatsapp:messages:in:<company>`.

These are wire contracts between the session worker and every bot, like the event envelope
(`core.events`): the worker builds and reads them with these definitions only, and a bot
written in Python may import them. Stream entries are flat string fields (Redis streams);
a command carries its JSON in one `payload` field so that it can be validated as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from salon_sessions.core.codec import DecodeError, load_json, validate
from salon_sessions.core.company import CompanyId
from salon_sessions.core.phone import Phone

MAX_COMMAND_BYTES: Final = 64 * 1024
MAX_TEXT: Final = 4096
MAX_RESULT_ERROR: Final = 1024

IdempotencyKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class SendText(BaseModel):
    """An outbound command: `{"v": 1, "type": "send_text", "company_id": ..., ...}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    type: Literal["send_text"]
    company_id: CompanyId
    idempotency_key: IdempotencyKey
    to: Phone
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class CommandRejected(Exception):
    """A command that is never sent: `reason` is machine-readable, `key` the idempotency
    key when the command had a readable one (so the bot can match the result)."""

    def __init__(self, reason: str, detail: str, key: str = "") -> None:
        self.reason, self.detail, self.key = reason, detail, key
        super().__init__(f"{reason}: {detail}")


def parse_send_command(fields: Mapping[bytes, bytes], company_id: str) -> SendText:
    """An out-stream entry as a command for `company_id`; raises `CommandRejected`."""
    raw = fields.get(b"payload")
    if raw is None:
        raise CommandRejected("malformed", "the entry has no 'payload' field")
    try:
        obj: Any = load_json(raw, MAX_COMMAND_BYTES, what="payload")
    except DecodeError as exc:
        raise CommandRejected(exc.code, str(exc)) from None
    key = str(obj.get("idempotency_key", ""))[:128] if isinstance(obj, dict) else ""
    if not isinstance(obj, dict) or obj.get("type") != "send_text":
        kind = obj.get("type") if isinstance(obj, dict) else None
        raise CommandRejected("unknown_type", f"type {str(kind)[:40]!r} is not 'send_text'",
                              key)
    try:
        cmd = validate(SendText, obj)
    except DecodeError as exc:
        raise CommandRejected(exc.code, str(exc), key) from None
    if cmd.company_id != company_id:
        raise CommandRejected("wrong_company", "the command is for another company", key)
    return cmd


@dataclass(frozen=True, slots=True)
class SendResult:
    """A results-stream entry (docs/BOT.md, *Result entry fields*)."""

    company_id: str
    command_id: str
    """The out-stream entry id of the command."""
    idempotency_key: str
    status: str
    message_id: str = ""
    error: str = ""
    reason: str = ""
    expected_at: str = ""
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_fields(self) -> dict[str, str]:
        values = asdict(self)
        values["error"] = self.error[:MAX_RESULT_ERROR]
        values["ts"] = self.ts.isoformat()
        return {"v": "1", **values}


@dataclass(frozen=True, slots=True)
class InboundEntry:
    """An inbound-stream entry: one message a salon received (docs/BOT.md, *Inbound entry
    fields*). The sender is a phone number only when it is one (`sender_kind` `phone`);
    an unresolved LID is never shown as a number."""

    company_id: str
    message_id: str
    chat: str
    text: str
    from_me: bool
    ts: datetime
    """When WhatsApp says it was sent."""
    received_at: datetime
    delivered_late: bool
    sender_kind: str
    """`phone`, `unresolved_lid`, or what the sender is when it is not a person's number
    (`core.phone.JidKind`: `group`, `broadcast`, `newsletter`, `server`, `user`)."""
    sender_phone: str = ""
    sender_lid: str | None = None
    """Set (possibly empty) for `phone` and `unresolved_lid` senders."""
    sender_jid: str | None = None
    """Set for senders that are not a person's number."""

    def to_fields(self) -> dict[str, str]:
        out = {
            "v": "1", "company_id": self.company_id, "message_id": self.message_id,
            "chat": self.chat, "text": self.text, "from_me": _flag(self.from_me),
            "ts": self.ts.isoformat(), "received_at": self.received_at.isoformat(),
            "delivered_late": _flag(self.delivered_late),
            "sender_phone": self.sender_phone, "sender_kind": self.sender_kind,
        }
        if self.sender_lid is not None:
            out["sender_lid"] = self.sender_lid
        if self.sender_jid is not None:
            out["sender_jid"] = self.sender_jid
        return out


def _flag(value: bool) -> str:
    return "true" if value else "false"
