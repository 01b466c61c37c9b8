"""The `neonize` driver up to the network boundary (this machine cannot reach WhatsApp).

Real: neonize's Go core, PostgreSQL (whatsmeow's own tables), the connection attempts.
Fed by hand: neonize's own protobuf events (the ones WhatsApp's servers would cause).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from salon_sessions.core.phone import Resolved, Unresolved, phone_of
from salon_sessions.db.migrator import migrate
from salon_sessions.db.whatsmeow_store import go_store_dsn
from salon_sessions.worker.driver import (
    Connected,
    ConnectFailure,
    Disconnected,
    DriverError,
    DriverFact,
    InboundMessage,
    LoggedOut,
    PairSuccess,
    PasskeyRequired,
    QrCode,
    StreamReplaced,
    TemporaryBan,
)
from salon_sessions.worker.neonize import link as neonize_link
from salon_sessions.worker.neonize.driver import NeonizeDriver, NeonizePolicy
from salon_sessions.worker.neonize.go import (
    AttemptPhase,
    GoAttempt,
    GoOps,
    load_neonize,
)
from salon_sessions.worker.neonize.logs import (
    ClientOutdatedLine,
    ConnectFailureLine,
    LoggedOutLine,
    ReconnectFailedLine,
    StreamReplacedLine,
    TemporaryBanLine,
    parse_log_line,
)
from tests import whatsmeow_rows
from tests.helpers import wait_for

NZ = load_neonize()
# neonize's own event classes, as `neonize.aioze.events` exposes them
from neonize.aioze.events import (  # type: ignore[import-untyped]  # noqa: E402
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    StreamReplacedEv,
    TemporaryBanEv,
)

PHONE = "79686484488"
DEVICE = f"{PHONE}:32@s.whatsapp.net"
LID_USER = "123456789012345"
COMPANY = "company_962302"
Events = list[DriverFact]


def jid(user: str, server: str, device: int = 0) -> Any:
    return NZ.proto.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0,
                        IsEmpty=False)


def text_message(sender: Any, text: str = "hello", *, alt: Any = None,
                 extended: bool = False) -> Any:
    source = NZ.proto.MessageSource(Chat=jid(sender.User, sender.Server), Sender=sender,
                                    IsFromMe=False, IsGroup=False)
    if alt is not None:
        source.SenderAlt.CopyFrom(alt)
    info = NZ.proto.MessageInfo(MessageSource=source, ID="3EB0C0FFEE", Pushname="Anna",
                                Timestamp=1_764_000_000_123)
    body = (NZ.e2e.Message(extendedTextMessage=NZ.e2e.ExtendedTextMessage(text=text))
            if extended else NZ.e2e.Message(conversation=text))
    return MessageEv(Info=info, Message=body)


def attempt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("neonize-company_") and t.is_alive()]


async def go_connections(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT application_name FROM pg_stat_activity WHERE "
                                "application_name LIKE 'salon-neonize:%'")
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def whatsmeow_tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT table_name FROM information_schema.tables "
                                "WHERE table_name LIKE 'whatsmeow%'")
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def ensure_store(dsn: str) -> None:
    """Let neonize create whatsmeow's tables (one failing connection attempt does it)."""
    events: Events = []
    driver = NeonizeDriver(dsn, COMPANY)

    async def sink(event: DriverFact) -> None:
        events.append(event)

    await driver.start(sink)
    try:
        await wait_for(lambda: any(isinstance(e, Disconnected) for e in events),
                       what="the first connection attempt")
    finally:
        await driver.close()


async def insert_device(dsn: str, device: str = DEVICE) -> None:
    """A registered device, as whatsmeow stores one."""
    conn = await asyncpg.connect(dsn)
    try:
        await whatsmeow_rows.insert_device(conn, device)
    finally:
        await conn.close()


@pytest.fixture
async def mapped(database: str) -> AsyncIterator[tuple[NeonizeDriver, Events]]:
    """A driver whose handlers are fed by hand (attached, never connecting)."""
    events: Events = []
    driver = NeonizeDriver(database, COMPANY)

    async def sink(event: DriverFact) -> None:
        events.append(event)

    driver.attach(sink)
    yield driver, events
    await driver.close()


# ---------------------------------------------------------------------------- the store

