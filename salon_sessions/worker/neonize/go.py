"""The Go side of neonize (whatsmeow behind a C ABI), wrapped for the `neonize` driver.

The driver does not use `neonize.aioze.client.NewAClient.connect()`; it calls the same Go
entry point (`Neonize`) itself, because of how the 0.5.x Go core behaves (read from its
source and checked against the shipped `neonize-linux-amd64.so`):

- `Neonize()` blocks for the whole life of a client. `connect()` runs it through
  `asyncio.to_thread`, i.e. in a non-daemon executor thread that interpreter exit joins;
  a client that cannot be stopped then hangs the process. Here it runs in a daemon thread.
- For a device that is not linked yet, `Neonize()` loops over whatsmeow's QR channel and
  only then enters its event loop, whose first step (`FetchMe`) waits, ignoring `Stop`,
  until the store has a device id. A `Stop` while the QR loop runs deletes the client from
  the Go map that `FetchMe` then dereferences: a nil-pointer panic that kills the process.
  So an attempt's phase decides how it is stopped (`GoAttempt.request_stop`):
  `STARTING` has its dialling socket cut (below) and is otherwise stopped when it reaches
  the next phase, `LOGIN` (QR shown) gets `Disconnect` (the thread stays parked in
  `FetchMe`; it is a daemon), `RUNNING` gets `Stop`, `FINISHED` nothing.
- whatsmeow dials under its socket lock with neonize's `context.Background()`: a SOCKS5
  proxy that never answers its handshake (or a websocket upgrade that never gets a
  response) blocks `Neonize()` for good, and `Stop`/`Disconnect` wait for that lock. The
  only way out is to cut the socket from our side (`tcp_sockets.shutdown`): the dial
  fails and `Neonize()` returns. An attempt still `STARTING` after `CONNECT_TIMEOUT_S` is
  cut so (reported as a failed connection, then retried with backoff), and so is one
  whose stop is requested while `STARTING`, or whose `Stop`/`Disconnect` is still blocked
  after `UNSTICK_AFTER_S`.
- Events whose protobuf is empty (`StreamReplaced`, `ClientOutdated`,
  `KeepAliveRestored`) make the Go event loop index an empty buffer and panic, so they are
  not subscribed; whatsmeow's own log lines announce them instead (`neonize.logs`).
- Every `Neonize()` call opens a new `database/sql` pool that is never closed. Each attempt
  therefore connects with its own `application_name`, and the driver terminates those
  backends once the attempt is over (`NeonizeStore.terminate_backends`).
- Passing a JID that is not in the store makes `whatsmeow.NewClient(nil)` panic: the
  driver resumes only a device it has just found in `whatsmeow_device`.
- neonize's Go maps are not synchronised: the calls that read or write them
  (`Stop`, `Disconnect`, `SendMessage`, `SendChatPresence`, `PairPhone`, `Logout`) are
  serialised here.
- Inbound messages (the "receipt after the write" rule, `driver.DriverSink`): whatsmeow
  sends a message's delivery receipt once its event handlers have returned, but neonize's
  handler only puts the event into a channel of 100 that one goroutine (the `Neonize()`
  thread) drains into the event callback. So the receipt never waits for Python. What the
  callback can do is hold that goroutine: `_on_event` waits (bounded, `message_wait_s`)
  until the driver has stored the message, so that at most the channel's 100 events are
  acknowledged to WhatsApp and not yet stored; when the channel is full, whatsmeow's
  handler blocks and the next messages are not acknowledged. A stop releases the wait.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import enum
import logging
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from salon_sessions.core.phone import InvalidJid, JidKind, parse_jid
from salon_sessions.db.whatsmeow_store import go_store_dsn
from salon_sessions.worker.neonize import core as neonize_core
from salon_sessions.worker.neonize import tcp_sockets
from salon_sessions.worker.neonize.logs import parse_log_line

T = TypeVar("T")

# Event codes of the Go core (`neonize.events.EVENT_TO_INT`).
EV_DEVICE: Final = 0
EV_QR: Final = 1
EV_PAIR_STATUS: Final = 2
EV_CONNECTED: Final = 3
EV_KEEPALIVE_TIMEOUT: Final = 4
EV_KEEPALIVE_RESTORED: Final = 5
EV_LOGGED_OUT: Final = 6
EV_STREAM_REPLACED: Final = 7
EV_TEMPORARY_BAN: Final = 8
EV_CONNECT_FAILURE: Final = 9
EV_CLIENT_OUTDATED: Final = 10
EV_STREAM_ERROR: Final = 11
EV_DISCONNECTED: Final = 12
EV_MESSAGE: Final = 17
EV_OFFLINE_SYNC_PREVIEW: Final = 26
EV_OFFLINE_SYNC_COMPLETED: Final = 27

SUBSCRIBED: Final = (EV_PAIR_STATUS, EV_CONNECTED, EV_KEEPALIVE_TIMEOUT, EV_LOGGED_OUT,
                     EV_TEMPORARY_BAN, EV_CONNECT_FAILURE, EV_STREAM_ERROR, EV_DISCONNECTED,
                     EV_MESSAGE, EV_OFFLINE_SYNC_PREVIEW, EV_OFFLINE_SYNC_COMPLETED)
"""Never the empty-protobuf events 5, 7 and 10 (see the module docstring)."""

CHAT_PRESENCE_COMPOSING: Final = 0
CHAT_PRESENCE_PAUSED: Final = 1
CHAT_PRESENCE_MEDIA_TEXT: Final = 0
"""`SendChatPresence`'s state and media: indexes into neonize's Go slices
`utils.ChatPresence` (composing, paused) and `utils.ChatPresenceMedia` (text, audio)."""

MESSAGE_WAIT_S: Final = 120.0
"""How long the Go thread waits for an inbound message to be stored (see the module
docstring); below whatsmeow's 5 minutes after which a stuck node handler is left running in
the background and message order is lost."""

GO_LOG_LEVEL: Final = b"INFO"
"""whatsmeow's DEBUG lines carry raw XML (message contents, QR refs): never asked for."""

