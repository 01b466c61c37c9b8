"""The simulated phone's actions, read from the simulator's Redis channel and checked.

Anyone who can publish on `whatsapp:simulator:<company>` plays the phone (the demo, the tests,
a developer with redis-cli), so every action is parsed into a typed value here before the
simulator acts on it. A bad action (unknown stage, a code that is not a number, ...) raises
`BadAction`: the simulator logs why and changes nothing, instead of half-applying it or
handing the worker a fact its own models would reject (a malformed passkey code would fail
`PasskeyRequiredData` inside the worker's event handler).

The numeric codes are WhatsApp's (`core.whatsapp_reasons`); turning them into names is the
simulator's job, as it is the production driver's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from salon_sessions.core.codec import DecodeError, load_json
from salon_sessions.core.events import PasskeyStage
from salon_sessions.core.phone import InvalidPhone, e164_digits

MAX_ACTION_BYTES: Final = 16 * 1024
MAX_CODE: Final = 999_999
"""Codes keep at most six digits (`core.whatsapp_reasons` names unknown ones `code_<n>`)."""
MAX_BAN_S: Final = 30 * 24 * 3600.0
DEFAULT_BAN_S: Final = 3600.0
DEFAULT_BAN_CODE: Final = 101
DEFAULT_REFUSAL_CODE: Final = 503
_PASSKEY_CODE: Final = re.compile(r"^([A-Z0-9]{4})-?([A-Z0-9]{4})$")


class BadAction(ValueError):
    """An action the simulated phone cannot perform; `why` is safe to log."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class Scan:
    qr: str
    phone: str


@dataclass(frozen=True, slots=True)
class EnterCode:
    code: str
    """Upper case, without the dash."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Network loss."""


@dataclass(frozen=True, slots=True)
class Logout:
    """The phone (or WhatsApp) removes the device; `code` is WhatsApp's (401/403/406)."""

    code: int | None = None


@dataclass(frozen=True, slots=True)
class Passkey:
    """WhatsApp asks the device being linked for the account's passkey."""

    stage: PasskeyStage
    code: str | None = None
    """`XXXX-XXXX`, the code the phone shows (confirmation stage)."""


@dataclass(frozen=True, slots=True)
class ReplaceStream:
    """Another client opens a stream with this session's credentials."""


@dataclass(frozen=True, slots=True)
class TempBan:
    code: int
    expire_s: float | None
    """Seconds until the ban ends; None: WhatsApp did not say (no reconnect)."""


@dataclass(frozen=True, slots=True)
class RefuseConnect:
    code: int


@dataclass(frozen=True, slots=True)
class Inbound:
    message_id: str | None
    chat: str
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class MapLid:
    lid: str
    phone: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Deliver what waits in the server's queue (records a test put there itself)."""


SEND_LIMIT_CODES: Final = {429: "rate_limited", 463: "reachout_restricted"}
"""WhatsApp's answers to a send that the breaker must stop at (`worker.driver`)."""


@dataclass(frozen=True, slots=True)
class SendLimit:
    """WhatsApp refuses the next `count` sends (429 rate limit, 463 reach-out restriction)."""

    code: int
    expire_s: float | None
    count: int = 1


@dataclass(frozen=True, slots=True)
class HoldSends:
    """The next send is delivered but its confirmation takes `seconds` (a worker killed
    meanwhile has sent without knowing it)."""

    seconds: float


PhoneAction = (Scan | EnterCode | Disconnect | Logout | Passkey | ReplaceStream | TempBan
               | RefuseConnect | Inbound | MapLid | Deliver | SendLimit | HoldSends)


def parse_action(raw: bytes) -> PhoneAction:
    """One message of the simulator channel as an action, or `BadAction`."""
    try:
        action = load_json(raw, MAX_ACTION_BYTES)
    except DecodeError as exc:
        raise BadAction(f"too large ({exc})" if exc.code == "oversized" else str(exc)) from None
    if not isinstance(action, dict) or not isinstance(action.get("action"), str):
        raise BadAction("no 'action' field")
    match action["action"]:
        case "scan":
            try:
                phone = e164_digits(str(action.get("phone", "")))
            except InvalidPhone as exc:
                raise BadAction(f"scan with a bad phone: {exc.why}") from None
            return Scan(qr=str(action.get("qr", "")), phone=phone)
        case "enter_code":
            return EnterCode(str(action.get("code", "")).replace("-", "").upper())
        case "disconnect":
            return Disconnect()
        case "logout":
            return Logout(_code(action, "code", None))
        case "passkey":
            return _passkey(action)
        case "stream_replaced":
            return ReplaceStream()
        case "temporary_ban":
            code = _code(action, "code", DEFAULT_BAN_CODE)
            assert code is not None
            return TempBan(code, _expire_s(action))
        case "connect_failure":
            code = _code(action, "code", DEFAULT_REFUSAL_CODE)
            assert code is not None
            return RefuseConnect(code)
        case "inbound":
            sender = str(action.get("from", ""))
            return Inbound(message_id=str(action["id"]) if action.get("id") else None,
                           chat=str(action.get("chat") or sender), sender=sender,
                           text=str(action.get("text", "")))
        case "map_lid":
            return MapLid(str(action.get("lid", "")), str(action.get("phone", "")))
        case "deliver":
            return Deliver()
        case "send_limit":
            code = _code(action, "code", 429)
            if code not in SEND_LIMIT_CODES:
                raise BadAction("send_limit code is 429 or 463")
            count = action.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 1000:
                raise BadAction("count is 1..1000")
            return SendLimit(code, _expire_s(action) if "expire_s" in action else None, count)
        case "hold_sends":
            seconds = action.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                    or not 0 < seconds <= 600:
                raise BadAction("seconds is 0..600")
            return HoldSends(float(seconds))
        case other:
            raise BadAction(f"unknown action {other[:40]!r}")


def _code(action: dict[str, Any], key: str, default: int | None) -> int | None:
    """A WhatsApp code: a JSON number or a string of digits, 1 to 999999."""
    value = action.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadAction(f"{key} is not a number")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,6}", value):
            raise BadAction(f"{key} is not a number")
        value = int(value)
    if not 0 < value <= MAX_CODE:
        raise BadAction(f"{key} out of range")
    return value


def _expire_s(action: dict[str, Any]) -> float | None:
    if "expire_s" not in action:
        return DEFAULT_BAN_S
    value = action["expire_s"]
    if value is None:
        return None  # WhatsApp did not say when the ban ends
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadAction("expire_s is not a number")
    if not 0 < value <= MAX_BAN_S:
        raise BadAction("expire_s out of range")
    return float(value)


def _passkey(action: dict[str, Any]) -> Passkey:
    try:
        stage = PasskeyStage(str(action.get("stage", "")))
    except ValueError:
        raise BadAction("passkey with an unknown stage") from None
    code = action.get("code")
    if code is None:
        return Passkey(stage)
    if stage is not PasskeyStage.CONFIRMATION:
        raise BadAction("a passkey code belongs to the confirmation stage")
    match = _PASSKEY_CODE.match(str(code).upper())
    if match is None:
        raise BadAction("passkey code is not XXXX-XXXX")
    return Passkey(stage, f"{match[1]}-{match[2]}")