async def test_store_in_postgres_and_unreachable_network_is_a_retrying_disconnect(
        database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # neonize must not write files where it runs
    monkeypatch.setattr(neonize_link, "LOGIN_WAIT_S", 0.5)
    assert not await whatsmeow_tables(database)
    events: Events = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    driver = NeonizeDriver(database, COMPANY)
    assert await driver.stored_device() is None
    started = time.monotonic()
    await driver.start(sink)
    assert time.monotonic() - started < 5, "start() returns at once"

    down = await wait_for(
        lambda: next((e for e in events if isinstance(e, Disconnected)), None),
        what="a Disconnected event")
    assert down.will_reconnect
    assert "connection failed" in down.reason
    tables = await whatsmeow_tables(database)
    assert {"whatsmeow_device", "whatsmeow_lid_map", "whatsmeow_sessions"} <= tables
    assert tables == set(await driver.store.whatsmeow_tables())
    assert not driver.connected
    assert await driver.stored_device() is None  # still nothing linked

    with pytest.raises(DriverError) as refused:
        await driver.send_text(f"{PHONE}@s.whatsapp.net", "hi")
    assert refused.value.code == "not_connected"
    with pytest.raises(DriverError) as no_login:
        await driver.request_pairing_code("+7 968 648-44-88")
    assert no_login.value.code == "not_connected"

    await asyncio.sleep(3)  # a retry or two happen; each reported once per outage
    assert sum(isinstance(e, Disconnected) for e in events) == 1
    assert all(isinstance(e, Disconnected) for e in events)
    # each Go run opens a store connection that neonize never closes; the driver does
    assert len(await go_connections(database)) <= 1

    closing = time.monotonic()
    await driver.close()
    assert time.monotonic() - closing < 10
    await wait_for(lambda: not attempt_threads(), timeout=10, what="neonize threads to end")
    await wait_for(lambda: _no_go_connections(database), timeout=10,
                   what="the Go clients' store connections to close")
    assert list(tmp_path.iterdir()) == [], "nothing written to the working directory"
    with pytest.raises(DriverError):
        await driver.start(sink)


async def _no_go_connections(dsn: str) -> bool:
    return not await go_connections(dsn)


async def test_stored_device_is_none_on_a_fresh_store(database: str) -> None:
    driver = NeonizeDriver(database, COMPANY)
    try:
        assert await driver.stored_device() is None  # no whatsmeow tables yet
        await ensure_store(database)
        assert await driver.stored_device() is None  # tables, but no device
    finally:
        await driver.close()


async def test_a_registered_device_is_resumed(database: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    await ensure_store(database)
    await insert_device(database)
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)  # the project's own tables: salon_sessions.device_jid
        await conn.execute(
            "INSERT INTO salon_sessions (company_id, namespace, resource_name, device_jid, "
            "linked_at) VALUES ($1, 'default', 'company-962302', $2, now())", COMPANY, DEVICE)
    finally:
        await conn.close()

    explicit = NeonizeDriver(database, COMPANY, device_jid=DEVICE)
    from_table = NeonizeDriver(database, COMPANY)
    other = NeonizeDriver(database, "company_1")
    gone = NeonizeDriver(database, COMPANY, device_jid="79990001122:3@s.whatsapp.net")
    try:
        assert await explicit.stored_device() == DEVICE
        assert await from_table.stored_device() == DEVICE
        assert await other.stored_device() is None  # never another company's device
        assert await gone.stored_device() is None  # not in whatsmeow_device: not resumed

        events: Events = []

        async def sink(event: DriverFact) -> None:
            events.append(event)

        caplog.set_level("INFO", logger="salon_sessions.worker.neonize")
        await from_table.start(sink)
        await wait_for(lambda: any(isinstance(e, Disconnected) for e in events),
                       what="the resumed device's connection attempt")
        assert "resuming the stored device" in caplog.text
        assert "new device" not in caplog.text
        assert await from_table.stored_device() == DEVICE  # a network error keeps it
    finally:
        for driver in (explicit, from_table, other, gone):
            await driver.close()


async def test_lid_resolution_through_the_store(database: str) -> None:
    await ensure_store(database)
    driver = NeonizeDriver(database, COMPANY)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES ($1, $2)",
                           LID_USER, PHONE)
        resolver = driver.lid_resolver
        assert await resolver.phone_for_lid(LID_USER) == PHONE
        assert await resolver.phone_for_lid("999999999999999") is None
        assert await resolver.phone_for_lid("not-a-lid") is None
        assert await phone_of(f"{LID_USER}:5@lid", resolver) == Resolved(
            PHONE, via_lid=f"{LID_USER}@lid")
        assert await phone_of("555555555555555@lid", resolver) == Unresolved(
            "555555555555555@lid")
    finally:
        await conn.close()
        await driver.close()


