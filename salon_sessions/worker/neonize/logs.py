"""Facts read from whatsmeow's own log lines, for what neonize cannot deliver as events.

neonize 0.5.2 loses three kinds of whatsmeow events on the way to Python:

- events whose protobuf is empty (`StreamReplaced`, `ClientOutdated`) make its event loop
  panic, so the driver does not subscribe to them;
- events whose enum neonize does not know (a temporary ban code other than 101-104/106, a
  connect failure other than the ten in its `ConnectFailureReason`) fail neonize's
  protobuf encoding (a required field left empty) and never arrive;
- a failed reconnect after pairing (stream error 515) is only logged by whatsmeow.

whatsmeow logs each of them (at INFO or above, which the driver asks for) with the numbers
in the text, so the driver reads them from there. The real event, when neonize does
deliver it, carries the same facts: the driver keeps the first of the two per client run.

The needles are pinned to whatsmeow v0.0.0-20260921121126-35ae40906e74 (`connectionevents.go`);
`tests/worker/test_neonize_contract.py` checks they are still in the shipped Go core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

NEEDLE_STREAM_REPLACED: Final = "Got replaced stream error"
NEEDLE_CLIENT_OUTDATED: Final = "Client outdated (405)"
NEEDLE_LOGGED_OUT: Final = "sending LoggedOut event and deleting session"
NEEDLE_DEVICE_REMOVED: Final = "Got device removed stream error"
NEEDLE_TEMP_BAN: Final = "Temporary ban connect failure: "
NEEDLE_UNKNOWN_FAILURE: Final = "Unknown connect failure: "
NEEDLE_515_FAILED: Final = "Failed to reconnect after 515 code"
NEEDLES: Final = (NEEDLE_STREAM_REPLACED, NEEDLE_CLIENT_OUTDATED, NEEDLE_LOGGED_OUT,
                  NEEDLE_DEVICE_REMOVED, NEEDLE_TEMP_BAN, NEEDLE_UNKNOWN_FAILURE,
                  NEEDLE_515_FAILED)
"""Every string this module looks for (the contract test finds each in the Go core)."""

_LOGOUT_CODE: Final = re.compile(r"Got (\d{3}): [^,]*connect failure, " + NEEDLE_LOGGED_OUT)
_ATTR: Final = re.compile(r'\b([a-z_]+)="([^"]{0,200})"')


@dataclass(frozen=True, slots=True)
class StreamReplacedLine:
    pass


@dataclass(frozen=True, slots=True)
class ClientOutdatedLine:
    pass


@dataclass(frozen=True, slots=True)
class LoggedOutLine:
    code: int | None
    """WhatsApp's failure code (401, 403, 406, ...); None when the line had none."""
    on_connect: bool


@dataclass(frozen=True, slots=True)
class TemporaryBanLine:
    code: int | None
    expire_s: int
    """The ban's remaining seconds (0: not said)."""


@dataclass(frozen=True, slots=True)
class ConnectFailureLine:
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class ReconnectFailedLine:
    """whatsmeow's reconnect after pairing (stream error 515) failed and is not retried."""


LogFact = (StreamReplacedLine | ClientOutdatedLine | LoggedOutLine | TemporaryBanLine
           | ConnectFailureLine | ReconnectFailedLine)


def _int(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


def _attrs(text: str) -> dict[str, str]:
    return dict(_ATTR.findall(text))


def parse_log_line(message: str) -> LogFact | None:
    """The fact a whatsmeow log line announces, if it announces one."""
    if NEEDLE_STREAM_REPLACED in message:
        return StreamReplacedLine()
    if NEEDLE_CLIENT_OUTDATED in message:
        return ClientOutdatedLine()
    if NEEDLE_LOGGED_OUT in message:
        if NEEDLE_DEVICE_REMOVED in message:
            return LoggedOutLine(code=401, on_connect=False)
        found = _LOGOUT_CODE.search(message)
        return LoggedOutLine(code=int(found.group(1)) if found else None, on_connect=True)
    if NEEDLE_TEMP_BAN in message:
        attrs = _attrs(message.split(NEEDLE_TEMP_BAN, 1)[1])
        return TemporaryBanLine(code=_int(attrs.get("code")),
                                expire_s=_int(attrs.get("expire")) or 0)
    if NEEDLE_UNKNOWN_FAILURE in message:
        attrs = _attrs(message.split(NEEDLE_UNKNOWN_FAILURE, 1)[1])
        return ConnectFailureLine(code=_int(attrs.get("reason")),
                                  message=attrs.get("message", "")[:200])
    if NEEDLE_515_FAILED in message:
        return ReconnectFailedLine()
    return None
