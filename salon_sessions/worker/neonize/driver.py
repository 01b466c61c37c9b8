"""The `neonize` driver: real WhatsApp through neonize/whatsmeow, session store in PostgreSQL.

`NeonizeDriver` implements `Driver` by composing small objects, each in its own module
(details in docs/NEONIZE.md and in `neonize.go`):

- `neonize_supervisor.AttemptSupervisor`: one Go client at a time (a `GoAttempt`), its
  retries, halts and watchdog; handlers only ask it for an `Outcome`;
  `neonize_retire.ClientRetirer`: how a client is stopped safely, and when the next may start;
- `neonize_inbox.CallbackInbox`: Go callbacks onto the event loop, in order; the driver
  routes each kind (`GoCallback`) to its handler (`_route`);
- `neonize_link.LinkFlow`: QR codes, pairing codes, passkey steps, the pair status;
- `neonize_handlers.NeonizeEventHandlers`: one handler per neonize event, log-line facts,
  inbound messages; `neonize_reactions.ConnectionReactions`: logouts, a replaced stream,
  bans, refusals, an outdated client;
- `neonize_sender.NeonizeSender`: texts, typing indicators and the logout call;
- `neonize_device.DeviceRecord`: which device is resumed, checked against the store;
- `neonize.state`: the current client run's facts they share; `neonize.context`: the
  policy, log, scrubber and sink.

Never logged: the database URL, the proxy URL, QR payloads, pairing codes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg

from salon_sessions.core.backoff import Backoff
from salon_sessions.core.company import canonical_company_id
from salon_sessions.core.phone import LidResolver
from salon_sessions.db.whatsmeow_store import NeonizeStore, StoreLidResolver, go_store_dsn
from salon_sessions.worker.driver import (
    Disconnected,
    Driver,
    DriverError,
    DriverSink,
    IssuedCode,
    LoggedOut,
)
from salon_sessions.worker.neonize.context import DriverContext, NeonizePolicy, secrets_of
from salon_sessions.worker.neonize.device import DeviceRecord
from salon_sessions.worker.neonize.go import GoCallback, GoOps
from salon_sessions.worker.neonize.handlers import NeonizeEventHandlers
from salon_sessions.worker.neonize.inbox import Callback, CallbackInbox
from salon_sessions.worker.neonize.link import LinkFlow
from salon_sessions.worker.neonize.logs import LogFact
from salon_sessions.worker.neonize.reactions import ConnectionReactions
from salon_sessions.worker.neonize.retire import ClientRetirer
from salon_sessions.worker.neonize.sender import NeonizeSender
from salon_sessions.worker.neonize.state import ClientRun, LoginSocket
from salon_sessions.worker.neonize.supervisor import (
    LOGGED_OUT_RESTART_DELAY_S,
    AttemptSupervisor,
    GoClientSettings,
    Outcome,
)

__all__ = ["NeonizeDriver", "NeonizePolicy"]

DEFAULT_MAX_LOGIN_CYCLES: Final = 5
"""Login sockets opened in a row without a link (each ~160 s) before the driver halts;
every abandoned login leaves a parked daemon thread behind (see `neonize.go`)."""
PROXY_SCHEMES: Final = ("socks5", "http", "https")
"""What whatsmeow's `SetProxyAddress` accepts."""


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
        self._store = NeonizeStore(database_url, store_pool)
        go_store_dsn(database_url, "check")  # validates the scheme
        if proxy_url is not None:
            scheme = urlsplit(proxy_url).scheme.lower()
            if scheme not in PROXY_SCHEMES or not urlsplit(proxy_url).hostname:
                raise ValueError(f"proxy URL must be {', '.join(PROXY_SCHEMES)}://host:port "
                                 f"(scheme {scheme or 'missing'!r})")
        proxy_url = proxy_url or None
        self._ctx = DriverContext(self.company_id,
                                  log or logging.getLogger("salon_sessions.worker.neonize"),
                                  policy or NeonizePolicy(),
                                  secrets_of(database_url, proxy_url))
        self._device = DeviceRecord(self._ctx, self._store, device_jid)
        self._resolver = StoreLidResolver(self._store)
        self._closed = False
        self._run = ClientRun()
        login = LoginSocket()
        self._retirer = ClientRetirer(self._ctx, self._store)
        self._inbox = CallbackInbox(self._ctx, note=self._note, route=self._route)
        self._supervisor = AttemptSupervisor(
            self._ctx, run=self._run, login=login, device=self._device, retirer=self._retirer,
            go=GoClientSettings(database_url, proxy_url, go_ops), post=self._inbox.post,
            backoff=backoff or Backoff(base=2.0, cap=60.0), max_login_cycles=max_login_cycles,
            lock_held=lock_held or (lambda: True),
            on_restart=on_restart or (lambda _reason: None),
            on_fatal=on_fatal or (lambda _reason: None), on_device_gone=self._device_gone)
        self._reactions = ConnectionReactions(self._ctx, run=self._run, device=self._device,
                                              supervisor=self._supervisor)
        self._link = LinkFlow(self._ctx, run=self._run, login=login, device=self._device,
                              supervisor=self._supervisor, reactions=self._reactions)
        self._handlers = NeonizeEventHandlers(
            self._ctx, run=self._run, device=self._device, supervisor=self._supervisor,
            reactions=self._reactions, link=self._link, resolver=self._resolver)
        self._sender = NeonizeSender(self._ctx, supervisor=self._supervisor,
                                     retirer=self._retirer)
        self._routes: dict[GoCallback, Callable[[Any], Awaitable[None]]] = {
            GoCallback.QR: self._link.on_qr,
            GoCallback.LOGIN: self._link.on_login_status,
            GoCallback.EVENT: self._handlers.handle,
            GoCallback.MARKER: self._handlers.handle_marker,
        }
        """What handles a callback of the current client (MESSAGE and FINISHED: `_route`)."""

    # ------------------------------------------------------------------ properties
    @property
    def lid_resolver(self) -> LidResolver:
        return self._resolver

    @property
    def connected(self) -> bool:
        """The socket is open and authenticated (as far as the events said)."""
        return self._run.connected

    @property
    def halted(self) -> str | None:
        """Why the driver stopped reconnecting, or None while it runs or before start."""
        return self._supervisor.halted

    @property
    def store(self) -> NeonizeStore:
        return self._store

    # ------------------------------------------------------------------ Driver API
    async def start(self, sink: DriverSink) -> None:
        if self._closed:
            raise DriverError("closed", "the driver is closed and cannot be started again")
        self.attach(sink)
        await self._supervisor.start()

    def attach(self, sink: DriverSink) -> None:
        """Bind the sink and start handling events, without connecting (`start` does
        both). Lets tests feed neonize events to the handlers directly."""
        if self._closed:
            raise DriverError("closed", "the driver is closed")
        self._ctx.sink = sink
        self._inbox.open()

    async def stored_device(self) -> str | None:
        return await self._device.stored_device()

    async def request_pairing_code(self, phone: str) -> IssuedCode:
        return await self._link.request_pairing_code(phone)

    async def cancel_pairing_code(self) -> None:
        """whatsmeow keeps one pending code per login socket and has no call to drop it: the
        next `request_pairing_code` on that socket replaces it (`PairPhone` sends a new
        pairing reference, and the phone's answer to the old one is refused), and closing the
        socket ends it. Nothing is restarted here: each login socket closed early parks a
        neonize thread for good (`max_parked`)."""
        self._ctx.log.info("pairing code cancelled; the next code on this login socket "
                           "replaces it")

    async def send_text(self, to_jid: str, text: str) -> str:
        return await self._sender.send_text(to_jid, text)

    async def send_presence(self, to_jid: str, composing: bool) -> None:
        await self._sender.send_presence(to_jid, composing)

    async def disconnect(self) -> None:
        was_active = self._supervisor.attempt is not None
        started = self._supervisor.started
        self._supervisor.halted = "disconnect requested"
        await self._supervisor.stop()
        if was_active and started:
            await self._ctx.emit(Disconnected(reason="disconnected on request",
                                              will_reconnect=False))

    async def logout(self) -> None:
        jid = self._device.current or await self._device.stored_device()
        if jid is None and not self._run.connected:
            self._ctx.log.info("logout requested, but no device is linked")
            return
        await self._sender.logout()
        self._run.connected = False
        if jid is not None:
            await self._device.delete(jid)
        self._device.forget()
        self._ctx.log.info("logged out; credentials deleted")
        await self._ctx.emit(LoggedOut(reason="on_request", on_connect=False))
        self._supervisor.login_cycles = 0
        self._supervisor.request(Outcome("restart", "logged out",
                                         delay=LOGGED_OUT_RESTART_DELAY_S, fresh=True))

    async def close(self) -> None:
        if self._closed:
            return
        self._supervisor.halted = self._supervisor.halted or "closed"
        await self._supervisor.stop()
        self._closed = True
        await self._inbox.close()
        await self._retirer.terminate_retired()
        await self._store.close()

    # ------------------------------------------------------------------ handlers
    async def handle_neonize_event(self, event: Any) -> None:
        """Map one neonize event (a `neonize.proto.Neonize_pb2` message) to driver events."""
        await self._handlers.handle(event)

    async def handle_message(self, event: Any, *, offline: bool = False) -> bool:
        """A neonize `Message` (see `NeonizeEventHandlers.handle_message`)."""
        return await self._handlers.handle_message(event, offline=offline)

    async def handle_qr(self, code: str) -> None:
        """A (rotated) QR payload from the login socket."""
        await self._link.on_qr(code)

    async def handle_login_status(self, status: str) -> None:
        """An item of the login socket's QR channel other than a code."""
        await self._link.on_login_status(status)

    async def handle_marker(self, fact: LogFact) -> None:
        """An event announced by a whatsmeow log line (`neonize.logs`)."""
        await self._handlers.handle_marker(fact)

    # ------------------------------------------------------------------ wiring
    async def _device_gone(self, event: LoggedOut) -> None:
        await self._reactions.logged_out(event)

    def _note(self, item: Callback) -> None:
        if item.attempt is self._supervisor.attempt:
            self._link.track(item.kind, item.payload)

    async def _route(self, item: Callback) -> None:
        if item.kind is GoCallback.MESSAGE:
            # even from a retired client: WhatsApp has the receipt, the message is real
            await self._handlers.deliver(item.payload)
            return
        if item.kind is GoCallback.FINISHED:
            await self._supervisor.finished(item.attempt, str(item.payload))
            return
        if item.attempt is self._supervisor.attempt:
            await self._routes[item.kind](item.payload)
        # else: a retired attempt; its events no longer describe the session
