"""Session events: the v1 envelope, one typed model per event type, and their payloads.

Wire format (JSON, UTF-8, at most `codec.MAX_EVENT_BYTES`):

    {"v": 1, "id": "<32 hex>", "type": "linked", "company_id": "company_962302",
     "session": "company-962302", "seq": 1732530000123456, "ts": "2025-11-25T11:00:00Z",
     "data": {...}}

- `seq` increases strictly per publisher (`SeqCounter`); consumers order a session's
  events by it and drop stale ones. `seq` and `ts` are bounded (`core.bounds`): int64, and
  not beyond the consumer's clock plus the allowed skew (`event_ahead`).
- Unknown extra fields are ignored (additive changes stay v1); removing or retyping a field
  is a new `v`.
- `linked` means WhatsApp accepted the device; `connected` means the socket is open now.
  Neither is implied by a QR shown, a pairing code issued or a stored JID.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
)

from salon_sessions.core.bounds import SEQ_MAX, Horizon
from salon_sessions.core.company import CompanyId
from salon_sessions.core.phone import Phone, parse_device_jid
from salon_sessions.core.resource import Phase

EVENT_VERSION: Final = 1
SESSION_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PAIRING_CODE_PATTERN: Final = r"^[A-Z0-9]{8}$"


class EventType(enum.StrEnum):
    QR = "qr"
    PAIRING_CODE = "pairing_code"
    LINKED = "linked"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"
    PASSKEY_REQUIRED = "passkey_required"
    LINK_EXPIRED = "link_expired"
    ERROR = "error"
    PING = "ping"
    PONG = "pong"


class LinkMethod(enum.StrEnum):
    QR = "qr"
    PAIRING_CODE = "pairingCode"


def _device_jid(value: str) -> str:
    return str(parse_device_jid(value))


def _pairing_code(value: object) -> object:
    if isinstance(value, str):
        return value.strip().replace("-", "").upper()
    return value


DeviceJid = Annotated[str, AfterValidator(_device_jid)]
PairingCode = Annotated[
    str,
    BeforeValidator(_pairing_code),
    Field(pattern=PAIRING_CODE_PATTERN, description="8 characters, shown as XXXX-XXXX"),
]
CorrelationId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def correlation_id(origin: str) -> str:
    """A fresh ping correlation id that names who pinged (`operator-…`, `api-…`): every
    pinger hears every pong (`whatsapp:health:pong:*`) and keeps only its own."""
    return f"{origin}-{uuid.uuid4().hex}"


def correlation_origin(value: str) -> str:
    """Who sent the ping a pong answers (`""` for ids without an origin)."""
    head, sep, _ = value.partition("-")
    return head if sep else ""


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class QrData(_Data):
    code: str = Field(min_length=1, max_length=4096, description="QR payload to render")
    timeout_s: int = Field(ge=1, le=600, description="seconds until WhatsApp rotates it")
    link_expires_at: AwareDatetime | None = Field(default=None, description=(
        "when this onboarding ends: the worker stops asking WhatsApp for QR codes and "
        "pairing codes then (`spec.link.expireAfter`), unless it is renewed"))


class PairingCodeData(_Data):
    code: PairingCode
    phone: Phone
    expires_at: AwareDatetime | None = None

    @property
    def display(self) -> str:
        return f"{self.code[:4]}-{self.code[4:]}"


class LinkedData(_Data):
    jid: DeviceJid = Field(description="the device JID WhatsApp registered")
    phone: Phone | None = Field(default=None, description="None while only a LID is known")
    method: LinkMethod | None = None
    push_name: str | None = Field(default=None, max_length=256)


class ConnectedData(_Data):
    jid: DeviceJid | None = None


class DisconnectedData(_Data):
    reason: str = Field(default="", max_length=1024)
    will_reconnect: bool = True


class LoggedOutData(_Data):
    reason: str = Field(default="", max_length=1024,
                        description="a `core.whatsapp_reasons` name: logged_out, locked, "
                                    "banned, device_removed, on_request, code_<n>")
    on_connect: bool = Field(default=False, description="rejected while connecting")


class PasskeyStage(enum.StrEnum):
    REQUEST = "request"
    """WhatsApp asks the new device for the account's passkey (a WebAuthn assertion)."""
    CONFIRMATION = "confirmation"
    """The passkey was accepted; the phone shows a code that must match this one."""


class PasskeyRequiredData(_Data):
    """WhatsApp gates this link behind the account's passkey (docs/NEONIZE.md, Passkeys)."""

    stage: PasskeyStage
    code: str | None = Field(default=None, pattern=r"^[A-Z0-9]{4}-[A-Z0-9]{4}$",
                             description="the code to compare with the phone's "
                                         "(confirmation stage, when the core reports it)")


class LinkExpiredData(_Data):
    """No device linked within `spec.link.expireAfter`: the worker stopped asking WhatsApp
    for QR codes and pairing codes (a pending code ended with it) until the onboarding is
    renewed (`POST /v1/sessions/{company_id}/link/renew`)."""

    expire_after_s: int = Field(ge=1, description="the bound that passed, in seconds")


SENDING_PAUSED: Final = "sending_paused"
"""The `ErrorData.code` of a worker that stopped sending because WhatsApp refused a send as
rate-limited or restricted (`reason`: `rate_limited` / `reachout_restricted`, `retry_at`: when
sending resumes); the operator posts it as a Warning Event `SendingPaused`."""


