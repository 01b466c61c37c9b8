"""WhatsApp's send refusals, read from the error texts whatsmeow produces (pure, no stack).

Each text below is what neonize's `SendMessage` returns in `SendMessageReturnFunction.Error`
(`err.Error()` of whatsmeow's `Client.SendMessage`), built the way whatsmeow builds it at
the pinned version: `send.go` (`fmt.Errorf("%w %d", ErrServerReturnedError, code)` for the
message ack, and the wrapping of the queries it runs first), `user.go` (`failed to send
usync query: %w`), `errors.go` (`IQError.Error()`). `test_neonize_contract.py` checks that
the Go core still contains these formats.
"""

from __future__ import annotations

import pytest

from salon_sessions.worker.driver import (
    RATE_LIMITED,
    REACHOUT_RESTRICTED,
    SEND_RESTRICTIONS,
)
from salon_sessions.worker.neonize.errors import (
    SEND_FAILED,
    SendRefusal,
    send_error,
    send_refusal,
)

ACK_463 = "server returned error 463"
ACK_429 = "server returned error 429"
DEVICE_LIST_429 = ("failed to get device list: failed to send usync query: info query "
                   "returned status 429: rate-overlimit")
LID_LOOKUP_429 = ("failed to get user info for 79686484488@s.whatsapp.net to fill LID "
                  "cache: failed to send usync query: info query returned status 429: "
                  "rate-overlimit")
IQ_OVERLIMIT_OTHER_CODE = "info query returned status 420: rate-overlimit"


@pytest.mark.parametrize(("error", "refusal"), [
    (ACK_463, SendRefusal(REACHOUT_RESTRICTED, 463)),
    (ACK_429, SendRefusal(RATE_LIMITED, 429)),
    (DEVICE_LIST_429, SendRefusal(RATE_LIMITED, 429)),
    (LID_LOOKUP_429, SendRefusal(RATE_LIMITED, 429)),
    (IQ_OVERLIMIT_OTHER_CODE, SendRefusal(RATE_LIMITED, 420)),
])
def test_restrictions_are_recognised(error: str, refusal: SendRefusal) -> None:
    assert send_refusal(error) == refusal
    assert refusal.code in SEND_RESTRICTIONS
    assert refusal.retry_after_s is None, "whatsmeow's errors carry no expiry"


@pytest.mark.parametrize("error", [
    "server returned error 479",  # the recipient's device list changed (retried later)
    "server returned error 403",  # the recipient blocked the salon
    "server returned error 4630",
    "server returned error 1463",
    "info query returned status 404: item-not-found",
    "failed to get device list: failed to send usync query: info query returned status "
    "503: service-unavailable",
    "failed to send message node: websocket not connected",
    "websocket disconnected before message send returned response",
    "message send timed out",
    "no LID found for 79686484488@s.whatsapp.net from server",
    "client is nil",
    "",
])
def test_other_failures_are_no_restriction(error: str) -> None:
    assert send_refusal(error) is None
    failed = send_error(error)
    assert (failed.code, str(failed), failed.retry_after_s) == (SEND_FAILED, error, None)


def test_the_driver_error_for_a_refusal() -> None:
    error = send_error(ACK_463)
    assert error.code == REACHOUT_RESTRICTED
    assert error.retry_after_s is None
    assert str(error) == "WhatsApp refused the send (463): server returned error 463"
    assert send_error(DEVICE_LIST_429).code == RATE_LIMITED
