"""WhatsApp's refusal, logout and ban codes, and the names the whole system uses for them.

WhatsApp ends or refuses a session with numeric codes (whatsmeow's `ConnectFailureReason`
and `TempBanReason`). They travel as lower-case names: in event data (`logged_out.reason`,
`error.code`), in the worker's state hash (`last_error`) and, CamelCased, as status
condition reasons (`Banned`, `Locked`). The onboarding page translates the same names.

One place for the table, because the codes reach us two ways that must agree: as neonize
events (whose protobuf enums know only some codes) and parsed from whatsmeow's log lines
(for the codes neonize cannot encode, see `worker.neonize.logs`). A code that is in
neither table keeps its number (`code_419`), so it is never lost on the way.
"""

from __future__ import annotations

import enum
import re
from typing import Final


class LogoutReason(enum.StrEnum):
    """Why the device is no longer linked (the credentials are gone)."""

    LOGGED_OUT = "logged_out"
    """401: the phone removed the device (or WhatsApp did, e.g. after a long absence)."""
    LOCKED = "locked"
    """403 (whatsmeow `MainDeviceGone`; WhatsApp Web calls it LOCKED): the account is locked."""
    BANNED = "banned"
    """406 (whatsmeow `UnknownLogout`; WhatsApp Web calls it BANNED): the number is banned."""
    DEVICE_REMOVED = "device_removed"
    """Our finding: the device's credentials vanished from the store while connecting."""
    ON_REQUEST = "on_request"
    """Unlinked through this system (`logout` control request)."""
    UNKNOWN = "unknown"


LOGOUT_CODES: Final[dict[int, LogoutReason]] = {
    401: LogoutReason.LOGGED_OUT,
    403: LogoutReason.LOCKED,
    406: LogoutReason.BANNED,
}
"""whatsmeow `ConnectFailureReason.IsLoggedOut()`: these codes delete the credentials."""

TEMP_BAN_CODE: Final = 402

CONNECT_FAILURES: Final[dict[int, str]] = {
    400: "generic",
    402: "temp_banned",
    405: "client_outdated",
    409: "bad_user_agent",
    413: "cat_expired",
    414: "cat_invalid",
    415: "not_found",
    418: "client_unknown",
    500: "internal_server_error",
    501: "experimental",
    503: "service_unavailable",
} | {code: str(reason) for code, reason in LOGOUT_CODES.items()}

NON_RETRYABLE: Final = frozenset({"client_outdated", "bad_user_agent", "client_unknown"})
"""Refusals no reconnect can fix: this client build must change first."""

RETRYABLE: Final = frozenset({"internal_server_error", "service_unavailable", "cat_expired",
                              "cat_invalid", "generic", "experimental"})
"""Refusals WhatsApp itself expects to pass (whatsmeow reconnects for 500, 503 and CAT)."""

TEMP_BANS: Final[dict[int, str]] = {
    101: "sent_to_too_many_people",
    102: "blocked_by_users",
    103: "created_too_many_groups",
    104: "sent_too_many_same_message",
    106: "broadcast_list",
}

# neonize's protobuf enum names (`ConnectFailureReason`), for events neonize did encode.
_NEONIZE_FAILURE_NAMES: Final[dict[str, str]] = {
    "generic": "generic",
    "logged_out": "logged_out",
    "temp_banned": "temp_banned",
    "main_device_gone": "locked",
    "unknown_logout": "banned",
    "client_outdated": "client_outdated",
    "bad_user_agent": "bad_user_agent",
    "internal_server_error": "internal_server_error",
    "experimental": "experimental",
    "service_unavailable": "service_unavailable",
}

_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def unknown_code(code: int) -> str:
    """The name of a code no table knows: the number is kept."""
    return f"code_{code}"


def failure_name(code: int) -> str:
    """`403` -> `locked`, `503` -> `service_unavailable`, `419` -> `code_419`."""
    return CONNECT_FAILURES.get(code) or unknown_code(code)


def logout_reason(code: int | None) -> str:
    """The logout reason of a connect-failure code (`logged_out` when unknown)."""
    if code is None:
        return LogoutReason.LOGGED_OUT
    return LOGOUT_CODES.get(code) or unknown_code(code)


def temp_ban_name(code: int) -> str:
    """`101` -> `sent_to_too_many_people`; unknown codes keep their number."""
    return TEMP_BANS.get(code) or unknown_code(code)


def from_neonize_enum(name: str) -> str:
    """A neonize enum value name (lower case) in our vocabulary (`unknown_logout` -> `banned`)."""
    return _NEONIZE_FAILURE_NAMES.get(name, name)


def condition_reason(name: str) -> str:
    """`locked` -> `Locked`, `code_419` -> `Code419`: a Kubernetes condition reason
    (CamelCase, `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)."""
    if not _NAME.match(name):
        return "Unknown"
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


_CODE: Final = re.compile(r"^code_[0-9]{1,6}$")


def is_name(value: str | None) -> bool:
    """A reason this table knows, or an unknown code kept by number (`code_419`): what the
    operator accepts from events and the state hash (free text never becomes a condition
    reason)."""
    return bool(value) and (value in KNOWN or bool(_CODE.match(value or "")))


_DESCRIPTIONS: Final[dict[str, str]] = {
    "logged_out": "the device was removed on the phone (or by WhatsApp); link again",
    "locked": "WhatsApp locked this account (403); the owner must unlock it in WhatsApp "
              "on the phone before linking again",
    "banned": "WhatsApp banned this number (406); it cannot be linked again",
    "device_removed": "the device's credentials disappeared from the store; link again",
    "on_request": "unlinked through this system; link again",
    "temp_banned": "WhatsApp banned this number temporarily",
    "client_outdated": "WhatsApp refuses this client version (405); upgrade the worker image",
    "bad_user_agent": "WhatsApp refuses this client's user agent (409); upgrade the worker "
                      "image",
    "client_unknown": "WhatsApp does not know this client (418); upgrade the worker image",
    "service_unavailable": "WhatsApp is unavailable (503); retrying",
    "internal_server_error": "WhatsApp failed internally (500); retrying",
    "stream_replaced": "another client connected with this session's credentials",
    "passkey_required": "WhatsApp asks for the account's passkey to link this device",
}


def describe(name: str) -> str:
    """A short English description of a reason name, for condition messages and logs."""
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    if name in TEMP_BANS.values():
        return f"WhatsApp banned this number temporarily ({name.replace('_', ' ')})"
    if name.startswith("code_"):
        return f"WhatsApp refused with code {name[5:]}, which this version does not know"
    return name.replace("_", " ")


KNOWN: Final = frozenset({*(str(r) for r in LogoutReason), *CONNECT_FAILURES.values(),
                          *TEMP_BANS.values(), *_DESCRIPTIONS})
"""Every reason name this version knows."""