async def test_lid_resolver_without_whatsmeow_tables_knows_nothing(database: str) -> None:
    driver = NeonizeDriver(database, COMPANY)
    try:
        assert await driver.lid_resolver.phone_for_lid(LID_USER) is None
    finally:
        await driver.close()


async def test_proxy_is_used_and_its_credentials_never_leak(
        database: str, caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    proxy = f"socks5://salon:Pr0xy-s3cret@127.0.0.1:{port}"
    events: Events = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    caplog.set_level("DEBUG", logger="salon_sessions.worker.neonize")
    driver = NeonizeDriver(database, COMPANY, proxy_url=proxy)
    await driver.start(sink)
    try:
        down = await wait_for(
            lambda: next((e for e in events if isinstance(e, Disconnected)), None),
            what="a Disconnected event")
    finally:
        await driver.close()
    assert f"127.0.0.1:{port}" in down.reason  # the connection went to the proxy
    password = database.split(":")[2].split("@")[0]
    for secret in ("Pr0xy-s3cret", proxy, password, database):
        assert secret not in repr(events)
        assert secret not in caplog.text


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_proxy_urls_are_refused_without_echoing_them() -> None:
    for url in ("ftp://user:hunter2@proxy:21", "socks4://proxy:1080", "proxy:3128"):
        with pytest.raises(ValueError, match="proxy URL must be") as refused:
            NeonizeDriver("postgresql://u:p@127.0.0.1:1/db", COMPANY, proxy_url=url)
        assert "hunter2" not in str(refused.value)
    with pytest.raises(ValueError, match="postgres"):
        NeonizeDriver("mysql://u:p@127.0.0.1:1/db", COMPANY)


def test_store_dsn_for_neonize() -> None:
    dsn = go_store_dsn("postgresql://u:p%40ss@127.0.0.1:5432/salon", "salon-neonize:x")
    assert dsn == ("postgresql://u:p%40ss@127.0.0.1:5432/salon"
                   "?sslmode=prefer&connect_timeout=10&application_name=salon-neonize%3Ax")
    kept = go_store_dsn("postgres://h/db?sslmode=disable&connect_timeout=3&application_name=a",
                        "b")
    assert kept == "postgres://h/db?sslmode=disable&connect_timeout=3&application_name=b"


# ---------------------------------------------------------------------------- events

async def test_qr_codes_are_published_as_they_rotate(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_qr("2@first,ref")
    await driver.handle_qr("2@second,ref")
    await driver.handle_qr("2@third,ref")
    assert events == [QrCode("2@first,ref", 60), QrCode("2@second,ref", 20),
                      QrCode("2@third,ref", 20)]


async def test_expired_login_is_a_retrying_disconnect(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_login_status("timeout")
    await driver.handle_login_status("err-client-outdated")
    assert events == [Disconnected("the QR codes expired without a scan", will_reconnect=True),
                      ConnectFailure("client_outdated", "WhatsApp rejected the client version",
                                     will_retry=False)]


async def test_pair_success_with_a_phone_jid_and_then_connected(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_neonize_event(PairStatusEv(
        ID=jid(PHONE, "s.whatsapp.net", 32), Status=PairStatusEv.SUCCESS, Platform="android",
        BusinessName=""))
    await driver.handle_neonize_event(ConnectedEv(status=True))
    assert events == [PairSuccess(jid=DEVICE, phone=PHONE), Connected(jid=DEVICE)]
    assert driver.connected


async def test_pair_success_with_a_lid_jid_has_no_phone(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_neonize_event(PairStatusEv(
        ID=jid(LID_USER, "lid", 12), Status=PairStatusEv.SUCCESS))
    assert events == [PairSuccess(jid=f"{LID_USER}:12@lid", phone=None)]


async def test_pair_error_is_a_connect_failure(mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_neonize_event(PairStatusEv(
        ID=jid("", ""), Status=PairStatusEv.ERROR, Error="pair-device-sign mismatch"))
    assert events == [ConnectFailure("pair_error", "pair-device-sign mismatch")]


async def test_connection_events(mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await driver.handle_neonize_event(ConnectedEv(status=True))
    assert driver.connected
    await driver.handle_neonize_event(DisconnectedEv(status=True))
    assert not driver.connected
    await driver.handle_neonize_event(ConnectedEv(status=True))
    await driver.handle_neonize_event(StreamReplacedEv())
    await driver.handle_marker(StreamReplacedLine())  # the same, announced by a log line
    assert events == [Connected(jid=None),
                      Disconnected("connection lost", will_reconnect=True),
                      Connected(jid=None), StreamReplaced(will_retry=True)]
    assert not driver.connected


async def test_temporary_ban_and_connect_failures(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    before = datetime.now(UTC)
    await driver.handle_neonize_event(TemporaryBanEv(
        Code=TemporaryBanEv.SEND_TO_TOO_MANY_PEOPLE, Expire=3600))
    await driver.handle_neonize_event(TemporaryBanEv(Code=TemporaryBanEv.BLOCKED_BY_USERS))
    await driver.handle_neonize_event(ConnectFailureEv(
        Reason=NZ.proto.SERVICE_UNAVAILABLE, Message="try later"))
    await driver.handle_neonize_event(ConnectFailureEv(
        Reason=NZ.proto.UNKNOWN_LOGOUT, Message="x"))
    await driver.handle_marker(ClientOutdatedLine())
    ban, ban_open, failure, banned, outdated = events
    assert isinstance(ban, TemporaryBan)
    assert ban.code == "sent_to_too_many_people"  # WhatsApp's name (code 101), not neonize's
    assert ban.expires_at is not None
    assert timedelta(minutes=59) < ban.expires_at - before < timedelta(minutes=61)
    assert ban_open == TemporaryBan(code="blocked_by_users", expires_at=None)
    assert failure == ConnectFailure("service_unavailable", "try later")
    assert banned == ConnectFailure("banned", "x")
    assert outdated == ConnectFailure("client_outdated", "WhatsApp rejected the client version",
                                      will_retry=False)


async def test_logged_out_deletes_the_credentials(database: str,
                                                  mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await ensure_store(database)
    await insert_device(database)
    await driver.handle_neonize_event(NZ.proto.Device(JID=jid(PHONE, "s.whatsapp.net", 32)))
    assert await driver.stored_device() == DEVICE
    await driver.handle_neonize_event(ConnectedEv(status=True))
    await driver.handle_neonize_event(LoggedOutEv(OnConnect=False,
                                                  Reason=NZ.proto.LOGGED_OUT))
    assert events == [Connected(jid=DEVICE), LoggedOut(reason="logged_out", on_connect=False)]
    assert not driver.connected
    assert await driver.stored_device() is None
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM whatsmeow_device") == 0
    finally:
        await conn.close()
    await driver.handle_marker(LoggedOutLine(code=406, on_connect=True))  # from a log line
    assert events[-1] == LoggedOut(reason="banned", on_connect=True)


async def test_inbound_text_messages(database: str,
                                     mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, events = mapped
    await ensure_store(database)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES ($1, $2)",
                           LID_USER, PHONE)
    finally:
        await conn.close()
    phone_sender = jid(PHONE, "s.whatsapp.net", 7)
    lid_sender = jid(LID_USER, "lid")
    unknown_lid = jid("555555555555555", "lid")

    await driver.handle_neonize_event(text_message(phone_sender, "Hi, a haircut tomorrow?"))
    await driver.handle_neonize_event(text_message(lid_sender, "from a LID", extended=True))
    await driver.handle_neonize_event(text_message(unknown_lid, "who am I"))
    await driver.handle_neonize_event(
        text_message(unknown_lid, "with alt", alt=jid("79990001122", "s.whatsapp.net")))
    image = text_message(phone_sender)
    image.Message.Clear()
    image.Message.imageMessage.mimetype = "image/jpeg"
    await driver.handle_neonize_event(image)  # no text: not a text message

    first, from_lid, unresolved, with_alt = events
    assert first == InboundMessage(
        message_id="3EB0C0FFEE", chat_jid=f"{PHONE}@s.whatsapp.net",
        sender_jid=f"{PHONE}:7@s.whatsapp.net", text="Hi, a haircut tomorrow?",
        from_me=False, timestamp=datetime(2025, 11, 24, 16, 0, 0, 123000, UTC),
        sender_alt_jid=None, extra={"push_name": "Anna"})
    assert isinstance(from_lid, InboundMessage)
    assert from_lid.text == "from a LID"
    assert from_lid.sender_jid == f"{LID_USER}@lid"
    assert from_lid.sender_alt_jid == f"{PHONE}@s.whatsapp.net"
    assert isinstance(unresolved, InboundMessage)
    assert unresolved.sender_alt_jid is None
    assert isinstance(with_alt, InboundMessage)
    assert with_alt.sender_alt_jid == "79990001122@s.whatsapp.net"


async def test_commands_need_a_connection(mapped: tuple[NeonizeDriver, Events]) -> None:
    driver, _ = mapped
    with pytest.raises(DriverError) as invalid:
        await driver.request_pairing_code("12")
    assert invalid.value.code == "invalid_phone"
    with pytest.raises(DriverError) as not_started:
        await driver.request_pairing_code("79686484488")
    assert not_started.value.code == "not_connected"
    with pytest.raises(DriverError) as not_connected:
        await driver.send_text("79686484488@s.whatsapp.net", "hello")
    assert not_connected.value.code == "not_connected"


# ---------------------------------------------------------------------------- Go plumbing

@pytest.mark.parametrize(("line", "fact"), [
    ("Got replaced stream error, sending StreamReplaced event", StreamReplacedLine()),
    ("Client outdated (405) connect failure (client version: 2.3000.1)", ClientOutdatedLine()),
    ("Got device removed stream error, sending LoggedOut event and deleting session",
     LoggedOutLine(code=401, on_connect=False)),
    ("Got 403: primary device was logged out connect failure, sending LoggedOut event and "
     "deleting session", LoggedOutLine(code=403, on_connect=True)),
    ("Got 406: unknown logout connect failure, sending LoggedOut event and deleting session",
     LoggedOutLine(code=406, on_connect=True)),
    ('Temporary ban connect failure: <failure code="107" expire="86400" reason="402"/>',
     TemporaryBanLine(code=107, expire_s=86400)),
    ('Temporary ban connect failure: <failure reason="402"/>',
     TemporaryBanLine(code=None, expire_s=0)),
    ('Unknown connect failure: <failure message="nope" reason="419"/>',
     ConnectFailureLine(code=419, message="nope")),
    ("Failed to reconnect after 515 code: dial tcp: i/o timeout", ReconnectFailedLine()),
    ("Successfully authenticated", None),
    ('Got 503/ connect failure, assuming automatic reconnect will handle it', None),
])
def test_log_lines_that_announce_what_neonize_cannot_deliver(line: str, fact: object) -> None:
    """The exact lines of whatsmeow v0.0.0-20260921121126-35ae40906e74
    (`connectionevents.go`), numbers included."""
    assert parse_log_line(line) == fact


def test_importing_neonize_leaves_logging_alone() -> None:
    script = ("import logging\n"
              "from salon_sessions.worker.neonize.go import load_neonize\n"
              "load_neonize()\n"
              "root = logging.getLogger()\n"
              "print(len(root.handlers), root.level)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["0", str(logging.WARNING)]


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def ops(self) -> GoOps:
        return GoOps(stop=lambda uuid: self._add("stop", uuid),
                     disconnect=lambda uuid: self._add("disconnect", uuid))

    def _add(self, what: str, uuid: str) -> None:
        with self.lock:
            self.calls.append((what, uuid))

    def names(self) -> list[str]:
        with self.lock:
            return [c[0] for c in self.calls]


def _attempt(recorder: _Recorder) -> tuple[GoAttempt, list[tuple[str, Any]]]:
    posted: list[tuple[str, Any]] = []
    attempt = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@127.0.0.1:1/db",
                        jid=None, proxy_url=None,
                        post=lambda _a, kind, payload: posted.append((kind, payload)),
                        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
                        scrub=lambda text: text, ops=recorder.ops())
    return attempt, posted


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_login_attempt_is_disconnected_never_stopped() -> None:
    """`Stop` during neonize's QR loop would make its `FetchMe` dereference a deleted
    client (a process-killing panic): a login attempt only gets `Disconnect`."""
    recorder = _Recorder()
    attempt, posted = _attempt(recorder)
    qr = ctypes.create_string_buffer(b"2@qr-payload")
    attempt._on_qr(None, ctypes.addressof(qr))
    assert attempt.phase is AttemptPhase.LOGIN
    assert posted == [("qr", "2@qr-payload")]
    attempt.request_stop()
    _until(attempt.settled.is_set)
    attempt.request_stop()
    time.sleep(0.05)
    assert recorder.names() == ["disconnect"]
    attempt._on_qr(None, ctypes.addressof(qr))  # Go still emits the remaining codes
    assert posted == [("qr", "2@qr-payload")], "a retiring attempt publishes no QR"


def test_a_running_attempt_is_stopped() -> None:
    recorder = _Recorder()
    attempt, posted = _attempt(recorder)
    device = NZ.proto.Device(JID=jid(PHONE, "s.whatsapp.net", 32), Platform="android",
                             BussinessName="", PushName="Salon", Initialized=True,
                             LID=jid(LID_USER, "lid", 32)).SerializeToString()
    buffer = ctypes.create_string_buffer(device, len(device))
    attempt._on_event(None, ctypes.addressof(buffer), len(device), 0)
    assert attempt.phase is AttemptPhase.RUNNING
    assert posted[0][0] == "event"
    attempt.request_stop()
    _until(lambda: recorder.names() == ["stop"])


def test_a_starting_attempt_is_stopped_when_it_gets_far_enough() -> None:
    recorder = _Recorder()
    attempt, _ = _attempt(recorder)
    attempt.request_stop()
    time.sleep(0.05)
    assert recorder.names() == []
    assert not attempt.settled.is_set()
    qr = ctypes.create_string_buffer(b"2@late")
    attempt._on_qr(None, ctypes.addressof(qr))  # it reached the login loop after all
    _until(attempt.settled.is_set)
    assert recorder.names() == ["disconnect"]

    recorder2 = _Recorder()
    finished, _ = _attempt(recorder2)
    finished.request_stop()
    finished._set_phase(AttemptPhase.FINISHED)  # Neonize() returned (a connect error)
    assert finished.settled.is_set()
    time.sleep(0.05)
    assert recorder2.names() == []


async def test_go_callbacks_reach_the_handlers_in_order(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """Go calls back on its own threads; the driver queues onto the loop, keeps the
    order, and drops what a replaced client still says."""
    driver, events = mapped
    recorder = _Recorder()
    current = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@127.0.0.1:1/db",
                        jid=None, proxy_url=None, post=driver._inbox.post,
                        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
                        scrub=lambda text: text, ops=recorder.ops())
    stale = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@127.0.0.1:1/db",
                      jid=None, proxy_url=None, post=driver._inbox.post,
                      log=logging.LoggerAdapter(logging.getLogger("test"), {}),
                      scrub=lambda text: text, ops=recorder.ops())
    driver._inbox.loop = asyncio.get_running_loop()
    driver._supervisor.attempt = current
    buffers = [ctypes.create_string_buffer(b) for b in (b"2@one", b"2@two", b"timeout",
                                                         b"2@stale")]

    def go_thread() -> None:
        current._on_qr(None, ctypes.addressof(buffers[0]))
        stale._on_qr(None, ctypes.addressof(buffers[3]))
        current._on_qr(None, ctypes.addressof(buffers[1]))
        current._on_login(None, ctypes.addressof(buffers[2]))

    thread = threading.Thread(target=go_thread)
    thread.start()
    thread.join()
    await wait_for(lambda: len(events) >= 3, what="three events")
    await asyncio.sleep(0.2)
    assert events == [QrCode("2@one", 60), QrCode("2@two", 20),
                      Disconnected("the QR codes expired without a scan",
                                   will_reconnect=True)]
    driver._supervisor.attempt = None


# ------------------------------------------------- what real WhatsApp does (issue 12)

def _expect_outcome(driver: NeonizeDriver) -> asyncio.Future[Any]:
    """Stand in for the supervisor's wait: what the handlers ask it to do next."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    driver._supervisor.outcome = future
    return future


async def test_a_passkey_request_keeps_the_login_socket_open(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """whatsmeow's QR channel says `passkey-request` / `passkey-confirmation` while WhatsApp
    waits on the socket: reported, and no restart (that would tear the link down)."""
    driver, events = mapped
    outcome = _expect_outcome(driver)
    await driver.handle_qr("2@first,ref")
    await driver.handle_login_status("passkey-request")
    await driver.handle_login_status("passkey-confirmation")
    assert events[1:] == [PasskeyRequired(stage="request"),
                          PasskeyRequired(stage="confirmation")]
    assert not outcome.done(), "the login socket must stay open"
    await driver.handle_login_status("timeout")  # the socket closes by itself
    assert outcome.done()
    assert outcome.result().kind == "restart"


async def test_logout_reasons_survive_the_log_line_racing_the_event(
        database: str) -> None:
    """whatsmeow logs "Got 403: ... sending LoggedOut event" before it dispatches the event:
    the line wins and must say `locked`, and the event that follows is the same fact."""
    events: Events = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    driver = NeonizeDriver(database, COMPANY)
    driver.attach(sink)
    recorder = _Recorder()
    driver._supervisor.attempt, _ = _attempt(recorder)  # one client run
    try:
        await driver.handle_marker(parse_log_line(  # type: ignore[arg-type]
            "Got 403: primary device was logged out connect failure, sending LoggedOut event "
            "and deleting session"))
        await driver.handle_neonize_event(LoggedOutEv(OnConnect=True,
                                                      Reason=NZ.proto.MAIN_DEVICE_GONE))
        assert events == [LoggedOut(reason="locked", on_connect=True)]
    finally:
        driver._supervisor.attempt = None
        await driver.close()


async def test_bans_and_refusals_neonize_cannot_encode_come_from_the_log(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """Ban 107 and refusal 419 are not in neonize's enums (its encoding fails and the event
    never arrives): the log lines carry them. A ban waits for its end; an unexplained
    refusal is retried only slowly (never the 2..60 s loop)."""
    driver, events = mapped
    ban_outcome = _expect_outcome(driver)
    before = datetime.now(UTC)
    await driver.handle_marker(parse_log_line(  # type: ignore[arg-type]
        'Temporary ban connect failure: <failure code="107" expire="7200" reason="402"/>'))
    ban = events[-1]
    assert isinstance(ban, TemporaryBan)
    assert ban.code == "code_107"
    assert ban.expires_at is not None
    assert timedelta(minutes=119) < ban.expires_at - before < timedelta(minutes=121)
    assert ban_outcome.result().kind == "restart"
    assert 7100 < ban_outcome.result().delay <= 7200

    failure_outcome = _expect_outcome(driver)
    await driver.handle_marker(parse_log_line(  # type: ignore[arg-type]
        'Unknown connect failure: <failure message="?" reason="419"/>'))
    assert events[-1] == ConnectFailure("code_419", "?", will_retry=True)
    assert failure_outcome.result().kind == "restart"
    assert failure_outcome.result().delay >= NeonizePolicy().slow_base_s / 2

    halt = _expect_outcome(driver)
    await driver.handle_marker(ConnectFailureLine(code=418, message=""))
    assert events[-1] == ConnectFailure("client_unknown", "", will_retry=False)
    assert halt.result().kind == "halt"


async def test_a_replaced_stream_is_retried_once_then_halts(database: str) -> None:
    held = [True]
    events: Events = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    driver = NeonizeDriver(database, COMPANY, lock_held=lambda: held[0],
                           policy=NeonizePolicy(stream_replaced_retry_s=7.0))
    driver.attach(sink)
    try:
        first = _expect_outcome(driver)
        await driver.handle_neonize_event(StreamReplacedEv())
        assert events == [StreamReplaced(will_retry=True)]
        assert (first.result().kind, first.result().delay, first.result().needs_lock) == (
            "restart", 7.0, True)
        driver._run.reported.clear()  # the retry is a new client run
        second = _expect_outcome(driver)
        await driver.handle_marker(StreamReplacedLine())
        assert events[-1] == StreamReplaced(will_retry=False)
        assert second.result().kind == "halt"
        assert "twice" in second.result().reason
    finally:
        await driver.close()

    lockless = NeonizeDriver(database, COMPANY, lock_held=lambda: False)
    lockless.attach(sink)
    try:
        outcome = _expect_outcome(lockless)
        await lockless.handle_neonize_event(StreamReplacedEv())
        assert events[-1] == StreamReplaced(will_retry=False)
        assert outcome.result().kind == "halt"
    finally:
        await lockless.close()


async def test_the_watchdog_restarts_a_linked_client_that_never_connects(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """Linked (pair success) and no `Connected`, e.g. whatsmeow's reconnect after pairing
    (stream error 515) failed: whatsmeow never retries it; the watchdog restarts the
    client, and the 515 log line does so at once."""
    driver, events = mapped
    restarts: list[str] = []
    driver._supervisor.on_restart = restarts.append
    recorder = _Recorder()
    attempt, _ = _attempt(recorder)
    driver._supervisor.attempt = attempt
    try:
        await driver.handle_neonize_event(PairStatusEv(
            ID=jid(PHONE, "s.whatsapp.net", 32), Status=PairStatusEv.SUCCESS))
        outcome = _expect_outcome(driver)
        await driver._supervisor.watch(attempt)
        assert not outcome.done(), "not yet past the bound"
        assert driver._run.unconnected_since is not None
        driver._run.unconnected_since -= NeonizePolicy().watchdog_s + 1
        await driver._supervisor.watch(attempt)
        assert (outcome.result().kind, outcome.result().reason) == ("restart", "not_connected")
        assert restarts == ["not_connected"]
        down = events[-1]
        assert isinstance(down, Disconnected)
        assert down.will_reconnect
        assert "restarting the WhatsApp client" in down.reason

        again = _expect_outcome(driver)
        await driver.handle_marker(ReconnectFailedLine())
        assert again.result().reason == "reconnect_after_pairing_failed"
        assert "reconnect after linking failed" in events[-1].reason  # type: ignore[union-attr]
        await driver.handle_neonize_event(ConnectedEv(status=True))
        quiet = _expect_outcome(driver)
        await driver._supervisor.watch(attempt)
        assert not quiet.done(), "a connected client is left alone"
    finally:
        driver._supervisor.attempt = None


async def test_a_stopping_client_lets_a_running_send_finish(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """A send writes Signal sessions into the store: the client is stopped, and its store
    connections closed, only after the send returned."""
    driver, _ = mapped
    recorder = _Recorder()
    attempt, _ = _attempt(recorder)
    driver._supervisor.attempt = attempt
    release = asyncio.Event()

    async def send() -> None:
        async with driver._retirer.go_call():
            await release.wait()

    sending = asyncio.create_task(send())
    await asyncio.sleep(0)
    retiring = asyncio.create_task(driver._supervisor.retire(attempt))
    await asyncio.sleep(0.3)
    assert recorder.names() == []
    assert not retiring.done()
    release.set()
    await sending
    await asyncio.wait_for(retiring, 10)
    attempt._set_phase(AttemptPhase.FINISHED)


async def test_a_client_that_may_hold_the_stream_must_be_gone_before_the_next(
        mapped: tuple[NeonizeDriver, Events]) -> None:
    """A resumed client whose `Neonize()` does not return after `Stop`: starting another
    would replace its stream, so the driver refuses and the process must restart."""
    driver, _ = mapped
    driver._ctx.policy = NeonizePolicy(retire_wait_s=0.1, stop_wait_s=0.3)
    recorder = _Recorder()  # its Stop does nothing: the Go thread never returns
    attempt = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@127.0.0.1:1/db",
                        jid=DEVICE, proxy_url=None, post=lambda *_: None,
                        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
                        scrub=lambda text: text, ops=recorder.ops())
    attempt._set_phase(AttemptPhase.RUNNING)
    driver._supervisor.attempt = attempt
    await driver._supervisor.retire(attempt)
    assert recorder.names() == ["stop"]
    refusal = await driver._retirer.holder_gone()
    assert refusal is not None
    assert "did not stop" in refusal
    attempt._set_phase(AttemptPhase.FINISHED)  # Neonize() returned after all
    attempt.finished.set()
    assert await driver._retirer.holder_gone() is None


async def test_too_many_parked_login_clients_restart_the_process(database: str) -> None:
    events: Events = []
    fatal: list[str] = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    driver = NeonizeDriver(database, COMPANY, policy=NeonizePolicy(max_parked=0),
                           on_fatal=fatal.append)
    await driver.start(sink)
    try:
        await wait_for(lambda: fatal, what="the driver to give up")
        assert "parked" in fatal[0]
        assert driver.halted == fatal[0]
        assert events == [Disconnected(reason=fatal[0], will_reconnect=False)]
        assert not attempt_threads(), "no client was started"
    finally:
        await driver.close()
