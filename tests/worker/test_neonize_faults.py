"""The `neonize` driver behind a proxy that misbehaves (`tests.faultproxy`): the real Go
core dials WhatsApp through it, the proxy refuses, stalls or drops, and the driver must
time out, back off, report one outage, and stop a client that is stuck mid-connect
without waiting, leaking or crashing.

Real: neonize's Go core, PostgreSQL, the proxy's sockets. No WhatsApp (no network here):
the proxy is where the path ends.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from salon_sessions.core.backoff import Backoff
from salon_sessions.worker.driver import Disconnected, DriverFact
from salon_sessions.worker.neonize import go as neonize_go
from salon_sessions.worker.neonize import tcp_sockets
from salon_sessions.worker.neonize.driver import NeonizeDriver
from salon_sessions.worker.neonize.go import AttemptPhase, GoAttempt, GoOps
from tests.faultproxy import FaultProxy, fault_proxy

COMPANY = "company_962302"
WHATSAPP = "web.whatsapp.com:443"
Events = list[DriverFact]


@dataclass(frozen=True, slots=True)
class RecordingBackoff(Backoff):
    """The driver's backoff policy, noting every delay the driver asks it for."""

    asked: list[tuple[int, float]] = field(default_factory=list)

    def delay(self, n: int, rng: random.Random) -> float:
        value = Backoff.delay(self, n, rng)
        self.asked.append((n, value))
        return value


def attempt_threads() -> list[threading.Thread]:
    """Threads running `Neonize()` (one per Go client that has not returned)."""
    return [t for t in threading.enumerate()
            if t.name.startswith("neonize-company_") and t.is_alive()]


Sink = Callable[[DriverFact], Awaitable[None]]


@pytest.fixture
def collected() -> tuple[Events, Sink]:
    """A driver sink and the events it received."""
    events: Events = []

    async def sink(event: DriverFact) -> None:
        events.append(event)

    return events, sink


def downs(events: Events) -> list[Disconnected]:
    return [e for e in events if isinstance(e, Disconnected)]


async def closed_behind_us(proxy: FaultProxy, keep: int = 0) -> None:
    """Every connection but the newest `keep` has been closed by the client."""
    await proxy.wait(lambda p: len(p.open_connections()) <= keep
                     and all(c.closed is not None for c in p.connections[:-keep or None]),
                     timeout=20, what="the client to let go of its proxy connections")


# ---------------------------------------------------------------------------- refused

@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_refusing_proxy_is_one_outage_retried_with_growing_backoff(
        database: str, scheme: str, collected: tuple[Events, Sink],
        caplog: pytest.LogCaptureFixture) -> None:
    events, sink = collected
    backoff = RecordingBackoff(base=0.3, cap=1.2)
    caplog.set_level("DEBUG", logger="salon_sessions.worker.neonize")
    async with fault_proxy("refuse") as proxy:
        credentials = "salon:Pr0xy-s3cret"
        driver = NeonizeDriver(database, COMPANY, proxy_url=proxy.url(scheme, credentials),
                               backoff=backoff)
        await driver.start(sink)
        try:
            await proxy.wait(lambda p: len(p.requested()) >= 4, timeout=60,
                             what="four connection attempts")
        finally:
            await driver.close()
        await closed_behind_us(proxy)

    asked = list(backoff.asked)
    requests = proxy.requested()
    # every attempt went through the proxy, asking for WhatsApp
    assert {c.target for c in requests} == {WHATSAPP}, requests
    assert {c.protocol for c in requests} == {scheme}
    if scheme == "socks5":  # the session's proxy credentials reach the proxy
        assert {c.username for c in requests} == {"salon"}
    # one outage: a single Disconnected however many attempts fail
    (down,) = downs(events)
    assert down.will_reconnect
    assert "connection failed" in down.reason
    assert events == [down]
    # backoff: the driver asks for retry 1, 2, 3 ... and waits at least that long
    assert [n for n, _ in asked[:3]] == [1, 2, 3]
    assert asked[2][1] > backoff.ceiling(1), "the third delay exceeds the first ceiling"
    for (_, delay), before, after in zip(asked, requests, requests[1:], strict=False):
        assert after.opened - before.opened >= delay - 0.01, (asked, requests)
    for secret in ("Pr0xy-s3cret", proxy.url(scheme, credentials)):
        assert secret not in repr(events)
        assert secret not in caplog.text


# ---------------------------------------------------------------------------- dropped

async def test_a_proxy_that_drops_the_tunnel_is_retried(
        database: str, collected: tuple[Events, Sink]) -> None:
    """The tunnel opens, the TLS handshake to WhatsApp starts through it, the path dies."""
    events, sink = collected
    async with fault_proxy("drop", drop_after=16) as proxy:
        driver = NeonizeDriver(database, COMPANY, proxy_url=proxy.url("http"),
                               backoff=Backoff(base=0.2, cap=0.4))
        await driver.start(sink)
        try:
            await proxy.wait(lambda p: sum(c.tunnelled == 16 for c in p.connections) >= 3,
                             timeout=60, what="three tunnels dropped mid-handshake")
        finally:
            await driver.close()
        await closed_behind_us(proxy)
    tunnels = [c for c in proxy.connections if c.target]
    assert {c.target for c in tunnels} == {WHATSAPP}
    assert all(c.tunnelled == 16 for c in tunnels if c.closed is not None), tunnels
    (down,) = downs(events)
    assert down.will_reconnect
    assert "connection failed" in down.reason


# ---------------------------------------------------------------------------- stalled

