"""The session's state machine: driver facts in, status and events out.

Rules (the seed system got both wrong):
- `linked` becomes true only on `PairSuccess` or when the store holds a registered device
  (`resume_linked`); it becomes false on `LoggedOut`. A QR shown, a pairing code issued or a
  stored `me` JID alone never make it true.
- `connected` is true only between `Connected` and the next `Disconnected`, `LoggedOut`,
  `StreamReplaced`, `TemporaryBan` or `ConnectFailure`.
- A pending pairing code survives QR rotation and repeated requests (the same code comes
  back until it expires); restart is refused while it is pending unless forced.
- An onboarding ends (`expire_link`) when `spec.link.expireAfter` passes without a link:
  phase `LinkExpired`, no QR, no pending code, pairing codes refused (`link_expired`) until
  it is renewed (`renew_link`); a link ends the onboarding for good.

`SessionState` does no I/O: it returns the event payloads to publish, and the worker
publishes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventData,
    LinkedData,
    LinkExpiredData,
    LinkMethod,
    LoggedOutData,
    PairingCodeData,
    PasskeyRequiredData,
    PasskeyStage,
    QrData,
)
from salon_sessions.core.phone import InvalidPhone, e164_digits
from salon_sessions.core.resource import Phase
from salon_sessions.core.state_hash import StateHash
from salon_sessions.core.whatsapp_reasons import describe, is_name
from salon_sessions.worker.driver import (
    Connected,
    ConnectFailure,
    Disconnected,
    DriverFact,
    InboundMessage,
    IssuedCode,
    LoggedOut,
    PairSuccess,
    PasskeyRequired,
    QrCode,
    StreamReplaced,
    TemporaryBan,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PendingCode:
    code: str
    phone: str
    expires_at: datetime

    def valid(self, now: datetime) -> bool:
        return now < self.expires_at


class RefusedError(Exception):
    """A request the current state refuses; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass
