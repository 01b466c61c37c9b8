"""The `neonize` driver: real WhatsApp through neonize/whatsmeow, session store in PostgreSQL.

How it runs (details in docs/NEONIZE.md and in `neonize_go`):

- A supervisor task runs one Go client at a time (a `GoAttempt`). A device found in the
  store (`stored_device()`) is resumed by its JID; otherwise a new device shows QR codes.
- Go callbacks arrive on Go threads; they are queued onto the event loop and handled in
  order by `handle_neonize_event` / `handle_qr` / `handle_login_status`, which report
  `DriverEvent`s to the sink and may ask the supervisor to restart or halt.
- A connect error (the network, a proxy, the store) ends the attempt; it is reported once
  per outage as `Disconnected(will_reconnect=True)` and retried with exponential backoff.
  Once connected, whatsmeow reconnects by itself (`Disconnected` events in between).
- A login socket (QR codes) lives ~160 s (whatsmeow: a 60 s code, then five 20 s codes);
  when it times out a new one is opened, at most `max_login_cycles` times in a row, then
  the driver halts until `start()` or `request_pairing_code()` is called again.
- `StreamReplaced`, `TemporaryBan` without an end, and an outdated client halt the driver
  (no reconnect); a ban with an end reconnects when it ends; `LoggedOut` deletes the
  credentials and starts a new device (QR codes).

Never logged: the database URL, the proxy URL, QR payloads, pairing codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import asyncpg

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.company import canonical_company_id
from salon_sessions.core.phone import (
    InvalidJid,
    InvalidPhone,
    JidKind,
    LidResolver,
    parse_jid,
    parse_phone,
)
from salon_sessions.core.redact import MASK, redact_text
from salon_sessions.core.whatsapp_reasons import (
    NON_RETRYABLE,
    RETRYABLE,
    failure_name,
    logout_reason,
    temp_ban_name,
)
from salon_sessions.db.whatsmeow_store import (
    NeonizeStore,
    StoreLidResolver,
    go_store_dsn,
)
from salon_sessions.worker.driver import (
    Connected,
    ConnectFailure,
    Disconnected,
    Driver,
    DriverError,
    DriverEvent,
    DriverSink,
    IssuedCode,
    LoggedOut,
    MessageNotStored,
    PasskeyRequired,
    QrCode,
    StreamReplaced,
    TemporaryBan,
)
from salon_sessions.worker.neonize_errors import send_error
from salon_sessions.worker.neonize_events import (
    connect_failure,
    enum_name,
    event_name,
    inbound_message,
    jid_text,
    logged_out,
    pair_success,
    temporary_ban,
)
from salon_sessions.worker.neonize_go import (
    MESSAGE_WAIT_S,
    GoAttempt,
    GoOps,
    PendingMessage,
    Phase,
    go_logout,
    go_pair_phone,
    go_send_chat_presence,
    go_send_text,
    jid_proto,
    load_neonize,
    parked_count,
    run_in_daemon,
)
from salon_sessions.worker.neonize_logs import (
    ClientOutdatedLine,
    ConnectFailureLine,
    LogFact,
    LoggedOutLine,
    ReconnectFailedLine,
    StreamReplacedLine,
    TemporaryBanLine,
)

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
LOGIN_RESTART_DELAY_S: Final = 1.0
LOGGED_OUT_RESTART_DELAY_S: Final = 2.0
RETIRED_KEPT: Final = 50
"""Retired clients whose store connections are swept again (each retirement, and close)."""
WATCHDOG_TICK_S: Final = 5.0
DEFAULT_MAX_LOGIN_CYCLES: Final = 5
"""Login sockets opened in a row without a link (each ~160 s) before the driver halts;
every abandoned login leaves a parked daemon thread behind (see `neonize_go`)."""
PROXY_SCHEMES: Final = ("socks5", "http", "https")
"""What whatsmeow's `SetProxyAddress` accepts."""

OutcomeKind = Literal["finished", "restart", "halt", "stop"]