@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_stalled_proxy_times_out_and_a_client_stuck_connecting_stops_at_once(
        database: str, scheme: str, collected: tuple[Events, Sink],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """whatsmeow has no deadline for a SOCKS5 handshake (HTTP CONNECT: 60 s) and neonize
    cannot cancel a dial: without the driver's own connect timeout the session would sit
    in 'connecting' for good, and a stop would leave the Go client dialling."""
    events, sink = collected
    monkeypatch.setattr(neonize_go, "CONNECT_TIMEOUT_S", 1.0)
    caplog.set_level("DEBUG", logger="salon_sessions.worker.neonize")
    async with fault_proxy("stall") as proxy:
        driver = NeonizeDriver(database, COMPANY, proxy_url=proxy.url(scheme),
                               backoff=Backoff(base=0.2, cap=0.4))
        await driver.start(sink)
        try:
            # connect timeouts: each stalled attempt is given up, reported once, retried
            await proxy.wait(lambda p: len(p.connections) >= 3, timeout=60,
                             what="three connection attempts")
            (down,) = downs(events)
            assert down.will_reconnect
            assert "no answer from the proxy within 1 s" in down.reason
            # the given-up dials were cut: no connection left hanging, no Go thread
            await closed_behind_us(proxy, keep=1)
            assert len(attempt_threads()) <= 1

            # stop while the Go client is stuck mid-connect
            await proxy.wait(lambda p: len(p.open_connections()) == 1, timeout=20,
                             what="a stalled connection attempt")
            assert driver._supervisor.attempt is not None
            assert driver._supervisor.attempt.phase is AttemptPhase.STARTING
            stuck = driver._supervisor.attempt
            await driver.disconnect()
            assert stuck.finished.is_set(), "Neonize() returned before disconnect() did"
            assert not attempt_threads()
            await closed_behind_us(proxy)
            assert isinstance(events[-1], Disconnected)
            assert not events[-1].will_reconnect

            # the Go core is still usable (no Go lock left held): connect again, then
            # close() while that client is stuck too
            seen = len(proxy.connections)
            await driver.start(sink)
            await proxy.wait(lambda p: len(p.open_connections()) == 1
                             and len(p.connections) > seen, timeout=20,
                             what="a new stalled connection attempt")
        finally:
            await driver.close()
        assert not attempt_threads()
        await closed_behind_us(proxy)
    assert "did not stop within" not in caplog.text, "a stop waited for its timeout"


# ---------------------------------------------------------------------------- unit

def test_cut_dial_cuts_only_this_attempts_sockets_to_the_dial_target() -> None:
    """A `Stop` blocked behind a dial (whatsmeow's socket lock) is freed by cutting the
    dialling socket after `UNSTICK_AFTER_S`; older sockets, sockets to other peers and
    the sockets of a newer attempt are never touched."""
    with _stalling_listener() as proxy_port, _stalling_listener() as other_port:
        older = socket.create_connection(("127.0.0.1", proxy_port))
        log = logging.LoggerAdapter(logging.getLogger("test"), {})
        returned = threading.Event()
        dialling: list[socket.socket] = []

        def blocked_stop(_uuid: str) -> None:
            # like Go's Stop waiting for a reconnect dial: returns when the dial fails
            dialling[0].recv(1)
            returned.set()

        attempt = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@127.0.0.1:1/db",
                            jid=None, proxy_url=f"socks5://127.0.0.1:{proxy_port}",
                            post=lambda *_: None, log=log, scrub=lambda t: t,
                            ops=GoOps(stop=blocked_stop, disconnect=lambda _u: None))
        attempt._sockets_before = tcp_sockets.socket_inodes()
        neonize_go._NEWEST = attempt
        dialling.append(socket.create_connection(("127.0.0.1", proxy_port)))
        elsewhere = socket.create_connection(("127.0.0.1", other_port))
        attempt._set_phase(AttemptPhase.RUNNING)
        try:
            attempt.request_stop()
            assert returned.wait(10), "the blocked Stop was never freed"
            assert _is_cut(dialling[0])
            assert not _is_cut(older)
            assert not _is_cut(elsewhere)

            # a newer attempt exists: this one may cut nothing any more
            newer = GoAttempt(company_id=COMPANY, database_url="postgresql://u:p@h:1/db",
                              jid=None, proxy_url=f"socks5://127.0.0.1:{proxy_port}",
                              post=lambda *_: None, log=log, scrub=lambda t: t)
            neonize_go._NEWEST = newer
            fresh = socket.create_connection(("127.0.0.1", proxy_port))
            assert attempt.cut_dial() == 0
            assert not _is_cut(fresh)
            fresh.close()
        finally:
            neonize_go._NEWEST = None
            for s in (older, dialling[0], elsewhere):
                s.close()


def test_tcp_sockets_sees_this_process_and_shutdown_checks_the_descriptor() -> None:
    with _stalling_listener() as port:
        client = socket.create_connection(("127.0.0.1", port))
        try:
            inode = tcp_sockets.socket_inodes()
            mine = [s for s in tcp_sockets.tcp_sockets() if s.fd == client.fileno()]
            assert len(mine) == 1
            assert (mine[0].peer_ip, mine[0].peer_port) == ("127.0.0.1", port)
            assert mine[0].inode in inode
            stale = tcp_sockets.TcpSocket(mine[0].inode + 1_000_000, client.fileno(),
                                          "127.0.0.1", port)
            assert not tcp_sockets.shutdown(stale), "a descriptor now holding another socket"
            assert not _is_cut(client)
            assert tcp_sockets.shutdown(mine[0])
            assert _is_cut(client)
        finally:
            client.close()


@contextmanager
def _stalling_listener() -> Iterator[int]:
    """A loopback TCP listener (its port) that accepts and never says anything."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def _is_cut(sock: socket.socket) -> bool:
    """Our side was shut down: reading returns EOF at once instead of blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)
