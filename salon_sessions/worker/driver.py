"""The boundary between the session worker and WhatsApp.

Two drivers implement `Driver`: `neonize` (production: real WhatsApp through
neonize/whatsmeow, store in PostgreSQL) and `simulator` (a local stand-in for WhatsApp's
servers). A driver reports what happens on the WhatsApp side as `DriverFact`s to the
`DriverSink` it was started with; everything else (state machine, events on Redis, locking,
health, message bridge) is the same code for both.

A driver never decides linked/connected itself: it reports facts (a QR arrived, pairing
succeeded, the socket opened or closed) and `SessionState` derives the status from them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from salon_sessions.core.phone import LidResolver


@dataclass(frozen=True, slots=True)
class QrCode:
    """WhatsApp pushed a (new) QR payload; it rotates on the server side."""

    code: str
    timeout_s: int


@dataclass(frozen=True, slots=True)
class PairSuccess:
    """WhatsApp accepted the device: it is linked (credentials registered in the store)."""

    jid: str
    """The device JID, e.g. `79686484488:32@s.whatsapp.net` (or a LID JID)."""
    phone: str | None = None
    """Digits-only phone when known; never a LID."""
    push_name: str | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    """The socket to WhatsApp is open and authenticated right now."""

    jid: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The socket closed. `will_reconnect` is True when the driver keeps retrying."""

    reason: str
    will_reconnect: bool = True


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """WhatsApp removed the device; the driver has deleted its credentials."""

    reason: str
    """A `core.whatsapp_reasons` name (`logged_out`, `locked`, `banned`, ...)."""
    on_connect: bool = False


@dataclass(frozen=True, slots=True)
class PasskeyRequired:
    """WhatsApp gates the link behind the account's passkey (`stage`: `request`, then
    `confirmation`); the login socket stays open meanwhile (no restart)."""

    stage: str
    code: str | None = None
    """The code to compare with the phone's (confirmation stage, when known)."""


@dataclass(frozen=True, slots=True)
class StreamReplaced:
    """Another client with the same credentials took the stream over."""

    will_retry: bool = False
    """True for the one delayed retry the driver allows itself (see the neonize driver)."""


@dataclass(frozen=True, slots=True)
class TemporaryBan:
    code: str
    """A `core.whatsapp_reasons.temp_ban_name` (`sent_to_too_many_people`, `code_107`)."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """WhatsApp refused the connection (not a network error: those are `Disconnected`)."""

    reason: str
    """A `core.whatsapp_reasons.failure_name` (`service_unavailable`, `code_419`)."""
    message: str = ""
    will_retry: bool = True
    """False when the driver stopped reconnecting because of it."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message received by the salon's WhatsApp."""

    message_id: str
    chat_jid: str
    sender_jid: str
    text: str
    from_me: bool = False
    timestamp: datetime | None = None
    sender_alt_jid: str | None = None
    """The other identity of the sender when WhatsApp sends both (phone JID for a LID)."""
    extra: dict[str, str] = field(default_factory=dict)


DriverFact = (QrCode | PairSuccess | Connected | Disconnected | LoggedOut | StreamReplaced
               | TemporaryBan | ConnectFailure | PasskeyRequired | InboundMessage)
DriverSink = Callable[[DriverFact], Awaitable[None]]
"""Where a driver reports its facts. For an `InboundMessage` the sink returns only once the
message is durably in the session's inbound stream (or known as a redelivery), and raises
`MessageNotStored` when it could not be stored: the driver must then not acknowledge the
message to WhatsApp, which delivers it again (the "receipt after the write" rule)."""


class MessageNotStored(Exception):
    """The sink could not store an inbound message (Redis unreachable for too long)."""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    """8 characters as WhatsApp issued them (no dash)."""
    expires_at: datetime


NOT_CONNECTED: Final = "not_connected"
"""`send_text`: the socket is not open; nothing was sent (the command waits)."""
RATE_LIMITED: Final = "rate_limited"
"""`send_text`: WhatsApp refused the send as too many, too fast (429, `rate-overlimit`)."""
REACHOUT_RESTRICTED: Final = "reachout_restricted"
"""`send_text`: WhatsApp restricts this account from messaging new contacts (463, the
reach-out timelock)."""
SEND_RESTRICTIONS: Final = frozenset({RATE_LIMITED, REACHOUT_RESTRICTED})
"""Refusals that must stop all sending for a while (the bridge's circuit breaker): sending
on would get the number banned."""


class DriverError(Exception):
    """A driver call failed; `code` is machine-readable (`pairing_failed`, `not_connected`...).

    `retry_after_s`: for `SEND_RESTRICTIONS`, how long WhatsApp said the restriction lasts
    (None: it did not say)."""

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None) -> None:
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Driver(abc.ABC):
    """One WhatsApp client for one session. Methods are called from one asyncio task."""

    name: str

    @abc.abstractmethod
    async def start(self, sink: DriverSink) -> None:
        """Open the store and start connecting in the background; returns at once.

        Already-linked devices (credentials in the store) resume without a new link and
        report `Connected` once the socket is open; new devices report `QrCode`s."""

    @abc.abstractmethod
    async def stored_device(self) -> str | None:
        """The device JID registered in the store, if any (does not mean connected)."""

    @abc.abstractmethod
    async def request_pairing_code(self, phone: str) -> IssuedCode:
        """Ask WhatsApp for an 8-character code to link `phone` (digits-only E.164)."""

    @abc.abstractmethod
    async def cancel_pairing_code(self) -> None:
        """The pending pairing code is given up (a mistyped number): the driver drops it as
        far as WhatsApp lets it, so that it no longer links. Idempotent."""

    @abc.abstractmethod
    async def send_text(self, to_jid: str, text: str) -> str:
        """Send a text message; returns WhatsApp's message id. Raises `DriverError`."""

    async def send_presence(self, to_jid: str, composing: bool) -> None:
        """Show (or stop showing) "typing..." in the chat with `to_jid`, before a send.
        Best effort: a driver that cannot does nothing; never raises for a closed socket."""
        del to_jid, composing

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close the socket now (keep credentials). Idempotent."""

    @abc.abstractmethod
    async def logout(self) -> None:
        """Unlink the device and delete its credentials."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and release every resource; the driver cannot be started again."""

    @property
    @abc.abstractmethod
    def lid_resolver(self) -> LidResolver:
        """Resolves LIDs to phone numbers through this session's store."""