DEVICE_OS: Final = "Salon Sessions"
"""The name the phone shows in its list of linked devices."""

# --------------------------------------------------------------------------- loading

@dataclass(frozen=True, slots=True)
class NeonizeModules:
    """neonize's Go core and protobuf modules, loaded once (`load_neonize`, which uses
    `neonize.core`: not `import neonize`, whose Python client the driver does not use)."""

    gocode: Any
    """The Go core (`ctypes.CDLL`) with the driver's functions declared
    (`neonize.core`): each returns `bytes` or None."""
    proto: Any
    """`neonize.proto.Neonize_pb2`: the event and JID messages."""
    e2e: Any
    """`waE2E.WAWebProtobufsE2E_pb2`: `Message`, `ExtendedTextMessage`."""
    device_props: Any
    int_to_event: dict[int, Any]
    """Event code -> protobuf class (`neonize_core.EVENT_MESSAGES`)."""
    version: str
    """The Go core's own version (`GetVersion`)."""


_LOAD_LOCK = threading.Lock()
_MODULES: NeonizeModules | None = None


def load_neonize() -> NeonizeModules:
    """Load the Go core and the protobuf modules the driver uses (once per process)."""
    global _MODULES
    with _LOAD_LOCK:
        if _MODULES is not None:
            return _MODULES
        core = neonize_core.load_core()
        _MODULES = NeonizeModules(
            gocode=core.lib, proto=core.proto.neonize, e2e=core.proto.e2e,
            device_props=core.proto.companion.DeviceProps, int_to_event=core.events,
            version=core.version)
        return _MODULES


def jid_proto(jid: str) -> Any:
    """A neonize `JID` protobuf from a JID string (device and agent kept)."""
    parsed = parse_jid(jid)
    if parsed.kind is JidKind.SERVER:
        raise InvalidJid(jid, "a server JID has no user")
    return load_neonize().proto.JID(User=parsed.user, Server=parsed.server,
                                    Device=parsed.device, RawAgent=parsed.agent,
                                    Integrator=0, IsEmpty=False)