class SessionState:
    phase: Phase = Phase.STARTING
    linked: bool = False
    connected: bool = False
    phone: str | None = None
    jid: str | None = None
    link_method: LinkMethod | None = None
    pending_code: PendingCode | None = None
    last_qr: QrCode | None = None
    last_error: str | None = None
    reason: str | None = None
    """WhatsApp's reason for the current state (`core.whatsapp_reasons`): why the device
    was logged out (kept until it links again), or the ban or refusal that keeps the socket
    closed (until the next connection or disconnection)."""
    will_retry: bool | None = None
    """Whether the worker reconnects by itself after the ban or refusal in `reason`."""
    retry_at: datetime | None = None
    """When it does, if WhatsApp said (the end of a temporary ban)."""
    passkey: PasskeyStage | None = None
    """WhatsApp waits for the account's passkey on the open login socket."""
    passkey_code: str | None = None
    last_connected_at: datetime | None = None
    link_expires_at: datetime | None = None
    """While unlinked: when the current onboarding ends (or ended, once `link_expired`)."""
    link_expired: bool = False
    """The onboarding ended without a link: the driver is stopped until a renewal."""
    updated_at: datetime = field(default_factory=utcnow)

    # ---- facts from the store -------------------------------------------------------
    def resume_linked(self, jid: str, phone: str | None) -> None:
        """The store holds a registered device: linked, not (yet) connected."""
        self.linked, self.jid, self.phone = True, jid, phone or self.phone
        self.link_expires_at, self.link_expired = None, False
        self._touch()

    def restarted(self) -> None:
        """The driver was closed and starts again: a pending code and the QR are gone."""
        self.pending_code = None
        self.last_qr = None
        self.passkey = self.passkey_code = None
        self.connected = False
        self.phase = Phase.LINK_EXPIRED if self.link_expired else Phase.STARTING
        self._touch()

    # ---- the onboarding's bound ------------------------------------------------------
    def link_window(self, expires_at: datetime | None) -> None:
        """The current onboarding ends at `expires_at` (None: no onboarding, linked)."""
        if not self.linked:
            self.link_expires_at = expires_at
            self._touch()

    def expire_link(self, expire_after_s: int, now: datetime | None = None
                    ) -> list[EventData]:
        """The onboarding's bound passed without a link: the driver is being stopped, the
        QR and a pending code end with it. Published once per expiry."""
        if self.linked or self.link_expired:
            return []
        self.link_expired = True
        self.pending_code = None
        self.last_qr = None
        self.passkey = self.passkey_code = None
        self.phase = Phase.LINK_EXPIRED
        self._touch(now)
        return [LinkExpiredData(expire_after_s=max(1, expire_after_s))]

    def renew_link(self, expires_at: datetime, now: datetime | None = None) -> None:
        """Linking resumes until `expires_at` (`POST .../link/renew`)."""
        if self.linked:
            raise RefusedError("already_linked", "the session is already linked")
        if self.link_expired:
            self.link_expired = False
            self.phase = Phase.STARTING
        self.link_expires_at = expires_at
        self._touch(now)

    # ---- facts from the driver ------------------------------------------------------
    def apply(self, fact: DriverFact, now: datetime | None = None) -> list[EventData]:
        """Update the state from a driver fact; return the event payloads to publish."""
        now = now or utcnow()
        self._expire_code(now)
        out: list[EventData]
        match fact:
            case QrCode(code=code, timeout_s=timeout):
                out = self._on_qr(code, timeout)
            case PairSuccess():
                out = self._on_pair_success(fact)
            case Connected(jid=jid):
                self.connected = True
                if jid:
                    self.jid = jid
                    self.linked = True  # only an authenticated device gets a socket
                self.last_connected_at = now
                self.phase = Phase.CONNECTED
                self.last_error = None
                self._say(None)
                self.passkey = self.passkey_code = None
                out = [ConnectedData(jid=self.jid)]
            case Disconnected(reason=reason, will_reconnect=again):
                self.connected = False
                self.passkey = self.passkey_code = None  # the login socket is gone
                if self.linked or self.reason == "passkey_required":
                    self._say(None)
                self.phase = Phase.DISCONNECTED if self.linked else self._unlinked_phase()
                out = [DisconnectedData(reason=reason[:1024], will_reconnect=again)]
            case LoggedOut(reason=reason, on_connect=on_connect):
                self.connected = self.linked = False
                self.jid = self.phone = None
                self.pending_code = None
                self.last_qr = None
                self.passkey = self.passkey_code = None
                why = reason if is_name(reason) else "logged_out"
                self._say(why)
                self.phase = Phase.LOGGED_OUT
                out = [LoggedOutData(reason=why, on_connect=on_connect)]
            case PasskeyRequired(stage=stage, code=code):
                out = self._on_passkey(stage, code)
            case StreamReplaced(will_retry=retry):
                self.connected = False
                self.phase = Phase.DISCONNECTED if self.linked else self._unlinked_phase()
                self.last_error = "stream_replaced"
                self._say("stream_replaced", will_retry=retry)
                then = ("reconnecting once after a pause" if retry
                        else "not reconnecting automatically")
                out = [DisconnectedData(reason="stream replaced by another client",
                                        will_reconnect=retry),
                       ErrorData(code="stream_replaced", reason="stream_replaced",
                                 will_retry=retry,
                                 message="another client connected with this session's "
                                         f"credentials; {then}")]
            case TemporaryBan(code=code, expires_at=until):
                self.connected = False
                self.phase = Phase.DISCONNECTED if self.linked else self._unlinked_phase()
                self.last_error = "temporary_ban"
                ban = code if is_name(code) else "temp_banned"
                self._say(ban, will_retry=until is not None, retry_at=until)
                when = f" until {until.isoformat()}" if until else ""
                out = [DisconnectedData(reason=f"temporary ban {ban}{when}",
                                        will_reconnect=until is not None),
                       ErrorData(code="temporary_ban", reason=ban, retry_at=until,
                                 will_retry=until is not None,
                                 message=f"{describe(ban)}{when}")]
            case ConnectFailure(reason=reason, message=message, will_retry=retry):
                self.connected = False
                self.phase = Phase.DISCONNECTED if self.linked else self._unlinked_phase()
                self.last_error = "connect_failure"
                self._say(reason if is_name(reason) else None, will_retry=retry)
                out = [ErrorData(code="connect_failure", reason=self.reason,
                                 fatal=False, will_retry=retry,
                                 message=f"{reason}: {message}"[:2000]
                                 + ("" if retry else "; not reconnecting automatically"))]
            case InboundMessage():
                out = []
            case _:  # pragma: no cover - exhaustive over DriverFact
                raise TypeError(f"unknown driver fact {fact!r}")
        self._touch(now)
        return out

    def _on_qr(self, code: str, timeout: int) -> list[EventData]:
        if self.link_expired:
            return []  # the driver is being stopped: a late QR is never shown
        self.last_qr = QrCode(code, timeout)
        if self.linked:
            return []  # a linked device gets no QR; ignore a stray one
        if self.pending_code is None and self.passkey is None:
            self.phase = Phase.AWAITING_LINK
        # a pending pairing code is left alone: QR rotation never invalidates it
        return [QrData(code=code, timeout_s=max(1, min(timeout, 600)),
                       link_expires_at=self.link_expires_at)]

    def _on_passkey(self, stage: str, code: str | None) -> list[EventData]:
        if self.linked:
            return []  # only a device being linked is asked for a passkey
        try:
            self.passkey = PasskeyStage(stage)
        except ValueError:
            return []
        self.passkey_code = code
        self.phase = Phase.PASSKEY_REQUIRED
        self._say("passkey_required")
        return [PasskeyRequiredData(stage=self.passkey, code=code)]

    def _on_pair_success(self, fact: PairSuccess) -> list[EventData]:
        phone = fact.phone
        if phone is not None:
            try:
                phone = e164_digits(phone)
            except InvalidPhone:
                phone = None
        if self.pending_code is not None:
            self.link_method = LinkMethod.PAIRING_CODE
            phone = phone or self.pending_code.phone
        else:
            self.link_method = LinkMethod.QR
        self.linked, self.jid, self.phone = True, fact.jid, phone
        self.link_expires_at, self.link_expired = None, False
        self.pending_code = None
        self.last_qr = None
        self.passkey = self.passkey_code = None
        self._say(None)
        self.phase = Phase.STARTING  # linked; the socket opens next
        return [LinkedData(jid=fact.jid, phone=phone, method=self.link_method,
                           push_name=fact.push_name)]

    def _say(self, reason: str | None, *, will_retry: bool | None = None,
             retry_at: datetime | None = None) -> None:
        self.reason, self.will_retry, self.retry_at = reason, will_retry, retry_at

    def _unlinked_phase(self) -> Phase:
        if self.link_expired:
            return Phase.LINK_EXPIRED
        if self.passkey is not None:
            return Phase.PASSKEY_REQUIRED
        if self.pending_code is not None:
            return Phase.PAIRING_CODE_ISSUED
        return Phase.AWAITING_LINK if self.last_qr is not None else self.phase

    # ---- pairing codes --------------------------------------------------------------
    def current_code(self, phone: str, now: datetime | None = None) -> PendingCode | None:
        """The pending code to return again for `phone`, or None when a new one is needed.
        Raises `RefusedError` when the request cannot be served in this state."""
        now = now or utcnow()
        self._expire_code(now)
        if self.linked:
            raise RefusedError("already_linked", "the session is already linked")
        if self.link_expired:
            raise RefusedError("link_expired", "the onboarding expired without a link; renew "
                               "it first (POST /v1/sessions/{company_id}/link/renew)")
        pending = self.pending_code
        if pending is None:
            return None
        if pending.phone != phone:
            raise RefusedError(
                "pairing_code_pending",
                f"a pairing code for another number is pending until "
                f"{pending.expires_at.isoformat()}; cancel it first (DELETE "
                f"/v1/sessions/{{company_id}}/pairing-code, control cancel_pairing_code)")
        return pending

    def code_issued(self, phone: str, issued: IssuedCode) -> list[EventData]:
        # the code ends with the onboarding at the latest (the driver stops then)
        expires = (issued.expires_at if self.link_expires_at is None
                   else min(issued.expires_at, self.link_expires_at))
        self.pending_code = PendingCode(issued.code, phone, expires)
        self.phase = Phase.PAIRING_CODE_ISSUED
        self._touch()
        return [PairingCodeData(code=issued.code, phone=phone, expires_at=expires)]

    def cancel_code(self, now: datetime | None = None) -> PendingCode | None:
        """End the pending code (a mistyped number): a code for another number may be
        requested at once. Returns the code that was pending, if one was."""
        now = now or utcnow()
        self._expire_code(now)
        pending, self.pending_code = self.pending_code, None
        if pending is not None:
            if self.phase is Phase.PAIRING_CODE_ISSUED:
                self.phase = Phase.AWAITING_LINK  # as when a code expires
            self._touch(now)
        return pending

    def check_restart(self, force: bool, now: datetime | None = None) -> None:
        self._expire_code(now or utcnow())
        if self.pending_code is not None and not force:
            raise RefusedError(
                "pairing_code_pending",
                "a pairing code is pending; restarting would invalidate it (use force)")

    def _expire_code(self, now: datetime) -> None:
        if self.pending_code is not None and not self.pending_code.valid(now):
            self.pending_code = None
            if self.phase is Phase.PAIRING_CODE_ISSUED:
                self.phase = Phase.AWAITING_LINK

    def expire(self, now: datetime | None = None) -> bool:
        """Drop an expired pairing code; True when the phase changed."""
        before = self.phase
        self._expire_code(now or utcnow())
        if self.phase != before:
            self._touch()
            return True
        return False

    # ---- views ----------------------------------------------------------------------
    def _touch(self, now: datetime | None = None) -> None:
        self.updated_at = now or utcnow()

    def state_hash(self) -> StateHash:
        """The session's part of its Redis state hash (`core.state_hash`)."""
        pending = self.pending_code
        return StateHash(
            phase=self.phase, linked=self.linked, connected=self.connected,
            phone=self.phone, jid=self.jid,
            pairing_code_pending=pending is not None,
            pairing_code_expires_at=pending.expires_at if pending else None,
            pairing_code_phone=pending.phone if pending else None,
            last_error=self.last_error, reason=self.reason, will_retry=self.will_retry,
            retry_at=self.retry_at, passkey_stage=self.passkey,
            passkey_code=self.passkey_code, last_connected_at=self.last_connected_at,
            link_expires_at=None if self.linked else self.link_expires_at,
            updated_at=self.updated_at)

    def snapshot(self) -> dict[str, str]:
        """The session's fields of the state hash as written (all strings)."""
        return self.state_hash().to_fields()

    def status_event(self) -> EventData:
        """The one event that restates the current connection state (after a Redis gap)."""
        if self.connected:
            return ConnectedData(jid=self.jid)
        return DisconnectedData(reason="state restated after a gap", will_reconnect=True)