@dataclasses.dataclass(frozen=True, slots=True)
class NeonizePolicy:
    """How long the driver waits for what, and its limits (tests shorten them)."""

    retire_wait_s: float = 5.0
    """How long stopping a client waits for Go to act on it (`GoAttempt.settled`)."""
    stop_wait_s: float = 30.0
    """A client that may hold WhatsApp's stream (it resumed a device) must have returned
    from `Neonize()` within this before another one starts: two clients with the same
    credentials replace each other's stream. Past it, the process must go (`on_fatal`)."""
    drain_s: float = 30.0
    """How long a stopping client's running calls (a send) may finish first: they write the
    Signal sessions in the store, so neither the client nor its connections are cut."""
    stream_replaced_retry_s: float = 30.0
    """The pause before the one retry after `StreamReplaced` ..."""
    stream_replaced_window_s: float = 600.0
    """... and a second replacement within this halts (another client really uses the
    credentials: fighting over the stream gets numbers banned)."""
    watchdog_s: float = 120.0
    """Linked and not connected this long with a client running: restart the client
    (whatsmeow never retries a failed reconnect after pairing, stream error 515)."""
    max_parked: int = 12
    """Abandoned login clients a process may keep (each a thread parked in neonize's
    `FetchMe`, across every `start()`); past it the process must restart (`on_fatal`)."""
    slow_base_s: float = 300.0
    slow_cap_s: float = 3600.0
    """Backoff for refusals WhatsApp did not explain (unknown codes): never a fast loop."""
    message_wait_s: float = MESSAGE_WAIT_S
    """How long neonize's event thread waits for an inbound message to be stored before it
    takes the next event (`neonize_go`, "Inbound messages")."""
    presence_wait_s: float = 5.0
    """How long `send_presence` waits for Go: a typing indicator must not hold up a send."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Outcome:
    """Why an attempt ends and what comes next."""

    kind: OutcomeKind
    reason: str = ""
    delay: float | None = None
    """Seconds before the next attempt; None: the backoff decides."""
    fresh: bool = False
    """Start a new device (no resume)."""
    login_cycle: bool = False
    """A login socket expired without a link (counts towards `max_login_cycles`)."""
    needs_lock: bool = False
    """Start the next client only if the worker still holds the session lock."""


class NeonizeDriver(Driver):
    """One WhatsApp Web session through neonize, credentials in PostgreSQL."""

    name = "neonize"

    def __init__(self, database_url: str, company_id: str, *, proxy_url: str | None = None,
                 device_jid: str | None = None, log: logging.Logger | None = None,
                 backoff: Backoff | None = None,
                 max_login_cycles: int = DEFAULT_MAX_LOGIN_CYCLES,
                 go_ops: GoOps | None = None, policy: NeonizePolicy | None = None,
                 lock_held: Callable[[], bool] | None = None,
                 on_restart: Callable[[str], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None,
                 store_pool: asyncpg.Pool | None = None) -> None:
        """`database_url`: the project's PostgreSQL URL (whatsmeow's tables live there).
        `store_pool`: the worker's asyncpg pool, for the store's own queries (default: a
        pool of one connection of the driver's own).
        `proxy_url`: `socks5://`, `http://` or `https://` (from a Secret; never logged).
        `device_jid`: the device this session linked before (`salon_sessions.device_jid`);
        when omitted it is read from that table. Only a device present in
        `whatsmeow_device` is resumed.
        `lock_held`: whether the worker still holds the session lock (the one retry after
        `StreamReplaced` needs it). `on_restart(reason)`: the driver restarted a client by
        itself (counted by the worker). `on_fatal(reason)`: this process can no longer run
        a client safely and must be restarted (the worker exits)."""
        self.company_id = canonical_company_id(company_id)
        self._database_url = database_url
        self._store = NeonizeStore(database_url, store_pool)
        go_store_dsn(database_url, "check")  # validates the scheme
        if proxy_url is not None:
            scheme = urlsplit(proxy_url).scheme.lower()
            if scheme not in PROXY_SCHEMES or not urlsplit(proxy_url).hostname:
                raise ValueError(f"proxy URL must be {', '.join(PROXY_SCHEMES)}://host:port "
                                 f"(scheme {scheme or 'missing'!r})")
        self._proxy_url = proxy_url or None
        if device_jid is not None:
            _check_device_jid(device_jid)
        self._configured_device = device_jid
        base = log or logging.getLogger("salon_sessions.worker.neonize")
        self._log = logging.LoggerAdapter(base, {"company_id": self.company_id})
        self._backoff = backoff or Backoff(base=2.0, cap=60.0)
        if max_login_cycles < 1:
            raise ValueError("max_login_cycles must be at least 1")
        self._max_login_cycles = max_login_cycles
        self._go_ops = go_ops
        self._policy = policy or NeonizePolicy()
        self._lock_held = lock_held or (lambda: True)
        self._on_restart = on_restart or (lambda _reason: None)
        self._on_fatal = on_fatal or (lambda _reason: None)
        self._slow_backoff = Backoff(base=self._policy.slow_base_s, cap=self._policy.slow_cap_s)
        self._secrets = _secrets_of(database_url, self._proxy_url)
        self._resolver = StoreLidResolver(self._store)
        self._rng = random.Random()

        self._sink: DriverSink | None = None
        self._inbox: asyncio.Queue[tuple[GoAttempt, str, Any]] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False
        self._halted: str | None = None
        self._retired: list[GoAttempt] = []
        self._holder: GoAttempt | None = None
        """The last retired client that may still hold WhatsApp's stream."""

        self._attempt: GoAttempt | None = None
        self._outcome: asyncio.Future[_Outcome] | None = None
        self._failures = 0
        self._slow_failures = 0
        self._login_cycles = 0
        self._down_reported = False
        self._replaced_at: float | None = None
        """When the stream was last replaced (monotonic), for the retry window."""
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Per attempt:
        self._connected = False
        self._device_jid: str | None = None
        self._qr_index = 0
        self._login_opened: datetime | None = None
        self._login_ready = asyncio.Event()
        self._reported: set[str] = set()
        """What this client run has reported already (a fact can come as a neonize event
        and as a whatsmeow log line; the first one wins, both carry the same facts)."""
        self._unconnected_since: float | None = None
        """Linked and not connected since (monotonic), for the watchdog."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ properties
    @property
    def lid_resolver(self) -> LidResolver:
        return self._resolver

    @property
    def connected(self) -> bool:
        """The socket is open and authenticated (as far as the events said)."""
        return self._connected

    @property
    def halted(self) -> str | None:
        """Why the driver stopped reconnecting, or None while it runs or before start."""
        return self._halted

    @property
    def store(self) -> NeonizeStore:
        return self._store

    # ------------------------------------------------------------------ Driver API
    async def start(self, sink: DriverSink) -> None:
        if self._closed:
            raise DriverError("closed", "the driver is closed and cannot be started again")
        self.attach(sink)
        if self._supervisor is not None and not self._supervisor.done():
            return
        await asyncio.to_thread(load_neonize)
        self._stop.clear()
        self._halted = None
        self._login_cycles = 0
        self._failures = 0
        self._supervisor = asyncio.create_task(self._supervise(),
                                               name=f"neonize-{self.company_id}")

    def attach(self, sink: DriverSink) -> None:
        """Bind the sink and start handling events, without connecting (`start` does
        both). Lets tests feed neonize events to the handlers directly."""
        if self._closed:
            raise DriverError("closed", "the driver is closed")
        self._sink = sink
        if self._consumer is None or self._consumer.done():
            self._inbox = asyncio.Queue()
            self._consumer = asyncio.create_task(self._consume(),
                                                 name=f"neonize-events-{self.company_id}")

    async def stored_device(self) -> str | None:
        candidates = [self._device_jid, self._configured_device]
        if self._device_jid is None and self._configured_device is None:
            candidates.append(await self._store.linked_device(self.company_id))
        for jid in dict.fromkeys(c for c in candidates if c):
            try:
                _check_device_jid(jid)
            except InvalidJid:
                self._log.warning("ignoring a stored device JID that is not a user JID")
                continue
            if await self._store.device_registered(jid):
                return jid
        return None

    async def request_pairing_code(self, phone: str) -> IssuedCode:
        try:
            digits = parse_phone(phone)
        except InvalidPhone as exc:
            raise DriverError("invalid_phone", str(exc)) from None
        if (self._connected or self._device_jid is not None
                or await self.stored_device() is not None):
            raise DriverError("already_linked", "this session already has a linked device")
        if self._closed or self._supervisor is None:
            raise DriverError("not_connected", "the driver is not started")
        if self._supervisor.done():
            if self._halted != "login_expired":
                raise DriverError("not_connected",
                                  f"the driver stopped reconnecting: {self._halted}")
            await self._restart_supervisor()
        attempt = await self._login_socket(PAIRING_MIN_WINDOW_S)
        code, error = await run_in_daemon("pair-phone", go_pair_phone, attempt.uuid, digits,
                                          PAIR_CLIENT_NAME, PAIR_CLIENT_TYPE)
        if error:
            raise DriverError("pairing_failed", self._scrub(error))
        code = code.replace("-", "").strip()
        if len(code) != 8:
            raise DriverError("pairing_failed", "WhatsApp returned a malformed pairing code")
        opened = self._login_opened or datetime.now(UTC)
        self._log.info("pairing code issued; valid until the login socket closes")
        return IssuedCode(code=code, expires_at=opened + timedelta(seconds=LOGIN_WINDOW_S))

    async def cancel_pairing_code(self) -> None:
        """whatsmeow keeps one pending code per login socket and has no call to drop it: the
        next `request_pairing_code` on that socket replaces it (`PairPhone` sends a new
        pairing reference, and the phone's answer to the old one is refused), and closing the
        socket ends it. Nothing is restarted here: each login socket closed early parks a
        neonize thread for good (`max_parked`)."""
        self._log.info("pairing code cancelled; the next code on this login socket replaces it")

    async def send_text(self, to_jid: str, text: str) -> str:
        attempt = self._attempt
        if not self._connected or attempt is None or attempt.phase is not Phase.RUNNING:
            raise DriverError("not_connected", "the WhatsApp session is not connected")
        try:
            parsed = parse_jid(to_jid)
            if parsed.kind is JidKind.SERVER:
                raise InvalidJid(to_jid, "a server JID is not a chat")
            to = jid_proto(parsed.bare)
        except InvalidJid as exc:
            raise DriverError("invalid_jid", str(exc)) from None
        if not text:
            raise DriverError("empty_text", "refusing to send an empty message")
        async with self._go_call():
            message_id, error = await run_in_daemon("send", go_send_text, attempt.uuid, to,
                                                    text)
        if error:
            # 429 / 463: `rate_limited` / `reachout_restricted` (the bridge's breaker)
            raise send_error(self._scrub(error))
        return message_id

    async def send_presence(self, to_jid: str, composing: bool) -> None:
        """neonize's `SendChatPresence` (whatsmeow: a `<chatstate>` node, composing or
        paused, text). Best effort: without an open socket, or on any error, nothing
        happens but a debug line; a Go call slower than `presence_wait_s` is left running."""
        attempt = self._attempt
        if not self._connected or attempt is None or attempt.phase is not Phase.RUNNING:
            self._log.debug("no typing indicator: not connected")
            return
        try:
            parsed = parse_jid(to_jid)
            if parsed.kind is JidKind.SERVER:
                raise InvalidJid(to_jid, "a server JID is not a chat")
            to = jid_proto(parsed.bare)
        except InvalidJid:
            self._log.debug("no typing indicator: not a chat JID")
            return
        async with self._go_call():
            call = run_in_daemon("presence", go_send_chat_presence, attempt.uuid, to,
                                 composing)
            try:
                error = await asyncio.wait_for(asyncio.shield(call),
                                               timeout=self._policy.presence_wait_s)
            except TimeoutError:
                self._log.debug("typing indicator: no answer from Go within %.0f s",
                                self._policy.presence_wait_s)
                return
        if error:
            self._log.debug("typing indicator not sent: %s", self._scrub(error))

    async def disconnect(self) -> None:
        supervisor = self._supervisor
        was_active = self._attempt is not None
        self._halted = "disconnect requested"
        await self._stop_supervisor()
        if was_active and supervisor is not None:
            await self._emit(Disconnected(reason="disconnected on request",
                                          will_reconnect=False))

    async def logout(self) -> None:
        jid = self._device_jid or await self.stored_device()
        attempt = self._attempt
        if jid is None and not self._connected:
            self._log.info("logout requested, but no device is linked")
            return
        if self._connected and attempt is not None and attempt.phase is Phase.RUNNING:
            async with self._go_call():
                error = await run_in_daemon("logout", go_logout, attempt.uuid)
            if error:
                self._log.warning("WhatsApp did not confirm the logout (%s); deleting the "
                                  "local credentials anyway", self._scrub(error))
        self._connected = False
        if jid is not None:
            await self._store.delete_device(jid)
        self._device_jid = None
        self._configured_device = None
        self._log.info("logged out; credentials deleted")
        await self._emit(LoggedOut(reason="on_request", on_connect=False))
        self._login_cycles = 0
        self._request(_Outcome("restart", "logged out", delay=LOGGED_OUT_RESTART_DELAY_S,
                               fresh=True))

    async def close(self) -> None:
        if self._closed:
            return
        self._halted = self._halted or "closed"
        await self._stop_supervisor()
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        while self._inbox is not None and not self._inbox.empty():
            _unqueued(self._inbox.get_nowait()[2])
        await self._terminate_retired()
        await self._store.close()

    # ------------------------------------------------------------------ handlers
    async def handle_neonize_event(self, event: Any) -> None:
        """Map one neonize event (a `neonize.proto.Neonize_pb2` message) to driver events."""
        kind = event_name(event)
        if kind == "PairStatus":
            await self._on_pair_status(event)
        elif kind == "Connected":
            self._connected = True
            self._failures = self._slow_failures = 0
            self._down_reported = False
            self._login_cycles = 0
            self._unconnected_since = None
            self._log.info("connected to WhatsApp")
            await self._emit(Connected(jid=self._device_jid))
        elif kind == "Disconnected":
            self._set_disconnected()
            self._log.info("connection to WhatsApp lost; whatsmeow reconnects")
            await self._emit(Disconnected(reason="connection lost", will_reconnect=True))
        elif kind == "LoggedOut":
            await self._on_logged_out(logged_out(event))
        elif kind == "StreamReplaced":
            await self._on_stream_replaced()
        elif kind == "TemporaryBan":
            ban = temporary_ban(event)
            await self._on_temporary_ban(ban.code, ban.expires_at)
        elif kind == "ConnectFailure":
            failure = connect_failure(event)
            await self._on_connect_failure(failure.reason, failure.message)
        elif kind == "ClientOutdated":
            await self._on_client_outdated()
        elif kind == "Message":
            await self.handle_message(event)
        elif kind == "OfflineSyncPreview":
            self._log.info("WhatsApp delivers what arrived while the client was away (%s "
                           "messages)", event.Message)
        elif kind == "OfflineSyncCompleted":
            self._log.info("WhatsApp delivered what arrived while the client was away")
        elif kind == "Device":
            jid = jid_text(event.JID) if event.HasField("JID") else None
            if jid:
                self._device_jid = jid
        elif kind == "KeepAliveTimeout":
            self._log.warning("WhatsApp keepalive timed out (%s errors)", event.ErrorCount)
        elif kind == "KeepAliveRestored":
            self._log.info("WhatsApp keepalive restored")
        elif kind == "StreamError":
            self._log.warning("WhatsApp stream error %s", event.Code)
        else:
            self._log.debug("ignoring neonize event %s", kind)

    async def handle_message(self, event: Any, *, offline: bool = False) -> bool:
        """A neonize `Message`: a text message goes to the sink, which stores it.

        True once it is stored (or when it is no text message), False when it could not
        be: the sink raised `MessageNotStored` (or there is no sink). whatsmeow has sent the
        delivery receipt already (neonize does not let the driver withhold it, see
        docs/NEONIZE.md, "Inbound messages"), so such a message is lost unless WhatsApp
        delivers it again. `offline`: it came from WhatsApp's offline queue."""
        message = await inbound_message(event, self._resolver, offline=offline)
        if message is None:
            return True
        if self._sink is None:
            self._log.warning("inbound message %s dropped: no sink attached",
                              message.message_id)
            return False
        try:
            await self._emit(message)
        except MessageNotStored as exc:
            self._log.error("inbound message %s was not stored (%s); WhatsApp already has "
                            "its delivery receipt, so it is lost unless WhatsApp delivers "
                            "it again", message.message_id, exc)
            return False
        return True

    async def handle_qr(self, code: str) -> None:
        """A (rotated) QR payload from the login socket."""
        if self._qr_index == 0:
            self._login_opened = self._login_opened or datetime.now(UTC)
        timeout = FIRST_QR_TIMEOUT_S if self._qr_index == 0 else NEXT_QR_TIMEOUT_S
        self._qr_index += 1
        self._down_reported = False
        self._failures = 0
        self._login_ready.set()
        await self._emit(QrCode(code=code, timeout_s=timeout))

    async def handle_login_status(self, status: str) -> None:
        """An item of the login socket's QR channel other than a code: its end (`success`,
        `timeout`, `error`, ...) or a passkey step, which keeps the socket open."""
        if status == "err-scanned-without-multidevice":
            self._log.warning("the QR code was scanned by a phone without multi-device")
            return
        stage = PASSKEY_STATUSES.get(status)
        if stage is not None:
            # WhatsApp waits on this socket for the account's passkey: restarting would
            # tear the link down mid-handshake. neonize cannot answer it (docs/NEONIZE.md).
            self._log.warning("WhatsApp asks for the account's passkey (%s)", status)
            await self._emit(PasskeyRequired(stage=stage))
            return
        self._login_ready.clear()
        if status == "success":
            self._log.info("QR login succeeded")
            return
        if status == "err-client-outdated":
            await self._on_client_outdated()
            return
        more = self._login_cycles + 1 < self._max_login_cycles
        if status == "timeout":
            self._log.info("the login QR codes expired without a scan")
            await self._emit(Disconnected(reason="the QR codes expired without a scan",
                                          will_reconnect=more))
            self._request(_Outcome("restart", "login expired", delay=LOGIN_RESTART_DELAY_S,
                                   login_cycle=True))
        elif status == "error":
            await self._emit(ConnectFailure(reason="pair_error",
                                            message="WhatsApp rejected the pairing"))
            self._request(_Outcome("restart", "pairing failed", delay=LOGIN_RESTART_DELAY_S,
                                   login_cycle=True))
        else:
            await self._emit(Disconnected(reason=f"login ended: {status}",
                                          will_reconnect=more))
            self._request(_Outcome("restart", f"login ended: {status}", login_cycle=True))

    async def handle_marker(self, fact: LogFact) -> None:
        """An event announced by a whatsmeow log line (`neonize_logs`)."""
        match fact:
            case StreamReplacedLine():
                await self._on_stream_replaced()
            case ClientOutdatedLine():
                await self._on_client_outdated()
            case LoggedOutLine(code=code, on_connect=on_connect):
                await self._on_logged_out(LoggedOut(reason=logout_reason(code),
                                                    on_connect=on_connect))
            case TemporaryBanLine(code=code, expire_s=expire_s):
                expires = (datetime.now(UTC) + timedelta(seconds=expire_s)
                           if expire_s > 0 else None)
                await self._on_temporary_ban(
                    temp_ban_name(code) if code is not None else "temp_banned", expires)
            case ConnectFailureLine(code=code, message=message):
                await self._on_connect_failure(
                    failure_name(code) if code is not None else "generic", message)
            case ReconnectFailedLine():
                if self._device_jid is not None and not self._connected:
                    self._log.warning("whatsmeow's reconnect after pairing failed and is not "
                                      "retried; restarting the client")
                    await self._emit(Disconnected(
                        reason="the reconnect after linking failed; restarting the WhatsApp "
                               "client", will_reconnect=True))
                    self._restart_client("reconnect_after_pairing_failed")

    async def _on_pair_status(self, event: Any) -> None:
        if enum_name(event, "Status") == "success":
            success = pair_success(event)
            if success is None:
                return
            self._device_jid = success.jid
            self._configured_device = success.jid
            self._login_cycles = 0
            self._unconnected_since = time.monotonic()
            self._log.info("device linked")
            await self._emit(success)
        else:
            await self._emit(ConnectFailure(reason="pair_error",
                                            message=self._scrub(str(event.Error))))

    def _first(self, fact: str) -> bool:
        """True the first time this client run reports `fact` (see `_reported`)."""
        if fact in self._reported:
            return False
        self._reported.add(fact)
        return True

    def _set_disconnected(self) -> None:
        self._connected = False
        if self._device_jid is not None and self._unconnected_since is None:
            self._unconnected_since = time.monotonic()

    async def _on_logged_out(self, event: LoggedOut) -> None:
        if self._attempt is not None and not self._first("logged_out"):
            return
        self._connected = False
        self._unconnected_since = None
        jid, self._device_jid = self._device_jid, None
        self._configured_device = None
        if jid is not None:
            with contextlib.suppress(Exception):
                await self._store.delete_device(jid)
        self._log.warning("WhatsApp logged the device out (%s); credentials deleted",
                          event.reason)
        await self._emit(event)
        self._login_cycles = 0
        self._request(_Outcome("restart", "logged out", delay=LOGGED_OUT_RESTART_DELAY_S,
                               fresh=True))

    async def _on_stream_replaced(self) -> None:
        """Another client took the stream over. It can be self-inflicted (two pods for a
        moment, or a client of ours that stopped late): one retry after a pause, if this
        worker still holds the session lock; a second replacement within the window halts."""
        if not self._first("stream_replaced"):
            return
        self._set_disconnected()
        now = time.monotonic()
        p = self._policy
        recent = (self._replaced_at is not None
                  and now - self._replaced_at < p.stream_replaced_window_s)
        self._replaced_at = now
        retry = not recent and self._lock_held()
        if retry:
            self._log.warning("another client took the stream over; retrying once in %.0f s",
                              p.stream_replaced_retry_s)
        else:
            self._log.error("another client took the stream over %s; not reconnecting",
                            "again" if recent else "and the session lock is not held")
        await self._emit(StreamReplaced(will_retry=retry))
        if retry:
            self._request(_Outcome("restart", "stream replaced", delay=p.stream_replaced_retry_s,
                                   needs_lock=True))
        else:
            self._request(_Outcome("halt", "stream replaced twice" if recent
                                   else "stream replaced without the session lock"))

    async def _on_temporary_ban(self, code: str, expires_at: datetime | None) -> None:
        if not self._first(f"temporary_ban:{code}"):
            return
        self._set_disconnected()
        self._log.warning("temporary ban %s until %s", code, expires_at)
        await self._emit(TemporaryBan(code=code, expires_at=expires_at))
        if expires_at is None:
            self._request(_Outcome("halt", f"temporary ban {code} without an end"))
        else:
            wait = (expires_at - datetime.now(UTC)).total_seconds()
            self._request(_Outcome("restart", "temporary ban", delay=max(wait, 1.0)))

    async def _on_connect_failure(self, reason: str, message: str) -> None:
        """WhatsApp refused the connection. Refusals no reconnect can fix halt; those
        WhatsApp expects to pass are retried with the usual backoff; anything else (a code
        nobody explained) only slowly: a fast loop into an unexplained refusal is how
        numbers get banned."""
        if not self._first(f"connect_failure:{reason}"):
            return
        self._set_disconnected()
        message = self._scrub(message)
        halt = reason in NON_RETRYABLE
        self._log.warning("WhatsApp refused the connection: %s", reason)
        await self._emit(ConnectFailure(reason=reason, message=message, will_retry=not halt))
        if halt:
            self._request(_Outcome("halt", f"connect failure {reason}"))
        elif reason in RETRYABLE:
            self._request(_Outcome("restart", f"connect failure {reason}"))
        else:
            self._slow_failures += 1
            delay = self._slow_backoff.delay(self._slow_failures, self._rng)
            self._request(_Outcome("restart", f"connect failure {reason}", delay=delay))

    async def _on_client_outdated(self) -> None:
        if not self._first("client_outdated"):
            return
        self._connected = False
        self._log.error("WhatsApp rejects this client version; upgrade neonize")
        await self._emit(ConnectFailure(reason="client_outdated",
                                        message="WhatsApp rejected the client version",
                                        will_retry=False))
        self._request(_Outcome("halt", "client outdated"))

    def _restart_client(self, reason: str) -> None:
        """Restart the current client on the driver's own account (counted)."""
        self._on_restart(reason)
        self._request(_Outcome("restart", reason, delay=0.0))

    # ------------------------------------------------------------------ plumbing
    async def _emit(self, event: DriverEvent) -> None:
        sink = self._sink
        if sink is None:
            self._log.debug("no sink attached; dropping %s", type(event).__name__)
            return
        await sink(event)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact_text(text)

    def _request(self, outcome: _Outcome) -> None:
        """Ask the supervisor to end the current attempt (first request wins)."""
        future = self._outcome
        if future is not None and not future.done():
            future.set_result(outcome)

    def _post(self, attempt: GoAttempt, kind: str, payload: Any) -> None:
        """From Go threads: queue a callback onto the event loop (thread-safe). A message
        that cannot be queued is settled as not stored at once (its Go thread waits)."""
        loop = self._loop
        if loop is None:
            _unqueued(payload)
            return
        try:
            loop.call_soon_threadsafe(self._note, attempt, kind, payload)
        except RuntimeError:  # the loop is closed
            _unqueued(payload)

    def _note(self, attempt: GoAttempt, kind: str, payload: Any) -> None:
        """On the loop, before queueing: track the login socket at once, so that a pairing
        code request does not wait for a sink that is busy (or waits for it)."""
        if attempt is self._attempt:
            if kind == "qr":
                self._login_opened = self._login_opened or datetime.now(UTC)
                self._login_ready.set()
            elif (kind == "login" and payload != "err-scanned-without-multidevice"
                  and payload not in PASSKEY_STATUSES):
                self._login_ready.clear()
        if self._inbox is not None and not self._closed:
            self._inbox.put_nowait((attempt, kind, payload))
        else:
            _unqueued(payload)

    async def _consume(self) -> None:
        self._loop = asyncio.get_running_loop()
        inbox = self._inbox
        assert inbox is not None
        while True:
            attempt, kind, payload = await inbox.get()
            try:
                await self._dispatch(attempt, kind, payload)
            except Exception:
                self._log.exception("handling a neonize %s failed", kind)

    async def _dispatch(self, attempt: GoAttempt, kind: str, payload: Any) -> None:
        if kind == "message":
            # even from a retired client: WhatsApp has the receipt, the message is real
            await self._deliver(payload)
            return
        if attempt is not self._attempt:
            if kind == "finished" and attempt in self._retired:
                with contextlib.suppress(Exception):
                    await self._store.terminate_backends([attempt.application_name])
            return  # a retired attempt: its events no longer describe the session
        if kind == "finished":
            self._request(_Outcome("finished", str(payload)))
        elif kind == "qr":
            await self.handle_qr(str(payload))
        elif kind == "login":
            await self.handle_login_status(str(payload))
        elif kind == "event":
            await self.handle_neonize_event(payload)
        elif kind == "marker":
            await self.handle_marker(payload)

    async def _deliver(self, pending: PendingMessage) -> None:
        """Store an inbound message, then release neonize's event thread waiting for it."""
        stored = False
        try:
            stored = await self.handle_message(pending.event, offline=pending.offline)
        finally:
            pending.settle(stored)

    # ------------------------------------------------------------------ supervisor
    async def _supervise(self) -> None:
        fresh = False
        try:
            while not self._stop.is_set():
                try:
                    jid = None if fresh else await self.stored_device()
                except Exception as exc:
                    self._failures += 1
                    await self._report_down(f"session store unavailable: "
                                            f"{self._scrub(str(exc)) or type(exc).__name__}")
                    await self._pause(self._backoff.delay(self._failures, self._rng))
                    continue
                fresh = False
                refusal = self._refuse_attempt(jid) or await self._holder_gone()
                if refusal is not None:
                    await self._halt_fatally(refusal)
                    break
                outcome = await self._run_attempt(jid)
                if outcome.kind == "stop" or self._stop.is_set():
                    break
                if outcome.kind == "halt":
                    self._halted = outcome.reason
                    self._log.warning("not reconnecting: %s", outcome.reason)
                    break
                delay: float
                if outcome.kind == "finished":
                    self._failures += 1
                    if jid is not None and not await self._still_registered(jid):
                        await self._on_logged_out(LoggedOut(reason="device_removed",
                                                            on_connect=True))
                        delay = LOGGED_OUT_RESTART_DELAY_S
                        fresh = True
                    else:
                        await self._report_down("connection failed: "
                                                f"{outcome.reason or 'the client stopped'}")
                        delay = self._backoff.delay(self._failures, self._rng)
                else:  # restart
                    fresh = outcome.fresh
                    if outcome.login_cycle:
                        self._login_cycles += 1
                        if self._login_cycles >= self._max_login_cycles:
                            self._halted = "login_expired"
                            self._log.info("no link after %d login sockets; waiting for "
                                           "start() or a pairing code request",
                                           self._login_cycles)
                            break
                    if outcome.delay is not None:
                        delay = outcome.delay
                    else:
                        self._failures += 1
                        delay = self._backoff.delay(self._failures, self._rng)
                self._log.info("reconnecting in %.1f s (%s)", delay,
                               outcome.reason[:200] or outcome.kind)
                await self._pause(delay)
                if outcome.needs_lock and not self._lock_held():
                    self._halted = f"{outcome.reason}; the session lock is not held"
                    self._log.warning("not reconnecting: %s", self._halted)
                    await self._emit(Disconnected(reason=self._halted, will_reconnect=False))
                    break
        except Exception:
            self._halted = "internal error"
            self._log.exception("the neonize supervisor failed; not reconnecting")
            with contextlib.suppress(Exception):
                await self._emit(Disconnected(reason="driver error", will_reconnect=False))
        finally:
            self._connected = False

    async def _run_attempt(self, jid: str | None) -> _Outcome:
        loop = asyncio.get_running_loop()
        self._loop = loop
        attempt = GoAttempt(company_id=self.company_id, database_url=self._database_url,
                            jid=jid, proxy_url=self._proxy_url, post=self._post,
                            log=self._log, scrub=self._scrub, ops=self._go_ops,
                            message_wait_s=self._policy.message_wait_s)
        self._attempt = attempt
        self._outcome = loop.create_future()
        self._connected = False
        self._qr_index = 0
        self._login_opened = None
        self._login_ready.clear()
        self._reported = set()
        if jid is not None:
            self._device_jid = jid
        self._unconnected_since = time.monotonic() if self._device_jid is not None else None
        self._log.info("starting a WhatsApp client (%s)",
                       "resuming the stored device" if jid else "new device: QR login")
        outcome_future = self._outcome
        attempt.start()
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {outcome_future, stopper}
        try:
            while not any(f.done() for f in waiting):
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED,
                                   timeout=min(WATCHDOG_TICK_S, self._policy.watchdog_s))
                await self._watch(attempt)
            outcome = (outcome_future.result() if outcome_future.done()
                       else _Outcome("stop", "stop requested"))
        finally:
            stopper.cancel()
            self._outcome = None
            await self._retire(attempt)
        return outcome

    async def _watch(self, attempt: GoAttempt) -> None:
        """The watchdog: a linked client that stays unconnected past the bound is restarted
        (whatsmeow gives up on a failed reconnect after pairing, and a client can hang)."""
        since = self._unconnected_since
        if (since is None or self._connected or attempt is not self._attempt
                or attempt.phase is Phase.FINISHED):
            return
        waited = time.monotonic() - since
        if waited < self._policy.watchdog_s:
            return
        self._log.warning("linked but not connected for %.0f s; restarting the WhatsApp "
                          "client", waited)
        self._unconnected_since = None
        await self._emit(Disconnected(reason=f"not connected for {waited:.0f} s; restarting "
                                             "the WhatsApp client", will_reconnect=True))
        self._restart_client("not_connected")

    def _refuse_attempt(self, jid: str | None) -> str | None:
        """Why no new client may start in this process, if so."""
        if jid is None and parked_count() >= self._policy.max_parked:
            return (f"{parked_count()} abandoned login clients are parked in this process "
                    "(neonize cannot free them); it must restart")
        return None

    async def _holder_gone(self) -> str | None:
        """Two clients with the same credentials replace each other's stream: the next
        client starts only once the previous one that may hold it has returned from
        `Neonize()`. Why not, if it does not within `stop_wait_s`."""
        holder = self._holder
        if holder is None or holder.finished.is_set():
            self._holder = None
            return None
        wait = self._policy.stop_wait_s
        if await asyncio.to_thread(holder.finished.wait, wait):
            self._holder = None
            return None
        return (f"a WhatsApp client did not stop within {wait:.0f} s; starting another "
                "would replace its stream")

    async def _halt_fatally(self, reason: str) -> None:
        self._halted = reason
        self._log.error("not starting another WhatsApp client: %s", reason)
        await self._emit(Disconnected(reason=reason[:1024], will_reconnect=False))
        self._on_fatal(reason)

    async def _retire(self, attempt: GoAttempt) -> None:
        """Stop an attempt's Go client as far as its phase allows, then free its DB
        connections: after its running calls finished, and only once Go let go of it."""
        self._attempt = None
        self._connected = False
        self._login_ready.clear()
        p = self._policy
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=p.drain_s)
        attempt.request_stop()
        settled = await asyncio.to_thread(attempt.settled.wait, p.retire_wait_s)
        if attempt.jid is not None or attempt.phase is Phase.RUNNING:
            self._holder = attempt  # it may hold WhatsApp's stream (see `_holder_gone`)
        elif not settled:
            self._log.warning("the WhatsApp client did not stop within %.0f s; it is "
                              "stopped when it gets that far", p.retire_wait_s)
        elif attempt.phase is Phase.LOGIN:
            self._log.debug("login socket closed; its neonize thread stays parked")
        self._retired = [*self._retired[-(RETIRED_KEPT - 1):], attempt]
        await self._terminate_retired()

    async def _terminate_retired(self) -> None:
        """Close the store connections of retired clients that no longer run (a finished
        one's are closed again on its `finished` callback, see `_dispatch`)."""
        names = [a.application_name for a in self._retired
                 if a.finished.is_set() or a.phase is Phase.LOGIN]
        if not names:
            return
        try:
            await self._store.terminate_backends(names)
        except Exception as exc:
            self._log.warning("could not close finished clients' store connections: %s",
                              self._scrub(str(exc)) or type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _go_call(self) -> AsyncIterator[None]:
        """A Go call on the current client that must finish before the client stops."""
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _still_registered(self, jid: str) -> bool:
        try:
            return await self._store.device_registered(jid)
        except Exception:
            return True  # unknown: assume nothing changed

    async def _report_down(self, reason: str) -> None:
        self._connected = False
        if self._down_reported:
            self._log.debug("still down: %s", reason)
            return
        self._down_reported = True
        self._log.warning("WhatsApp unreachable, retrying: %s", reason)
        await self._emit(Disconnected(reason=reason[:1024], will_reconnect=True))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(seconds, 0.0))

    async def _stop_supervisor(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        self._stop.set()
        self._request(_Outcome("stop", "stop requested"))
        try:
            await supervisor
        except Exception:
            self._log.exception("the neonize supervisor failed")

    async def _restart_supervisor(self) -> None:
        await self._stop_supervisor()
        self._stop.clear()
        self._halted = None
        self._login_cycles = 0
        self._supervisor = asyncio.create_task(self._supervise(),
                                               name=f"neonize-{self.company_id}")

    async def _login_socket(self, min_window: float) -> GoAttempt:
        """The current login attempt with at least `min_window` seconds left, opening a
        new login socket when needed."""
        deadline = time.monotonic() + LOGIN_WAIT_S
        restarted = False
        while True:
            attempt = self._attempt
            if (attempt is not None and attempt.phase is Phase.LOGIN
                    and self._login_ready.is_set() and self._login_opened is not None):
                left = LOGIN_WINDOW_S - (datetime.now(UTC) - self._login_opened).total_seconds()
                if left >= min_window or restarted:
                    return attempt
                self._log.info("login socket closes in %.0f s; opening a new one for the "
                               "pairing code", left)
                self._request(_Outcome("restart", "fresh login for a pairing code", delay=0.0,
                                       fresh=True))
                self._login_ready.clear()
                restarted = True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._supervisor is None or self._supervisor.done():
                raise DriverError("not_connected",
                                  "no login connection to WhatsApp is open (yet)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._login_ready.wait(), timeout=min(remaining, 1.0))


def _unqueued(payload: Any) -> None:
    """A callback that will never be handled: release a Go thread waiting on it."""
    if isinstance(payload, PendingMessage):
        payload.settle(False)


def _check_device_jid(jid: str) -> None:
    parsed = parse_jid(jid)
    if parsed.kind not in (JidKind.USER, JidKind.LID):
        raise InvalidJid(jid, "a device JID is a user JID")


def _secrets_of(*urls: str | None) -> list[str]:
    """Literal strings that must never leave the driver (URLs, their passwords)."""
    found: list[str] = []
    for url in urls:
        if not url:
            continue
        found.append(url)
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                found.append(password)
    return sorted(set(found), key=len, reverse=True)
