"""What a failed neonize send means: WhatsApp's refusals read from whatsmeow's error text.

neonize's `SendMessage` returns only `err.Error()` of whatsmeow's `Client.SendMessage`
(`SendMessageReturnFunction.Error`), so the refusal codes are read back from the text. The
strings are whatsmeow's own (go.mau.fi/whatsmeow, the version pinned in
`tests/worker/neonize_pins.py`; docs/NEONIZE.md, "Send refusals"):

- `send.go`, `SendMessage`: the server's `<ack class="message" error="N">` to the message
  node becomes `fmt.Errorf("%w %d", ErrServerReturnedError, N)`, i.e.
  `server returned error 463`. 463 is WhatsApp's `NackCallerReachoutTimelocked`: the
  account may not message new contacts for a while (the "reach-out timelock"; the same
  code is also reported when a message to a contact lacks its privacy token). The ack
  carries no expiry.
- `errors.go`, `IQError.Error`: an info query refused by the server is
  `info query returned status %d: %s`, for rate limits `info query returned status 429:
  rate-overlimit` (`ErrIQRateOverLimit`). `SendMessage` runs such queries first (the
  device list, the LID of a phone number) and wraps their error:
  `failed to get device list: failed to send usync query: info query returned status
  429: rate-overlimit`. No retry time is given.

Everything else stays a plain `send_failed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from salon_sessions.worker.driver import RATE_LIMITED, REACHOUT_RESTRICTED, DriverError

SEND_FAILED: Final = "send_failed"

_ACK_ERROR: Final = re.compile(r"\bserver returned error (\d+)\b")
"""whatsmeow `ErrServerReturnedError` with the message ack's `error` attribute."""
_IQ_STATUS: Final = re.compile(r"\binfo query returned status (\d+): ([\w-]*)")
"""whatsmeow `IQError.Error()` (code and text of the server's `<error>` node)."""

ACK_CODES: Final = {429: RATE_LIMITED, 463: REACHOUT_RESTRICTED}
"""Message-ack error codes that are send restrictions (driver `SEND_RESTRICTIONS`)."""
IQ_CODES: Final = {429: RATE_LIMITED}
IQ_TEXTS: Final = {"rate-overlimit": RATE_LIMITED}


@dataclass(frozen=True, slots=True)
class SendRefusal:
    """WhatsApp refused a send as a restriction (see the module docstring)."""

    code: str
    """`driver.RATE_LIMITED` or `driver.REACHOUT_RESTRICTED`."""
    status: int
    """WhatsApp's number (429, 463)."""
    retry_after_s: float | None = None
    """How long WhatsApp said it lasts; whatsmeow's errors never say (None)."""


def send_refusal(error: str) -> SendRefusal | None:
    """The restriction a whatsmeow send error reports, or None for any other failure."""
    ack = _ACK_ERROR.search(error)
    if ack is not None:
        status = int(ack.group(1))
        code = ACK_CODES.get(status)
        return SendRefusal(code, status) if code is not None else None
    for match in _IQ_STATUS.finditer(error):
        status, text = int(match.group(1)), match.group(2)
        code = IQ_CODES.get(status) or IQ_TEXTS.get(text)
        if code is not None:
            return SendRefusal(code, status)
    return None


def send_error(error: str) -> DriverError:
    """The `DriverError` for a failed send (`error`: whatsmeow's text, already scrubbed)."""
    refusal = send_refusal(error)
    if refusal is None:
        return DriverError(SEND_FAILED, error)
    return DriverError(refusal.code, f"WhatsApp refused the send ({refusal.status}): {error}",
                       retry_after_s=refusal.retry_after_s)
