"""The `simulator` driver: a local stand-in for WhatsApp's servers.

These machines cannot reach WhatsApp, so the demo and the tests link sessions against this
driver. It goes through WhatsApp's states with realistic timing and is played from outside,
like a phone, through actions on the Redis channel `whatsapp:simulator:<company_id>`
(parsed and checked by `worker.simulator.actions`; a bad one is logged and changes nothing):

    {"action": "scan", "qr": "<payload on screen>", "phone": "79686484488"}
    {"action": "enter_code", "code": "ABCD1234"}
    {"action": "disconnect"}            network loss; reconnects after `reconnect_s`
    {"action": "logout", "code": 403}   the device is removed; `code` is WhatsApp's, optional:
                                        401 logged_out (default), 403 locked, 406 banned
    {"action": "passkey", "stage": "request"}
    {"action": "passkey", "stage": "confirmation", "code": "ABCD-EF12"}
                                        WhatsApp asks the device being linked for the
                                        account's passkey; the QR login stays open (the QR
                                        keeps rotating and a later scan still links, where
                                        real WhatsApp's QR codes are dead by then: see
                                        docs/NEONIZE.md); `code` (optional) is the one the
                                        phone shows
    {"action": "stream_replaced"}       another client took the open stream over: the first
                                        time in `replaced_window_s` the driver reconnects
                                        after `replaced_retry_s`, a second one within the
                                        window halts (the neonize driver's rule)
    {"action": "temporary_ban", "code": 101, "expire_s": 3600}
                                        code 101..106 (or any, kept as `code_<n>`); the socket
                                        reconnects when the ban ends; `"expire_s": null`:
                                        WhatsApp did not say, no reconnect
    {"action": "connect_failure", "code": 503}
                                        WhatsApp refuses the connection, handled as the
                                        neonize driver does: 401/403/406 log the device out,
                                        500, 503 and the other retryable codes reconnect
                                        after `reconnect_s`, 405/409/418 (this client must
                                        change) halt, the rest (unknown codes) reconnect
                                        slowly (`unexplained_retry_s`); 402 is a ban (use
                                        `temporary_ban`)
    {"action": "inbound", "from": "<jid>", "text": "...", "id": "<message id>"}
                                        a contact's message: it joins the server's queue
                                        (`whatsapp:simulator:inbox:<company>`) and is
                                        delivered in order while connected, removed only
                                        once the worker stored it (WhatsApp's receipt); one
                                        sent while offline arrives on reconnect
    {"action": "deliver"}               deliver what waits in the queue (a test may push
                                        records there itself, as the server would)
    {"action": "map_lid", "lid": "<lid user>", "phone": "79686484488"}
    {"action": "send_limit", "code": 429, "expire_s": 60, "count": 1}
                                        WhatsApp refuses the next sends: 429 rate limit,
                                        463 reach-out restriction (`expire_s` optional)
    {"action": "hold_sends", "seconds": 20}
                                        the next send is delivered but confirmed only after
                                        that long

Like whatsmeow, it keeps its device in its own tables (`db.simulator_store`: created by the
migrations, as a session's database role runs no DDL), so a linked session resumes after a
restart without a new link.
QR codes rotate every `qr_period_s` (first one valid `first_qr_s`); after `qr_rounds` codes
without a scan the "server" closes the socket and the driver reconnects for new codes, as
whatsmeow does. A pairing code stays valid for `code_ttl_s` whatever the QR codes do.

The driver is refused unless the session's driver is `simulator` (see `make_driver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from salon_sessions.core.channels import (
    simulator_channel,
    simulator_inbox_key,
    simulator_sent_key,
)
from salon_sessions.core.metrics import SubscriberMetrics
from salon_sessions.core.phone import LidResolver, device_jid
from salon_sessions.core.redis_client import REDIS_ERRORS
from salon_sessions.core.subscriber import ResilientSubscriber
from salon_sessions.core.whatsapp_reasons import (
    LOGOUT_CODES,
    NON_RETRYABLE,
    RETRYABLE,
    TEMP_BAN_CODE,
    LogoutReason,
    failure_name,
    logout_reason,
    temp_ban_name,
)
from salon_sessions.db.simulator_store import SimulatorStore
from salon_sessions.worker.driver import (
    Connected,
    ConnectFailure,
    Disconnected,
    Driver,
    DriverError,
    DriverFact,
    DriverSink,
    InboundMessage,
    IssuedCode,
    LoggedOut,
    MessageNotStored,
    PairSuccess,
    PasskeyRequired,
    QrCode,
    StreamReplaced,
    TemporaryBan,
)
from salon_sessions.worker.simulator.actions import (
    SEND_LIMIT_CODES,
    BadAction,
    Deliver,
    Disconnect,
    EnterCode,
    HoldSends,
    Inbound,
    Logout,
    MapLid,
    Passkey,
    PhoneAction,
    RefuseConnect,
    ReplaceStream,
    Scan,
    SendLimit,
    TempBan,
    parse_action,
)

log = logging.getLogger(__name__)
CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # WhatsApp's: no 0, O, I, U


@dataclass(frozen=True, slots=True)
class SimulatorTiming:
    first_qr_s: float = 60.0
    qr_period_s: float = 20.0
    qr_rounds: int = 6
    code_ttl_s: float = 180.0
    connect_s: float = 0.3
    reconnect_s: float = 1.0
    unexplained_retry_s: float = 300.0
    """The pause before reconnecting after a refusal nobody explained (the neonize driver's
    slow backoff starts there too): never a fast loop into a refusal."""
    replaced_retry_s: float = 1.0
    """The pause before the one reconnect after a replaced stream (the neonize driver's is
    30 s, a setting; short here so that the tests stay fast)."""
    replaced_window_s: float = 600.0
    """A second replacement this soon after the last one halts (the neonize driver's)."""


class SimulatorDriver(Driver):
    name = "simulator"

    def __init__(self, pool: asyncpg.Pool, redis: Redis, company_id: str,
                 timing: SimulatorTiming | None = None,
                 metrics: SubscriberMetrics | None = None, *, close_redis: bool = False
                 ) -> None:
        """`redis`: the simulated server's own client (it stands in for WhatsApp's network,
        so it does not share the worker's connections); closed by `close` if
        `close_redis`."""
        self._store = SimulatorStore(pool, company_id)
        self._redis = redis
        self._close_redis = close_redis
        self._company = company_id
        self._timing = timing or SimulatorTiming()
        self._metrics = metrics or SubscriberMetrics()
        self._sink: DriverSink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: asyncio.Task[None] | None = None
        self._qr: str | None = None
        self._code: tuple[str, str, datetime] | None = None  # code, phone, expiry
        self._connected = False
        self._closed = False
        self._replaced_at: float | None = None  # monotonic time of the last replacement
        self._inbox = simulator_inbox_key(company_id)
        self._inbox_ready = asyncio.Event()
        self._send_limits: list[SendLimit] = []
        self._hold_s = 0.0
        self._typing: dict[str, float] = {}  # chat -> monotonic start of "typing..."

    # ---- Driver -------------------------------------------------------------------
    async def start(self, sink: DriverSink) -> None:
        self._sink = sink
        self._tasks.append(asyncio.create_task(self._phone_actions(), name="sim-phone"))
        self._tasks.append(asyncio.create_task(self._deliveries(), name="sim-deliveries"))
        self._connect_soon(self._timing.connect_s)

    async def stored_device(self) -> str | None:
        return await self._store.device()

    async def request_pairing_code(self, phone: str) -> IssuedCode:
        if await self.stored_device() is not None:
            raise DriverError("already_linked", "the device is already linked")
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        expires = datetime.now(UTC) + timedelta(seconds=self._timing.code_ttl_s)
        self._code = (code, phone, expires)
        return IssuedCode(code=code, expires_at=expires)

    async def cancel_pairing_code(self) -> None:
        self._code = None  # typing it on the phone is refused from now on

    async def send_text(self, to_jid: str, text: str) -> str:
        if not self._connected:
            raise DriverError("not_connected", "the session is not connected")
        if self._send_limits:
            limit = self._send_limits[0]
            if limit.count <= 1:
                self._send_limits.pop(0)
            else:
                self._send_limits[0] = SendLimit(limit.code, limit.expire_s, limit.count - 1)
            raise DriverError(SEND_LIMIT_CODES[limit.code],
                              f"simulated refusal {limit.code}", retry_after_s=limit.expire_s)
        message_id = "3EB0" + secrets.token_hex(8).upper()
        typing = self._typing.pop(to_jid, None)
        record = {"id": message_id, "to": to_jid, "text": text,
                  "ts": datetime.now(UTC).isoformat(),
                  "typing_s": None if typing is None else round(time.monotonic() - typing, 3)}
        await self._redis.rpush(simulator_sent_key(self._company), json.dumps(record))
        hold, self._hold_s = self._hold_s, 0.0
        if hold:
            await asyncio.sleep(hold)  # delivered; the confirmation is late
        return message_id

    async def send_presence(self, to_jid: str, composing: bool) -> None:
        if composing and self._connected:
            self._typing[to_jid] = time.monotonic()
        else:
            self._typing.pop(to_jid, None)

    async def disconnect(self) -> None:
        await self._stop_session()
        if self._connected:
            self._connected = False
            await self._emit(Disconnected("disconnected by the worker", will_reconnect=False))

    async def logout(self) -> None:
        await self._store.forget_device()
        await self._stop_session()
        self._connected = False
        await self._emit(LoggedOut(LogoutReason.ON_REQUEST))
        self._connect_soon(self._timing.connect_s)

    async def close(self) -> None:
        self._closed = True
        await self._stop_session()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._connected = False
        if self._close_redis:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    @property
    def lid_resolver(self) -> LidResolver:
        return self._store

    # ---- the simulated server -------------------------------------------------------
    def _connect_soon(self, delay: float) -> None:
        if self._closed:
            return
        if self._session is not None and not self._session.done():
            self._session.cancel()
        self._session = asyncio.create_task(self._serve(delay), name="sim-session")

    async def _stop_session(self) -> None:
        task, self._session = self._session, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, delay: float) -> None:
        """One "socket": connect a linked device, or show QR codes to a new one."""
        await asyncio.sleep(delay)
        t = self._timing
        while True:
            jid = await self.stored_device()
            if jid is not None:
                self._connected = True
                await self._emit(Connected(jid=jid))
                self._inbox_ready.set()  # what waited while offline comes now
                return
            for round_ in range(t.qr_rounds):
                period = t.first_qr_s if round_ == 0 else t.qr_period_s
                self._qr = _qr_payload()
                await self._emit(QrCode(self._qr, max(1, round(period))))
                await asyncio.sleep(period)
            self._qr = None
            await self._emit(Disconnected("QR codes exhausted (timeout)", will_reconnect=True))
            await asyncio.sleep(t.reconnect_s)

    async def _link(self, phone: str) -> None:
        device = secrets.randbelow(90) + 10
        jid = device_jid(phone, device)
        await self._store.save_device(jid, phone, "Salon")
        self._qr, self._code = None, None
        await self._stop_session()
        await self._emit(PairSuccess(jid=jid, phone=phone, push_name="Salon"))
        # whatsmeow reconnects after pairing; the socket opens a moment later
        self._connect_soon(self._timing.connect_s)

    async def _emit(self, event: DriverFact) -> None:
        if self._sink is not None:
            await self._sink(event)

    # ---- the simulated phone ----------------------------------------------------------
    async def _phone_actions(self) -> None:
        sub = ResilientSubscriber(self._redis, [simulator_channel(self._company)],
                                  name=f"simulator-{self._company}", metrics=self._metrics)
        async for message in sub.messages():
            try:
                await self._act(message.data)
            except Exception:
                log.exception("simulator action failed", extra={"company_id": self._company})

    async def _act(self, raw: bytes) -> None:
        try:
            action = parse_action(raw)
        except BadAction as exc:
            log.warning("simulator action refused: %s", exc.why,
                        extra={"company_id": self._company})
            return
        try:
            await self._perform(action)
        except BadAction as exc:
            log.warning("simulator action refused: %s", exc.why,
                        extra={"company_id": self._company})

    async def _perform(self, action: PhoneAction) -> None:
        """What the phone's action does to the simulated server (`BadAction` when it cannot
        apply in the current state; nothing has changed then)."""
        match action:
            case Scan(qr=qr, phone=phone):
                if self._qr is None or qr != self._qr:
                    raise BadAction("scan of a QR that is not on screen")
                await self._link(phone)
            case EnterCode(code=code):
                pending = self._code
                if pending is None or pending[0] != code or datetime.now(UTC) >= pending[2]:
                    raise BadAction("code entry did not match a valid pending code")
                await self._link(pending[1])
            case Disconnect():
                if self._connected:
                    await self._drop()
                    await self._emit(Disconnected("simulated network loss"))
                    self._connect_soon(self._timing.reconnect_s)
            case Logout(code=code):
                await self._logged_out(logout_reason(code), on_connect=not self._connected)
            case Passkey(stage=stage, code=code):
                await self._ask_passkey(stage, code)
            case ReplaceStream():
                await self._replace_stream()
            case TempBan(code=code, expire_s=expire_s):
                await self._drop()
                until = (None if expire_s is None
                         else datetime.now(UTC) + timedelta(seconds=expire_s))
                await self._emit(TemporaryBan(code=temp_ban_name(code), expires_at=until))
                if expire_s is not None:
                    self._connect_soon(expire_s)  # the ban ends: WhatsApp lets it in again
            case RefuseConnect(code=code):
                await self._refuse(code)
            case Inbound():
                record = {"id": action.message_id or secrets.token_hex(8).upper(),
                          "chat": action.chat, "from": action.sender, "text": action.text,
                          "ts": datetime.now(UTC).isoformat()}
                await self._redis.rpush(self._inbox, json.dumps(record))
                self._inbox_ready.set()
            case Deliver():
                self._inbox_ready.set()
            case SendLimit():
                self._send_limits.append(action)
            case HoldSends(seconds=seconds):
                self._hold_s = seconds
            case MapLid(lid=lid, phone=phone):
                await self._store.map_lid(lid, phone)

    async def _deliveries(self) -> None:
        """The server's side of inbound messages: deliver the queue in order while
        connected; a message leaves the queue only once the worker stored it."""
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            try:
                while self._connected:
                    raw = await self._redis.lrange(self._inbox, 0, 0)
                    if not raw:
                        break
                    message = _inbox_message(raw[0])
                    if message is not None:
                        await self._emit(message)  # MessageNotStored: stays queued
                    await self._redis.lpop(self._inbox)
            except MessageNotStored:
                await asyncio.sleep(1)
                self._inbox_ready.set()
            except REDIS_ERRORS as exc:
                log.warning("simulator inbox unavailable (%s)", type(exc).__name__,
                            extra={"company_id": self._company})
                await asyncio.sleep(1)
                self._inbox_ready.set()

    async def _drop(self) -> None:
        """The server closes the socket (no event: the caller reports why); the QR on
        screen goes with it."""
        await self._stop_session()
        self._connected = False
        self._qr = None

    async def _logged_out(self, reason: str, on_connect: bool) -> None:
        """WhatsApp deletes the device; a new login (QR codes) starts, as in the driver."""
        await self._store.forget_device()
        await self._drop()
        await self._emit(LoggedOut(reason, on_connect=on_connect))
        self._connect_soon(self._timing.connect_s)

    async def _ask_passkey(self, stage: str, code: str | None) -> None:
        """WhatsApp gates the link behind the passkey; the login socket stays open, so the
        QR codes keep rotating and a pending pairing code stays valid."""
        if await self.stored_device() is not None:
            raise BadAction("a linked device is never asked for a passkey")
        if self._qr is None and self._code is None:
            raise BadAction("a passkey is asked only while a login is open")
        await self._emit(PasskeyRequired(stage=stage, code=code))

    async def _replace_stream(self) -> None:
        """The production driver's rule: one delayed reconnect, a second replacement within
        the window halts (two clients fighting over one session must not loop)."""
        if not self._connected:
            raise BadAction("no open stream to replace")
        now = time.monotonic()
        t = self._timing
        retry = self._replaced_at is None or now - self._replaced_at >= t.replaced_window_s
        self._replaced_at = now
        await self._drop()
        await self._emit(StreamReplaced(will_retry=retry))
        if retry:
            self._connect_soon(t.replaced_retry_s)

    async def _refuse(self, code: int) -> None:
        """A connect failure as whatsmeow and the neonize driver handle it: the logout
        codes delete the device, 500/503/CAT reconnect soon, a refused client build stops,
        anything else is retried slowly."""
        if code in LOGOUT_CODES:
            await self._logged_out(logout_reason(code), on_connect=True)
            return
        if code == TEMP_BAN_CODE:
            raise BadAction("402 is a temporary ban: use the temporary_ban action")
        name = failure_name(code)
        retry = name not in NON_RETRYABLE
        await self._drop()
        await self._emit(ConnectFailure(reason=name, message=f"simulated refusal {code}",
                                        will_retry=retry))
        if retry:
            t = self._timing
            self._connect_soon(t.reconnect_s if name in RETRYABLE else t.unexplained_retry_s)


def _inbox_message(raw: bytes | str) -> InboundMessage | None:
    """A queued record as the message WhatsApp delivers (None: not a message; dropped)."""
    try:
        record = json.loads(raw)
        return InboundMessage(
            message_id=str(record["id"]), chat_jid=str(record.get("chat") or record["from"]),
            sender_jid=str(record["from"]), text=str(record.get("text", "")),
            timestamp=datetime.fromisoformat(str(record["ts"])))
    except (ValueError, KeyError, TypeError):
        log.warning("simulator inbox: a record that is not a message was dropped")
        return None


def _qr_payload() -> str:
    """Shaped like WhatsApp's: ref,noise key,identity key,adv secret (base64)."""
    def b64(n: int) -> str:
        import base64

        return base64.b64encode(secrets.token_bytes(n)).decode()

    return f"2@{b64(48)},{b64(32)},{b64(32)},{b64(32)}"
