"""Linking a new device through neonize: QR codes, pairing codes, passkey steps, pair status.

A login socket (QR codes) lives ~160 s (whatsmeow: a 60 s code, then five 20 s codes); a
pairing code lives on that socket too, so it is asked on a socket with enough time left
(a fresh one is opened otherwise). When a socket times out a new one is opened, at most
`max_login_cycles` times in a row (the supervisor counts), then the driver halts until
`start()` or `request_pairing_code()` is called again. A passkey step keeps the socket
open: WhatsApp waits on it. The link itself arrives as neonize's `PairStatus` event.

Kept apart from the connection's handlers: it is the only part that runs before a device
exists, and the only one with a command of its own (the pairing code).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from salon_sessions.core.phone import InvalidPhone, parse_phone
from salon_sessions.worker.driver import (
    ConnectFailure,
    Disconnected,
    DriverError,
    IssuedCode,
    PasskeyRequired,
    QrCode,
)
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.device import DeviceRecord
from salon_sessions.worker.neonize.events import enum_name, pair_success
from salon_sessions.worker.neonize.go import (
    AttemptPhase,
    GoAttempt,
    GoCallback,
    go_pair_phone,
    run_in_daemon,
)
from salon_sessions.worker.neonize.reactions import ConnectionReactions
from salon_sessions.worker.neonize.state import ClientRun, LoginSocket
from salon_sessions.worker.neonize.supervisor import AttemptSupervisor, Outcome

FIRST_QR_TIMEOUT_S: Final = 60
"""whatsmeow shows the first QR code of a login socket for 60 s ..."""
NEXT_QR_TIMEOUT_S: Final = 20
"""... and each of the following five for 20 s."""
LOGIN_WINDOW_S: Final = FIRST_QR_TIMEOUT_S + 5 * NEXT_QR_TIMEOUT_S
"""A login socket closes when its QR codes run out: 160 s after it opened. A pairing code
lives on that socket, so this is also its lifetime (whatsmeow `PairPhone` docs)."""
PAIRING_MIN_WINDOW_S: Final = 60
"""A pairing code is requested on a fresh login socket when less than this is left."""
LOGIN_WAIT_S: Final = 20.0
"""How long `request_pairing_code` waits for a login socket to open."""
PAIR_CLIENT_TYPE: Final = 1
PAIR_CLIENT_NAME: Final = "Chrome (Linux)"
"""whatsmeow's `PairClientChrome` and its required `Browser (OS)` display name."""
PASSKEY_STATUSES: Final = {"passkey-request": "request", "passkey-confirmation": "confirmation"}
"""whatsmeow QR-channel items that ask for the account's passkey: the login socket stays
open (WhatsApp waits), so they are not an end of login."""
NOT_MULTI_DEVICE: Final = "err-scanned-without-multidevice"
"""A QR-channel item that is no end of login either (a phone without multi-device)."""
LOGIN_RESTART_DELAY_S: Final = 1.0


