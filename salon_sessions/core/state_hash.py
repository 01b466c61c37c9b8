"""The session state hash (`whatsapp:session:<company>`): one typed model, one writer's
serialisation (`StateHash.to_fields`) and one parser (`parse_state_hash`).

The worker that holds a session's lock writes it on every change and as its heartbeat (with
a TTL); the operator reads it to keep `.status` true and to judge the worker alive, the API
reads it to show the onboarding page and the console what the worker says right now. Before
this module the hash was built in two places and parsed by hand in three, each with its own
idea of an unreadable field.

Reading rules (every reader gets the same answers):
- Redis stores strings; `None` is written as an empty string and read back as `None`.
- A hash that breaks the bounds of worker facts (`core.bounds`: `seq` outside int64,
  numbered or dated beyond the horizon) is refused whole (`StateHashRefused`): nobody shows
  "connected" on the word of a forged hash.
- A `reason`, `passkey_code`, `phone` or `pairing_code_phone` of the wrong shape is dropped
  (read as `None`): free text from the hash is never shown or turned into a condition.
- Any other field that is present but unreadable (a phase nobody knows, a date that is not a
  date) is read as `None` and named in `unreadable`: a reader that shows the whole state
  (the API) refuses such a hash, a reader that takes single facts from it (the operator)
  uses the readable ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Final

from salon_sessions.core.bounds import Horizon, parse_seq, parse_time, state_out_of_bounds
from salon_sessions.core.events import PasskeyStage
from salon_sessions.core.phone import valid_phone
from salon_sessions.core.redis_client import as_text
from salon_sessions.core.resource import Phase

REASON_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
"""A reason's shape (`core.whatsapp_reasons` names and `code_<n>`)."""
PASSKEY_CODE_PATTERN: Final = r"^[A-Z0-9]{4}-[A-Z0-9]{4}$"

_SHAPES: Final = {
    "reason": re.compile(REASON_PATTERN),
    "passkey_code": re.compile(PASSKEY_CODE_PATTERN),
}
_PHONES: Final = frozenset({"phone", "pairing_code_phone"})
_FLAGS: Final = frozenset({"linked", "connected", "pairing_code_pending"})
_ENVELOPE: Final = frozenset({"pod", "driver", "session", "lock", "metrics_port", "seq",
                              "heartbeat_at", "post_connect_hook"})
"""What the worker adds around the session's state: written only when set (the session's
own fields are always written, `None` as an empty string)."""


class StateHashRefused(ValueError):
    """The hash breaks the bounds of worker facts; `why` is `"seq"` or `"future"`."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__("seq out of range" if why == "seq"
                         else "numbered or dated beyond the horizon")


@dataclass(frozen=True, slots=True)
class StateHash:
    """What a worker says of its session. The first group is the session's state machine
    (`worker.state.SessionState.snapshot`), the second what the worker adds around it."""

    phase: Phase | None = None
    linked: bool = False
    connected: bool = False
    phone: str | None = None
    jid: str | None = None
    pairing_code_pending: bool = False
    pairing_code_expires_at: datetime | None = None
    pairing_code_phone: str | None = None
    last_error: str | None = None
    reason: str | None = None
    will_retry: bool | None = None
    retry_at: datetime | None = None
    passkey_stage: PasskeyStage | None = None
    passkey_code: str | None = None
    last_connected_at: datetime | None = None
    link_expires_at: datetime | None = None
    updated_at: datetime | None = None

    pod: str | None = None
    driver: str | None = None
    session: str | None = None
    """The SalonSession's name: a hash under another session's key is not that session's."""
    lock: str | None = None
    metrics_port: int | None = None
    seq: int | None = None
    """The worker's sequence number when it wrote this state (shared with its events)."""
    heartbeat_at: datetime | None = None
    post_connect_hook: str | None = None

    unreadable: frozenset[str] = frozenset()
    """Fields that were present but could not be read (never written by a worker)."""

    def to_fields(self) -> dict[str, str]:
        """The hash's fields as the worker writes them (all strings)."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name == "unreadable":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in _ENVELOPE:
                continue
            out[f.name] = _text(value)
        return out


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Phase | PasskeyStage):
        return value.value
    return str(value)


def parse_state_hash(raw: Mapping[bytes, bytes] | Mapping[str, str], horizon: Horizon,
                     now: datetime | None = None) -> StateHash | None:
    """A hash as HGETALL returns it (bytes or text); None when it is empty. Raises
    `StateHashRefused` when it breaks the bounds of worker facts."""
    if not raw:
        return None
    text = {as_text(k, "replace"): as_text(v, "replace") for k, v in raw.items()}
    if (why := state_out_of_bounds(text, horizon, now)) is not None:
        raise StateHashRefused(why)
    values: dict[str, object] = {}
    unreadable: set[str] = set()
    for f in fields(StateHash):
        value = text.get(f.name, "")
        if f.name == "unreadable" or not value:
            continue
        if f.name in _FLAGS:
            values[f.name] = value == "true"
            continue
        parsed = _read(f.name, value)
        if parsed is None:
            if f.name not in _SHAPES and f.name not in _PHONES:
                unreadable.add(f.name)
            continue
        values[f.name] = parsed
    return StateHash(**values, unreadable=frozenset(unreadable))  # type: ignore[arg-type]


def _read(name: str, value: str) -> object | None:
    if name in _PHONES:
        return valid_phone(value)
    if name in _SHAPES:
        return value if _SHAPES[name].fullmatch(value) else None
    if name.endswith("_at"):
        return parse_time(value)
    if name == "phase":
        return _enum(Phase, value)
    if name == "passkey_stage":
        return _enum(PasskeyStage, value)
    if name == "will_retry":
        return {"true": True, "false": False}.get(value)
    if name == "seq":
        return parse_seq(value)
    if name == "metrics_port":
        return int(value) if value.isascii() and value.isdigit() else None
    return value


def _enum(kind: type[Phase] | type[PasskeyStage], value: str) -> object | None:
    try:
        return kind(value)
    except ValueError:
        return None
