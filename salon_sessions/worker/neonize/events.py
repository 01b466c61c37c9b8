"""Pure mapping from neonize's protobuf events to the driver's `DriverFact`s.

Inputs are neonize's own messages (`neonize.proto.Neonize_pb2`), typed `Any` because
neonize ships no type information. JIDs and phones go through `core.phone` only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from salon_sessions.core.phone import (
    InvalidJid,
    InvalidPhone,
    JidKind,
    LidResolver,
    Resolved,
    parse_jid,
    phone_from_user_jid,
    phone_of,
    user_jid,
)
from salon_sessions.core.whatsapp_reasons import from_neonize_enum, temp_ban_name
from salon_sessions.worker.driver import (
    ConnectFailure,
    InboundMessage,
    LoggedOut,
    PairSuccess,
    TemporaryBan,
)

NEONIZE_TEMP_BAN_CODES: Final = {1: 101, 2: 102, 3: 103, 4: 104, 5: 106}
"""neonize's `TempBanReason` enum numbers -> WhatsApp's codes (whatsmeow `TempBanReason`)."""


def event_name(event: Any) -> str:
    """The protobuf message name of a neonize event (`Connected`, `Message`, ...)."""
    descriptor = getattr(type(event), "DESCRIPTOR", None)
    return str(getattr(descriptor, "name", type(event).__name__))


def enum_name(message: Any, field: str, default: str = "unknown") -> str:
    """`LOGGED_OUT` -> `logged_out` for an enum field; `default` when it is unset."""
    try:
        if not message.HasField(field):
            return default
        descriptor = type(message).DESCRIPTOR.fields_by_name[field].enum_type
        value = descriptor.values_by_number.get(int(getattr(message, field)))
    except (AttributeError, KeyError, ValueError):
        return default
    return str(value.name).lower() if value is not None else default


def jid_text(jid: Any) -> str | None:
    """`user[.agent][:device]@server` of a neonize `JID`, or None when it is empty."""
    if jid is None:
        return None
    user, server = str(jid.User), str(jid.Server)
    if bool(jid.IsEmpty) or not server:
        return None
    agent, device = int(jid.RawAgent), int(jid.Device)
    return (f"{user}{f'.{agent}' if agent else ''}{f':{device}' if device else ''}"
            f"@{server}")


def _field(message: Any, name: str) -> Any | None:
    try:
        return getattr(message, name) if message.HasField(name) else None
    except ValueError:
        return None


def user_phone(jid: str) -> str | None:
    """The phone of a phone-number JID; None for a LID, a group or anything else."""
    try:
        return phone_from_user_jid(jid)
    except InvalidPhone:
        return None


def pair_success(event: Any) -> PairSuccess | None:
    """`PairStatus` (status SUCCESS) -> `PairSuccess`; the phone only from a phone JID."""
    jid = jid_text(_field(event, "ID"))
    if jid is None:
        return None
    return PairSuccess(jid=jid, phone=user_phone(jid))


def logged_out(event: Any) -> LoggedOut:
    """`Reason` in our names: neonize's `main_device_gone` is `locked` (403),
    `unknown_logout` is `banned` (406)."""
    reason = from_neonize_enum(enum_name(event, "Reason", "logged_out"))
    return LoggedOut(reason=reason, on_connect=bool(event.OnConnect))


def temporary_ban(event: Any, now: datetime | None = None) -> TemporaryBan:
    """`Expire` is the ban's remaining duration in seconds (0: unknown); `Code` becomes
    WhatsApp's code's name (`sent_to_too_many_people`)."""
    seconds = int(event.Expire) if event.HasField("Expire") else 0
    expires = (now or datetime.now(UTC)) + timedelta(seconds=seconds) if seconds > 0 else None
    number = int(event.Code) if event.HasField("Code") else 0
    code = NEONIZE_TEMP_BAN_CODES.get(number)
    return TemporaryBan(code=temp_ban_name(code) if code else "temp_banned", expires_at=expires)


def connect_failure(event: Any) -> ConnectFailure:
    return ConnectFailure(reason=from_neonize_enum(enum_name(event, "Reason", "generic")),
                          message=str(event.Message))


def message_text(message: Any) -> str | None:
    """Text of a `conversation` or `extendedTextMessage`; None for anything else."""
    if message is None:
        return None
    if message.HasField("conversation"):
        return str(message.conversation)
    if message.HasField("extendedTextMessage") and message.extendedTextMessage.HasField("text"):
        return str(message.extendedTextMessage.text)
    return None


def _timestamp(value: int) -> datetime | None:
    """neonize sends milliseconds (`UnixMilli`); tolerate seconds from older cores."""
    if value <= 0:
        return None
    seconds = value / 1000 if value > 100_000_000_000 else float(value)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


async def inbound_message(event: Any, resolver: LidResolver, *,
                          offline: bool = False) -> InboundMessage | None:
    """`Message` -> `InboundMessage` for text messages (None for other kinds).

    `sender_alt_jid` is WhatsApp's `SenderAlt` when it sent one; for a LID sender without
    it, the phone JID found through the store's LID map (None when unknown).
    `offline`: WhatsApp delivered it from the queue it kept while the client was away
    (`extra["offline"] = "true"`; whatsmeow's `MessageInfo` has no such field, the driver
    knows it from the `OfflineSyncPreview` / `OfflineSyncCompleted` events around it)."""
    info = _field(event, "Info")
    if info is None:
        return None
    text = message_text(_field(event, "Message"))
    if text is None:
        return None
    source = _field(info, "MessageSource")
    if source is None:
        return None
    chat = jid_text(_field(source, "Chat"))
    sender = jid_text(_field(source, "Sender"))
    if chat is None or sender is None:
        return None
    alt = jid_text(_field(source, "SenderAlt"))
    if alt is None:
        try:
            parsed = parse_jid(sender)
        except InvalidJid:
            parsed = None
        if parsed is not None and parsed.kind is JidKind.LID:
            found = await phone_of(parsed, resolver)
            if isinstance(found, Resolved):
                alt = user_jid(found.phone)
    extra: dict[str, str] = {}
    push_name = str(info.Pushname) if info.HasField("Pushname") else ""
    if push_name:
        extra["push_name"] = push_name
    if bool(source.IsGroup):
        extra["is_group"] = "true"
    if bool(event.IsEdit) or (info.HasField("Edit") and str(info.Edit)):
        extra["edit"] = "true"
    if offline:
        extra["offline"] = "true"
    return InboundMessage(
        message_id=str(info.ID), chat_jid=chat, sender_jid=sender, text=text,
        from_me=bool(source.IsFromMe),
        timestamp=_timestamp(int(info.Timestamp)) if info.HasField("Timestamp") else None,
        sender_alt_jid=alt, extra=extra)