class ErrorData(_Data):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="machine-readable")
    message: str = Field(default="", max_length=2048)
    fatal: bool = False
    reason: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$",
                               description="WhatsApp's reason (`core.whatsapp_reasons`): "
                                           "a ban or refusal code's name")
    retry_at: AwareDatetime | None = Field(default=None,
                                           description="when the worker tries again")
    will_retry: bool | None = Field(default=None, description=(
        "for a ban or refusal: whether the worker reconnects by itself (false: it stopped "
        "trying; something must change first)"))


class PingData(_Data):
    correlation_id: CorrelationId


class PongData(_Data):
    correlation_id: CorrelationId
    phase: Phase | None = Field(default=None, description="the worker's phase when it answered")


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = EVENT_VERSION
    id: str = Field(default_factory=_new_id, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    company_id: CompanyId
    session: str = Field(pattern=SESSION_NAME_PATTERN, description="SalonSession name")
    seq: int = Field(ge=0, le=SEQ_MAX)
    ts: AwareDatetime = Field(default_factory=_now)


class QrEvent(_Envelope):
    type: Literal[EventType.QR] = EventType.QR
    data: QrData


class PairingCodeEvent(_Envelope):
    type: Literal[EventType.PAIRING_CODE] = EventType.PAIRING_CODE
    data: PairingCodeData


class LinkedEvent(_Envelope):
    type: Literal[EventType.LINKED] = EventType.LINKED
    data: LinkedData


class ConnectedEvent(_Envelope):
    type: Literal[EventType.CONNECTED] = EventType.CONNECTED
    data: ConnectedData = ConnectedData()


class DisconnectedEvent(_Envelope):
    type: Literal[EventType.DISCONNECTED] = EventType.DISCONNECTED
    data: DisconnectedData = DisconnectedData()


class LoggedOutEvent(_Envelope):
    type: Literal[EventType.LOGGED_OUT] = EventType.LOGGED_OUT
    data: LoggedOutData = LoggedOutData()


class PasskeyRequiredEvent(_Envelope):
    type: Literal[EventType.PASSKEY_REQUIRED] = EventType.PASSKEY_REQUIRED
    data: PasskeyRequiredData


class LinkExpiredEvent(_Envelope):
    type: Literal[EventType.LINK_EXPIRED] = EventType.LINK_EXPIRED
    data: LinkExpiredData


class ErrorEvent(_Envelope):
    type: Literal[EventType.ERROR] = EventType.ERROR
    data: ErrorData


class PingEvent(_Envelope):
    type: Literal[EventType.PING] = EventType.PING
    data: PingData

    @classmethod
    def fresh(cls, company_id: str, session: str, seq: int, origin: str) -> PingEvent:
        """A health ping with a new correlation id that names who pinged (every pinger
        builds its pings here: the operator's prober, the API's `/health/pubsub`)."""
        return cls(company_id=company_id, session=session, seq=seq,
                   data=PingData(correlation_id=correlation_id(origin)))


class PongEvent(_Envelope):
    type: Literal[EventType.PONG] = EventType.PONG
    data: PongData


Event = Annotated[
    QrEvent | PairingCodeEvent | LinkedEvent | ConnectedEvent | DisconnectedEvent
    | LoggedOutEvent | PasskeyRequiredEvent | LinkExpiredEvent | ErrorEvent | PingEvent
    | PongEvent,
    Field(discriminator="type"),
]
EventData = (QrData | PairingCodeData | LinkedData | ConnectedData | DisconnectedData
             | LoggedOutData | PasskeyRequiredData | LinkExpiredData | ErrorData | PingData
             | PongData)
EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(Event)

_TYPE_OF_DATA: Final[dict[type[_Data], EventType]] = {
    QrData: EventType.QR,
    PairingCodeData: EventType.PAIRING_CODE,
    LinkedData: EventType.LINKED,
    ConnectedData: EventType.CONNECTED,
    DisconnectedData: EventType.DISCONNECTED,
    LoggedOutData: EventType.LOGGED_OUT,
    PasskeyRequiredData: EventType.PASSKEY_REQUIRED,
    LinkExpiredData: EventType.LINK_EXPIRED,
    ErrorData: EventType.ERROR,
    PingData: EventType.PING,
    PongData: EventType.PONG,
}


def event_ahead(event: Event, horizon: Horizon, now: datetime | None = None) -> bool:
    """The event is numbered or dated beyond the consumer's horizon (`core.bounds`): every
    consumer refuses it."""
    return horizon.ahead(event.seq, (event.ts,), now)


class SeqCounter:
    """Strictly increasing sequence numbers that also increase across process restarts:
    each value is `max(previous + 1, now in microseconds)`."""

    def __init__(self, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._clock_us = clock_us
        self._last = -1

    def next(self) -> int:
        self._last = max(self._last + 1, self._clock_us())
        return self._last


class EventSource:
    """Builds events for one session with the session's ids and a shared `SeqCounter`."""

    def __init__(self, company_id: str | int, session: str,
                 seq: SeqCounter | None = None) -> None:
        # validate once, here, rather than on every event
        probe = PingEvent(company_id=str(company_id), session=session, seq=0,
                          data=PingData(correlation_id="probe"))
        self.company_id = probe.company_id
        self.session = probe.session
        self._seq = seq or SeqCounter()

    def next_seq(self) -> int:
        """A sequence number for a snapshot of the state (the worker's hash), in the same
        order as the events: consumers compare a snapshot with events by it."""
        return self._seq.next()

    def event(self, data: EventData, *, ts: datetime | None = None) -> Event:
        fields: dict[str, object] = {
            "type": _TYPE_OF_DATA[type(data)], "company_id": self.company_id,
            "session": self.session, "seq": self._seq.next(), "data": data,
        }
        if ts is not None:
            fields["ts"] = ts
        return EVENT_ADAPTER.validate_python(fields)