class LinkFlow:
    """The login socket's items, the pairing code and the pair status of one session."""

    def __init__(self, ctx: DriverContext, *, run: ClientRun, login: LoginSocket,
                 device: DeviceRecord, supervisor: AttemptSupervisor,
                 reactions: ConnectionReactions) -> None:
        self._ctx, self._run, self._login = ctx, run, login
        self._device, self._supervisor, self._reactions = device, supervisor, reactions

    def track(self, kind: GoCallback, payload: Any) -> None:
        """On the loop, before a callback of the current client is queued: track the login
        socket at once, so that a pairing code request does not wait for a sink that is
        busy (or waits for it)."""
        if kind is GoCallback.QR:
            self._login.shown()
        elif (kind is GoCallback.LOGIN and payload != NOT_MULTI_DEVICE
              and payload not in PASSKEY_STATUSES):
            self._login.ready.clear()

    async def on_qr(self, code: str) -> None:
        """A (rotated) QR payload from the login socket."""
        login = self._login
        if login.qr_index == 0:
            login.opened = login.opened or datetime.now(UTC)
        timeout = FIRST_QR_TIMEOUT_S if login.qr_index == 0 else NEXT_QR_TIMEOUT_S
        login.qr_index += 1
        self._supervisor.down_reported = False
        self._supervisor.failures = 0
        login.ready.set()
        await self._ctx.emit(QrCode(code=code, timeout_s=timeout))

    async def on_login_status(self, status: str) -> None:
        """An item of the login socket's QR channel other than a code: its end (`success`,
        `timeout`, `error`, ...) or a passkey step, which keeps the socket open."""
        log = self._ctx.log
        if status == NOT_MULTI_DEVICE:
            log.warning("the QR code was scanned by a phone without multi-device")
            return
        stage = PASSKEY_STATUSES.get(status)
        if stage is not None:
            # WhatsApp waits on this socket for the account's passkey: restarting would
            # tear the link down mid-handshake. neonize cannot answer it (docs/NEONIZE.md).
            log.warning("WhatsApp asks for the account's passkey (%s)", status)
            await self._ctx.emit(PasskeyRequired(stage=stage))
            return
        self._login.ready.clear()
        if status == "success":
            log.info("QR login succeeded")
            return
        if status == "err-client-outdated":
            await self._reactions.client_outdated()
            return
        supervisor = self._supervisor
        more = supervisor.login_cycles + 1 < supervisor.max_login_cycles
        if status == "timeout":
            log.info("the login QR codes expired without a scan")
            await self._ctx.emit(Disconnected(reason="the QR codes expired without a scan",
                                              will_reconnect=more))
            supervisor.request(Outcome("restart", "login expired",
                                       delay=LOGIN_RESTART_DELAY_S, login_cycle=True))
        elif status == "error":
            await self._ctx.emit(ConnectFailure(reason="pair_error",
                                                message="WhatsApp rejected the pairing"))
            supervisor.request(Outcome("restart", "pairing failed",
                                       delay=LOGIN_RESTART_DELAY_S, login_cycle=True))
        else:
            await self._ctx.emit(Disconnected(reason=f"login ended: {status}",
                                              will_reconnect=more))
            supervisor.request(Outcome("restart", f"login ended: {status}", login_cycle=True))

    async def on_pair_status(self, event: Any) -> None:
        """neonize's `PairStatus`: the device is linked, or WhatsApp refused the link."""
        if enum_name(event, "Status") == "success":
            success = pair_success(event)
            if success is None:
                return
            self._device.linked(success.jid)
            self._supervisor.login_cycles = 0
            self._run.unconnected_since = time.monotonic()
            self._ctx.log.info("device linked")
            await self._ctx.emit(success)
        else:
            await self._ctx.emit(ConnectFailure(reason="pair_error",
                                                message=self._ctx.scrub(str(event.Error))))

    async def request_pairing_code(self, phone: str) -> IssuedCode:
        """The `Driver` call (see there); on a login socket with enough time left."""
        try:
            digits = parse_phone(phone)
        except InvalidPhone as exc:
            raise DriverError("invalid_phone", str(exc)) from None
        if (self._run.connected or self._device.current is not None
                or await self._device.stored_device() is not None):
            raise DriverError("already_linked", "this session already has a linked device")
        supervisor = self._supervisor
        if not supervisor.started:
            raise DriverError("not_connected", "the driver is not started")
        if not supervisor.running:
            if supervisor.halted != "login_expired":
                raise DriverError("not_connected",
                                  f"the driver stopped reconnecting: {supervisor.halted}")
            await supervisor.restart()
        attempt = await self._login_socket(PAIRING_MIN_WINDOW_S)
        code, error = await run_in_daemon("pair-phone", go_pair_phone, attempt.uuid, digits,
                                          PAIR_CLIENT_NAME, PAIR_CLIENT_TYPE)
        if error:
            raise DriverError("pairing_failed", self._ctx.scrub(error))
        code = code.replace("-", "").strip()
        if len(code) != 8:
            raise DriverError("pairing_failed", "WhatsApp returned a malformed pairing code")
        opened = self._login.opened or datetime.now(UTC)
        self._ctx.log.info("pairing code issued; valid until the login socket closes")
        return IssuedCode(code=code, expires_at=opened + timedelta(seconds=LOGIN_WINDOW_S))

    async def _login_socket(self, min_window: float) -> GoAttempt:
        """The current login attempt with at least `min_window` seconds left, opening a
        new login socket when needed."""
        deadline = time.monotonic() + LOGIN_WAIT_S
        restarted = False
        login = self._login
        supervisor = self._supervisor
        while True:
            attempt = supervisor.attempt
            if (attempt is not None and attempt.phase is AttemptPhase.LOGIN
                    and login.ready.is_set() and login.opened is not None):
                left = LOGIN_WINDOW_S - (datetime.now(UTC) - login.opened).total_seconds()
                if left >= min_window or restarted:
                    return attempt
                self._ctx.log.info("login socket closes in %.0f s; opening a new one for "
                                   "the pairing code", left)
                supervisor.request(Outcome("restart", "fresh login for a pairing code",
                                           delay=0.0, fresh=True))
                login.ready.clear()
                restarted = True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not supervisor.running:
                raise DriverError("not_connected",
                                  "no login connection to WhatsApp is open (yet)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(login.ready.wait(), timeout=min(remaining, 1.0))