# --------------------------------------------------------------------------- Go calls

_GO_MAP_LOCK = threading.Lock()
"""Serialises the Go calls that touch neonize's unsynchronised client maps."""


def run_in_daemon(name: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run a blocking (Go) call in a daemon thread: a call that never returns cannot block
    interpreter exit the way an `asyncio.to_thread` executor thread would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result: Any = fn(*args)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name=f"neonize-{name}", daemon=True).start()
    return future


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return "" if raw is None else str(raw)


def go_stop(uuid: str) -> None:
    """`Stop`: disconnect, cancel the event loop, drop the client (safe only in
    `RUNNING` or `FINISHED`, see the module docstring)."""
    with _GO_MAP_LOCK:
        load_neonize().gocode.Stop(uuid.encode())


def go_disconnect(uuid: str) -> None:
    """`Disconnect`: close the socket, keep everything else (nil-safe in whatsmeow)."""
    with _GO_MAP_LOCK:
        load_neonize().gocode.Disconnect(uuid.encode())


def go_pair_phone(uuid: str, phone: str, display_name: str, client_type: int) -> tuple[str, str]:
    """`PairPhone` on a login socket: (code, error)."""
    nz = load_neonize()
    payload = nz.proto.PairPhoneParams(phone=phone, showPushNotification=True,
                                       clientType=client_type,
                                       clientDisplayName=display_name).SerializeToString()
    with _GO_MAP_LOCK:
        raw = nz.gocode.PairPhone(uuid.encode(), payload, len(payload))
    result = nz.proto.PairPhoneReturnFunction.FromString(raw)
    return str(result.Code), str(result.Error)


def go_send_text(uuid: str, to: Any, text: str) -> tuple[str, str]:
    """`SendMessage` of a plain text (`conversation`) message: (message id, error)."""
    nz = load_neonize()
    to_bytes = to.SerializeToString()
    message = nz.e2e.Message(conversation=text).SerializeToString()
    with _GO_MAP_LOCK:
        raw = nz.gocode.SendMessage(uuid.encode(), to_bytes, len(to_bytes), message,
                                    len(message))
    result = nz.proto.SendMessageReturnFunction.FromString(raw)
    return str(result.SendResponse.ID), str(result.Error)


def go_send_chat_presence(uuid: str, to: Any, composing: bool) -> str:
    """`SendChatPresence`: "typing..." (or its end) in the chat with `to`; the error."""
    nz = load_neonize()
    to_bytes = to.SerializeToString()
    state = CHAT_PRESENCE_COMPOSING if composing else CHAT_PRESENCE_PAUSED
    with _GO_MAP_LOCK:
        return _text(nz.gocode.SendChatPresence(uuid.encode(), to_bytes, len(to_bytes), state,
                                                CHAT_PRESENCE_MEDIA_TEXT))


def go_logout(uuid: str) -> str:
    """`Logout`: unlink on WhatsApp's side, disconnect, delete the device; the error."""
    with _GO_MAP_LOCK:
        return _text(load_neonize().gocode.Logout(uuid.encode()))


# --------------------------------------------------------------------------- attempts

CONNECT_TIMEOUT_S: float = 75.0
"""An attempt still `STARTING` after this long has its dial cut and is reported as a failed
connection. Above whatsmeow's own bounds (TCP connect 30 s, HTTP proxy `CONNECT` 60 s, TLS
10 s), so that it only ends the dials that have none (a SOCKS5 handshake, a websocket
upgrade that gets no answer)."""
UNSTICK_AFTER_S: float = 2.0
"""A `Stop`/`Disconnect` still blocked after this long is waiting for whatsmeow's socket
lock behind a dial (a reconnect through a stalled proxy): the dial is cut."""
DEFAULT_PROXY_PORTS: Final = {"socks5": 1080, "http": 80, "https": 443}
WHATSAPP_PORT: Final = 443
"""`wss://web.whatsapp.com/ws/chat`, dialled directly when there is no proxy."""


