"""Encode events to bytes and decode bytes to events, with a size limit; and the one
"parse JSON, validate, summarise without values" pipeline every wire input goes through
(`load_json` + `validate`: control requests, send commands, simulator actions, events).

`decode` never raises on bad input: it returns a `Rejection` whose `reason` consumers count
(`events_dropped_total{reason}`) before dropping the message; given the channel a message
came on, it also refuses an event that names another company than the channel's.
Rejection details name the offending fields but never echo their values (a malformed
message may carry anything).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from salon_sessions.core.channels import channel_company
from salon_sessions.core.events import EVENT_ADAPTER, EVENT_VERSION, Event, EventType

MAX_EVENT_BYTES: Final = 64 * 1024
_TYPES: Final = frozenset(t.value for t in EventType)


class RejectReason(enum.StrEnum):
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    WRONG_COMPANY = "wrong_company"
    """A valid event on another company's channel: forged, or a publisher's bug."""


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    size: int


M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """Bad wire input. `code` is machine-readable (`oversized`, `malformed`, `invalid`);
    the message names sizes and fields, never values (the input may carry anything)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


def load_json(raw: bytes | str, max_bytes: int, *, what: str = "") -> Any:
    """Bytes (or text) to a JSON value within `max_bytes`; raises `DecodeError`
    (`what` names the input in the message: `"payload is not JSON"`)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} bytes, limit {max_bytes}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise DecodeError("malformed", f"{what} is not JSON" if what else "not JSON") from None


def validate(model: type[M], obj: Any) -> M:
    """`obj` as a `model`; raises `DecodeError("invalid", "invalid fields: a, b.c")`
    naming at most five fields."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("invalid", f"invalid fields: {fields_at_fault(exc)}") from None


def fields_at_fault(exc: ValidationError) -> str:
    return ", ".join(".".join(str(p) for p in e["loc"]) or "<root>"
                     for e in exc.errors(include_input=False, include_url=False)[:5])


class EventTooLarge(ValueError):
    """An event that would exceed the size limit (a bug in the publisher, not bad input)."""


def encode(event: Event, *, max_bytes: int = MAX_EVENT_BYTES) -> bytes:
    payload = event.model_dump_json().encode()
    if len(payload) > max_bytes:
        raise EventTooLarge(f"{event.type} event is {len(payload)} bytes, limit {max_bytes}")
    return payload


def decode(raw: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES,
           channel: str | None = None) -> Event | Rejection:
    """Bytes to an event, or the reason not to accept them. With the `channel` it came on,
    when that is a company's events or pong channel (`core.channels.channel_company`), an
    event whose `company_id` is not the channel's is refused too: every company publishes
    on its own channels only."""
    result = _decode(raw, max_bytes)
    company = None if channel is None else channel_company(channel)
    if company is None or isinstance(result, Rejection):
        return result
    if company != result.company_id:
        return Rejection(RejectReason.WRONG_COMPANY, "company_id is not the channel's",
                         len(raw))
    return result


def _decode(raw: bytes | str, max_bytes: int) -> Event | Rejection:
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    try:
        obj = load_json(raw, max_bytes)
    except DecodeError as exc:
        return Rejection(RejectReason(exc.code), str(exc), size)
    if not isinstance(obj, dict):
        return Rejection(RejectReason.MALFORMED, f"not a JSON object: {type(obj).__name__}",
                         size)
    version = obj.get("v")
    if type(version) is not int or version != EVENT_VERSION:
        shown = repr(version)[:20] if "v" in obj else "missing"
        return Rejection(RejectReason.UNKNOWN_VERSION, f"v={shown}", size)
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        shown = repr(kind)[:40] if "type" in obj else "missing"
        return Rejection(RejectReason.UNKNOWN_TYPE, f"type={shown}", size)
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        return Rejection(RejectReason.INVALID, _summary(exc), size)


def _message(err: ErrorDetails) -> str:
    """Pydantic's message, except for our own validators, whose messages quote the input."""
    if err["type"] != "value_error":
        return err["msg"]
    error = err.get("ctx", {}).get("error")
    why = getattr(error, "why", None)
    return f"invalid value: {why}" if isinstance(why, str) else "invalid value"


def _summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"] if p not in _TYPES)
        parts.append(f"{loc or '<root>'}: {_message(err)}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