class AttemptPhase(enum.IntEnum):
    """How far one `GoAttempt` (one `Neonize()` run) got: it decides how the attempt can be
    stopped (`GoAttempt.request_stop`). Not the session's phase (`core.resource.Phase`)."""

    STARTING = 0
    """Opening the store and dialling; only the dial can be cut (`cut_dial`)."""
    LOGIN = 1
    """A login socket shows QR codes (device not linked)."""
    RUNNING = 2
    """The Go event loop runs (`Device` event seen); `Stop` ends it."""
    FINISHED = 3
    """`Neonize()` returned."""


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """An inbound `Message` event whose Go thread waits until the driver has stored it."""

    event: Any
    """neonize's `Message` protobuf."""
    offline: bool
    """It arrived between whatsmeow's `OfflineSyncPreview` and `OfflineSyncCompleted`:
    WhatsApp delivered it from the queue it kept while the client was away."""
    stored: concurrent.futures.Future[bool]
    """Set by the driver: True once stored (or not a message the bridge takes), False
    when the sink could not store it. Whoever cannot deliver it sets False."""

    def settle(self, stored: bool) -> None:
        """Release the waiting Go thread (idempotent, any thread)."""
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.stored.set_result(stored)


class GoCallback(enum.StrEnum):
    """What a Go callback hands the driver (the kind of an `AttemptPost` payload)."""

    QR = "qr"
    """A (rotated) QR payload of the login socket (str)."""
    LOGIN = "login"
    """Another item of the login socket's QR channel: its end or a passkey step (str)."""
    EVENT = "event"
    """A neonize event other than a message (a `Neonize_pb2` protobuf)."""
    MESSAGE = "message"
    """An inbound message (`PendingMessage`: the receiver must settle it)."""
    MARKER = "marker"
    """A fact announced by a whatsmeow log line (`neonize_logs.LogFact`)."""
    FINISHED = "finished"
    """`Neonize()` returned, or the attempt gave up dialling (why, str)."""


AttemptPost = Callable[["GoAttempt", GoCallback, Any], None]
"""Receives `(attempt, kind, payload)` from Go threads; must be thread-safe."""


@dataclass(frozen=True, slots=True)
class GoOps:
    """The Go calls an attempt makes to stop itself (replaceable in tests)."""

    stop: Callable[[str], None] = go_stop
    disconnect: Callable[[str], None] = go_disconnect


class GoAttempt:
    """One `Neonize()` run: one whatsmeow client, in its own daemon thread."""

    def __init__(self, *, company_id: str, database_url: str, jid: str | None,
                 proxy_url: str | None, post: AttemptPost, log: logging.LoggerAdapter[Any],
                 scrub: Callable[[str], str], ops: GoOps | None = None,
                 message_wait_s: float = MESSAGE_WAIT_S) -> None:
        token = secrets.token_hex(4)
        self.uuid = f"{company_id}-{token}"
        self.application_name = f"salon-neonize:{company_id}:{token}"
        """The PostgreSQL `application_name` of this attempt's store connections."""
        self.jid = jid
        """The stored device this attempt resumes, or None for a new device."""
        self._store_dsn = go_store_dsn(database_url, self.application_name)
        self._proxy_url = proxy_url
        self._post = post
        self._log = log
        self._scrub = scrub
        self._ops = ops or GoOps()
        self._lock = threading.Lock()
        self._phase = AttemptPhase.STARTING
        self._stop_requested = False
        self._stop_sent = False
        self._disconnect_sent = False
        self._cut_sent = False
        self._timed_out = False
        self._finish_reported = False
        self._sockets_before: frozenset[int] | None = None
        """The process's sockets when this attempt started: any other is newer."""
        self._dial_host, self._dial_port = _dial_target(proxy_url)
        self._dial_ips: frozenset[str] = frozenset()
        self._watchdog: threading.Timer | None = None
        self._thread: threading.Thread | None = None
        self._refs: tuple[Any, ...] = ()
        self._message_wait_s = message_wait_s
        self._released: concurrent.futures.Future[None] = concurrent.futures.Future()
        """Done once a stop is requested: message waits end (`_wait_stored`)."""
        self._offline_sync = False
        """Between `OfflineSyncPreview` and `OfflineSyncCompleted` (Go thread only)."""
        self.settled = threading.Event()
        """Set once a requested stop has done all it can (see `request_stop`)."""
        self.finished = threading.Event()
        """Set when `Neonize()` has returned."""

    @property
    def phase(self) -> AttemptPhase:
        return self._phase

    # ---- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        load_neonize()
        # Go must never call a freed ctypes thunk. The QR, login and event callbacks are
        # only called from inside `Neonize()`; the log callback belongs to the client's
        # loggers and may fire a little after it returns. So the thunks live on the
        # attempt, then in `_RECENT_CALLBACKS` (bounded); parked attempts stay in
        # `_PARKED` for good.
        self._refs = (neonize_core.StringCallback(self._on_qr),
                      neonize_core.StringCallback(self._on_login),
                      neonize_core.EventCallback(self._on_event),
                      neonize_core.LogCallback(self._on_log))
        global _NEWEST
        _NEWEST = self
        self._sockets_before = tcp_sockets.socket_inodes()
        self._thread = threading.Thread(target=self._run, name=f"neonize-{self.uuid}",
                                        daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(CONNECT_TIMEOUT_S, self._on_connect_timeout)
        self._watchdog.name = f"neonize-watchdog-{self.uuid}"
        self._watchdog.daemon = True
        self._watchdog.start()

    def _run(self) -> None:
        nz = load_neonize()
        error = ""
        try:
            self._dial_ips = _addresses(self._dial_host)
            jid = b""
            if self.jid is not None:
                jid = jid_proto(self.jid).SerializeToString()
            props = nz.device_props(os=DEVICE_OS,
                                    platformType=nz.device_props.CHROME).SerializeToString()
            subscribed = bytes(SUBSCRIBED)
            proxy_struct = None
            proxy_ref = None
            if self._proxy_url:
                proxy_struct = neonize_core.proxy_settings(self._proxy_url)
                proxy_ref = ctypes.byref(proxy_struct)
            qr_cb, login_cb, event_cb, log_cb = self._refs
            raw = nz.gocode.Neonize(
                self._store_dsn.encode(), self.uuid.encode(), jid, len(jid),
                0 if self.jid is not None else 1, GO_LOG_LEVEL, qr_cb, login_cb, event_cb,
                log_cb, subscribed, len(subscribed), props, len(props), b"", 0, proxy_ref)
            error = _text(raw)
            del proxy_struct
        except Exception as exc:  # a ctypes/protobuf failure on our side
            error = f"neonize call failed: {type(exc).__name__}"
            self._log.exception("neonize call failed")
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            try:
                # Neonize() has returned, so Stop only frees this client's map entries.
                self._ops.stop(self.uuid)
            except Exception:
                self._log.exception("neonize Stop after return failed")
            _RECENT_CALLBACKS.append(self._refs)
            self._set_phase(AttemptPhase.FINISHED)
            self.finished.set()
            self._report_finished(self._timeout_reason() if self._timed_out
                                  else self._scrub(error))

    def request_stop(self) -> None:
        """Stop this client in the way its phase allows; idempotent.

        `RUNNING`: `Stop` (the thread returns). `LOGIN`: `Disconnect` (the socket closes;
        the thread stays parked in neonize's `FetchMe`, harmlessly, as a daemon).
        `STARTING`: the dial is cut (a dial that fails makes `Neonize()` return); if the
        attempt was not dialling yet, the action runs when the next phase is reached."""
        with self._lock:
            self._stop_requested = True
            action = self._pending_locked()
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._released.set_result(None)
        self._act(action)

    def _set_phase(self, phase: AttemptPhase) -> None:
        with self._lock:
            if phase <= self._phase:
                return
            self._phase = phase
            action = self._pending_locked()
        self._act(action)

    def _pending_locked(self) -> Callable[[str], None] | None:
        if not self._stop_requested:
            return None
        if self._phase is AttemptPhase.FINISHED:
            self.settled.set()
            return None
        if self._phase is AttemptPhase.RUNNING and not self._stop_sent:
            self._stop_sent = True
            return self._ops.stop
        if self._phase is AttemptPhase.LOGIN and not self._disconnect_sent:
            self._disconnect_sent = True
            return self._disconnect_and_park
        if self._phase is AttemptPhase.STARTING and not self._cut_sent:
            self._cut_sent = True
            return self._cut_dial_action
        return None

    def _cut_dial_action(self, _uuid: str) -> None:
        cut = self.cut_dial()
        self._log.debug("stopping a client that is still connecting: %d socket(s) cut", cut)

    def cut_dial(self) -> int:
        """Shut down the sockets this attempt may be dialling on (see the module
        docstring): the process's TCP sockets to the dial target (the proxy, else
        WhatsApp's port) that are newer than this attempt. Only while it is the newest
        attempt of the process, so that a later client's connection is never touched.
        Returns how many were cut."""
        before = self._sockets_before
        if before is None or _NEWEST is not self:
            return 0
        cut = 0
        for sock in tcp_sockets.tcp_sockets():
            if sock.inode in before or sock.peer_port != self._dial_port:
                continue
            if self._dial_ips and sock.peer_ip not in self._dial_ips:
                continue
            cut += tcp_sockets.shutdown(sock)
        return cut

    def _on_connect_timeout(self) -> None:
        """`CONNECT_TIMEOUT_S` after the start: a client still `STARTING` is stuck in a
        dial without a deadline; cut it, and report the attempt as finished (a failed
        connection) even if Go does not return."""
        with self._lock:
            if self._phase is not AttemptPhase.STARTING or self._stop_requested:
                return
            self._timed_out = True
        cut = self.cut_dial()
        self._log.warning("no connection to WhatsApp within %.0f s; giving up this attempt "
                          "(%d socket(s) cut)", CONNECT_TIMEOUT_S, cut)
        if not self.finished.wait(UNSTICK_AFTER_S):
            self._report_finished(self._timeout_reason())

    def _timeout_reason(self) -> str:
        via = "the proxy" if self._dial_host is not None else "WhatsApp"
        return f"no answer from {via} within {CONNECT_TIMEOUT_S:.0f} s"

    def _report_finished(self, reason: str) -> None:
        with self._lock:
            if self._finish_reported:
                return
            self._finish_reported = True
        self._emit(GoCallback.FINISHED, reason)

    def _disconnect_and_park(self, uuid: str) -> None:
        self._ops.disconnect(uuid)
        with self._lock:
            if self._phase is AttemptPhase.LOGIN:
                _PARKED.add(self)
                self.settled.set()

    def _act(self, action: Callable[[str], None] | None) -> None:
        if action is None:
            return

        done = threading.Event()

        def run() -> None:
            try:
                action(self.uuid)
            except Exception:
                self._log.exception("stopping a neonize client failed")
            finally:
                done.set()

        def unstick() -> None:
            if not done.wait(UNSTICK_AFTER_S):
                cut = self.cut_dial()
                self._log.warning("stopping the WhatsApp client is blocked behind a "
                                  "connection attempt; %d socket(s) cut", cut)

        # Never from the calling (possibly Go) thread: Stop/Disconnect take Go locks.
        threading.Thread(target=run, name=f"neonize-stop-{self.uuid}", daemon=True).start()
        if action != self._cut_dial_action:
            threading.Thread(target=unstick, name=f"neonize-unstick-{self.uuid}",
                             daemon=True).start()

    # ---- callbacks from Go threads ------------------------------------------------
    def _emit(self, kind: GoCallback, payload: Any) -> bool:
        try:
            self._post(self, kind, payload)
        except Exception:
            self._log.exception("could not deliver a neonize %s callback", kind)
            return False
        return True

    def _on_qr(self, _uuid: int | None, data: int | None) -> None:
        try:
            if not data:
                return
            code = ctypes.string_at(data).decode("utf-8", "replace")
            self._set_phase(AttemptPhase.LOGIN)
            if not self._stop_requested:
                self._emit(GoCallback.QR, code)
        except Exception:
            self._log.exception("bad QR callback from neonize")

    def _on_login(self, _uuid: int | None, data: int | None) -> None:
        try:
            status = ctypes.string_at(data).decode("utf-8", "replace") if data else ""
            self._emit(GoCallback.LOGIN, status)
        except Exception:
            self._log.exception("bad login callback from neonize")

    def _on_event(self, _uuid: bytes | None, data: int | None, size: int, code: int) -> None:
        try:
            nz = load_neonize()
            cls = nz.int_to_event.get(int(code))
            if cls is None:
                return
            message = cls.FromString(ctypes.string_at(data, size) if data and size > 0 else b"")
            if code == EV_DEVICE:
                self._set_phase(AttemptPhase.RUNNING)
            elif code == EV_OFFLINE_SYNC_PREVIEW:
                self._offline_sync = True
            elif code in (EV_OFFLINE_SYNC_COMPLETED, EV_DISCONNECTED):
                self._offline_sync = False
            if code == EV_MESSAGE:
                self._wait_stored(PendingMessage(message, self._offline_sync,
                                                 concurrent.futures.Future()))
            else:
                self._emit(GoCallback.EVENT, message)
        except Exception:
            self._log.exception("bad event callback from neonize (code %s)", code)

    def _wait_stored(self, pending: PendingMessage) -> None:
        """On the Go thread: hand the message over, then hold this thread (and so
        neonize's event channel, see the module docstring) until it is stored, for at most
        `message_wait_s`, or until a stop is requested. Never waits on the event loop
        itself: the loop settles `pending` from its own task."""
        if not self._emit(GoCallback.MESSAGE, pending) or self._stop_requested:
            return
        waits: list[concurrent.futures.Future[Any]] = [pending.stored, self._released]
        done, _ = concurrent.futures.wait(waits,
                                          timeout=self._message_wait_s,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        if not done:
            self._log.warning("an inbound message was not stored within %.0f s; taking the "
                              "next events (WhatsApp has its receipt already)",
                              self._message_wait_s)

    def _on_log(self, data: int | None, size: int) -> None:
        try:
            if not data or size <= 0:
                return
            entry = load_neonize().proto.LogEntry.FromString(ctypes.string_at(data, size))
            message = self._scrub(str(entry.Message))
            level = {"ERROR": logging.ERROR, "WARN": logging.WARNING,
                     "WARNING": logging.WARNING}.get(str(entry.Level).upper(), logging.DEBUG)
            self._log.log(level, "whatsmeow %s: %s", entry.Name, message)
            fact = parse_log_line(message)
            if fact is not None:
                self._emit(GoCallback.MARKER, fact)
        except Exception:
            self._log.exception("bad log callback from neonize")


_RECENT_CALLBACKS: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=256)
"""The ctypes callbacks of the last finished attempts (see `GoAttempt.start`)."""

_NEWEST: GoAttempt | None = None
"""The attempt started last in this process: the only one allowed to cut sockets."""

_PARKED: set[GoAttempt] = set()
"""Login attempts whose thread stays in neonize's QR loop (a `Disconnect` never closes
whatsmeow's QR channel): their callbacks must stay alive (Go may still emit to them) for as
long as the process runs."""


def parked_count() -> int:
    """Abandoned login clients parked in this process so far (never freed)."""
    return len(_PARKED)



def _dial_target(proxy_url: str | None) -> tuple[str | None, int]:
    """(proxy host, port) the Go client dials first; (None, 443) without a proxy."""
    if not proxy_url:
        return None, WHATSAPP_PORT
    parts = urlsplit(proxy_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port or DEFAULT_PROXY_PORTS.get(parts.scheme.lower(), 1080)


def _addresses(host: str | None) -> frozenset[str]:
    """The addresses a host name resolves to (empty: unknown, match on the port only)."""
    if not host:
        return frozenset()
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)
