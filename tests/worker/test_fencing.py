"""Fencing (issue 10): a lost lock is always noticed, only the proven holder speaks for the
session, and PostgreSQL restarts under many workers leave exactly one holder per session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from devstack import stack as devstack_stack
from devstack.procs import free_port
from devstack.stack import StackInfo
from salon_sessions.core import channels
from salon_sessions.db import locks
from salon_sessions.db.migrator import migrate_database
from salon_sessions.worker.fence import STATE_FILE_NAME
from salon_sessions.worker.lock import SessionLock
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import WorkerProc, observing

pytestmark = pytest.mark.slow


# ---- the root cause, deterministically ---------------------------------------------------

@contextlib.asynccontextmanager
async def eof_delaying_proxy(dsn: str, delay_s: float) -> AsyncIterator[str]:
    """A TCP proxy to PostgreSQL that passes data at once but the server's EOF only after
    `delay_s`: the client reads a FATAL and can still send before it sees the close (the
    window in which asyncpg fails with InternalClientError and skips its listeners)."""
    host_port = dsn.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   eof_delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        await asyncio.sleep(eof_delay)
        writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_r, server_w, 0), pipe(server_r, client_w, delay_s),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    proxy_port = server.sockets[0].getsockname()[1]
    try:
        yield dsn.replace(f"@{host_port}/", f"@127.0.0.1:{proxy_port}/")
    finally:
        server.close()


async def test_a_lock_whose_backend_is_terminated_is_lost_whatever_asyncpg_raises(
        database: str, company: str) -> None:
    """pg_terminate_backend sends the same FATAL 57P01 as a fast shutdown. Through the proxy
    the next proof fails with asyncpg's InternalClientError, which the old keep-alive did not
    catch, and asyncpg's abort skips the termination listener: nothing noticed."""
    await migrate_database(database)  # the lock functions (db.locks)
    async with eof_delaying_proxy(database, delay_s=4.0) as proxied:
        lock = SessionLock(proxied, company, check_s=0.5)
        await lock.acquire()
        try:
            assert lock.held
            pid = lock.backend_pid
            admin = await asyncpg.connect(database)
            try:
                assert await locks.lock_holder_pids(admin, locks.session_lock_key(company)) \
                    == [pid]
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            await asyncio.wait_for(lock.lost.wait(), 30)
            assert lock.lost_at is not None
            assert not lock.held
        finally:
            await lock.release()


async def test_proof_reads_pg_locks_for_this_backend(database: str, company: str) -> None:
    """The proof is about the lock, not the connection: a connection that answers but has
    released its lock (or holds another key) proves nothing."""
    await migrate_database(database)  # the lock functions (db.locks)
    conn = await asyncpg.connect(database)
    try:
        assert not await locks.session_lock_held(conn, company)
        assert await locks.try_session_lock(conn, company)
        assert await locks.session_lock_held(conn, company)
        assert not await locks.session_lock_held(conn, "company_1")
        assert await locks.release_session_lock(conn, company)
        assert not await locks.session_lock_held(conn, company)
        # the bigint split, through the administrator's any-key path of the same functions
        for k in (-1, -(2**63), 2**63 - 1, 0, 2**32, -(2**32) - 1):
            assert await conn.fetchval("SELECT salon_session_lock_try($1)", k)
            assert await conn.fetchval("SELECT salon_session_lock_held($1)", k)
            assert not await conn.fetchval("SELECT salon_session_lock_held($1)", k ^ 1)
            assert await conn.fetchval("SELECT salon_session_lock_release($1)", k)
    finally:
        await conn.close()


# ---- a standby is silent -------------------------------------------------------------------

def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_a_standby_never_writes_the_state_hash_nor_answers_pings(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers("w0")
        await obs.wait_state(lambda s: s.get("lock") == "holding the session lock"
                             and s.get("phase") == "AwaitingLink")
        port = free_port()
        standby = workers("w1", env={"SALON_METRICS_PORT": str(port)})
        standby_key = channels.standby_key(company, "w1")
        seen: set[bytes] = set()
        async with asyncio.timeout(30):  # the standby heartbeats its own key twice ...
            while len(seen) < 2:
                beat = await obs.redis.hget(standby_key, "heartbeat_at")
                if beat:
                    seen.add(beat)
                state = await obs.state()  # ... and meanwhile never touches the session's
                assert state.get("pod") == "w0", state
                await asyncio.sleep(0.1)
        assert "standing by" in standby.log()
        assert (await obs.redis.hget(standby_key, "lock")) == b"waiting for the session lock"

        pong = await obs.ping()
        async with asyncio.timeout(30):  # the standby got that ping too, and ignored it
            while metric(port, "salon_worker_pings_ignored_total") < 1:
                await asyncio.sleep(0.1)
        assert [p["data"]["correlation_id"] for p in obs.pongs].count(
            pong["data"]["correlation_id"]) == 1
        assert metric(port, "salon_worker_pings_answered_total") == 0
        assert (await obs.state())["pod"] == "w0"


# ---- PostgreSQL restarts under many workers ------------------------------------------------

SESSIONS = 20
STANDBYS = 3
RESTARTS = 5


def fence_file(w: WorkerProc) -> dict[str, object] | None:
    try:
        return dict(json.loads((w.tmpdir / STATE_FILE_NAME).read_text()))
    except (OSError, ValueError):
        return None


async def holders(dsn: str, companies: list[str]) -> dict[str, list[int]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {c: await locks.lock_holder_pids(conn, locks.session_lock_key(c))
                for c in companies}
    finally:
        await conn.close()


async def test_postgres_restarts_leave_exactly_one_proven_holder_per_session(
        stack: StackInfo, database: str, redis_url: str, tmp_path: Path) -> None:
    companies = [f"company_{random.randint(10**8, 10**9)}" for _ in range(SESSIONS)]
    await migrate_database(database)
    conn = await asyncpg.connect(database)
    try:  # every session already linked: the workers connect without a scan
        for i, c in enumerate(companies):
            await conn.execute("INSERT INTO simulator_device (company_id, jid, phone) "
                               "VALUES ($1, $2, $3)", c, f"7968648{i:04d}:1@s.whatsapp.net",
                               f"7968648{i:04d}")
    finally:
        await conn.close()
    env = {"SALON_LOCK_CHECK_S": "0.5", "SALON_LOCK_LOST_EXIT_S": "600",
           "SALON_LOG_LEVEL": "WARNING"}
    procs = [WorkerProc(tmp_path, database, redis_url, c, name=f"a{i}", env=env).start()
             for i, c in enumerate(companies)]
    procs += [WorkerProc(tmp_path, database, redis_url, c, name=f"b{i}", env=env).start()
              for i, c in enumerate(companies[:STANDBYS])]
    redis = Redis.from_url(redis_url)

    async def settled() -> str:
        """'' when every session has exactly one holder in pg_locks, that holder's worker
        writes connected=true, and no worker claims the lock without holding it."""
        held = await holders(database, companies)
        holder_pod: dict[str, str] = {}
        for w in procs:
            assert w.proc is not None
            assert w.proc.poll() is None, f"{w.name} exited: {w.log()}"
            f = fence_file(w)
            if f is None:
                return f"{w.name}: no fence file yet"
            claims = f["state"]["holding_since"] is not None  # type: ignore[index]
            if claims and f["lock_backend_pid"] not in held[w.company]:
                return f"{w.name} claims the lock of {w.company} without holding it: {f}"
            if f["lock_backend_pid"] in held[w.company]:
                holder_pod[w.company] = w.name
        for c in companies:
            if len(held[c]) != 1:
                return f"{c}: holders {held[c]}"
            state = {k.decode(): v.decode() for k, v in
                     (await redis.hgetall(channels.session_state_key(c))).items()}
            if state.get("connected") != "true" or state.get("pod") != holder_pod.get(c):
                return f"{c}: state {state}, holder {holder_pod.get(c)}"
        return ""

    async def until_settled(what: str) -> None:
        last = "?"
        try:
            async with asyncio.timeout(60):  # a bound against hanging, not a speed test
                while last := await settled():
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"{what}: {last}") from None

    async def one_pong_each() -> None:
        async with contextlib.AsyncExitStack() as exits:
            observers = [await exits.enter_async_context(observing(redis_url, c))
                         for c in companies[:STANDBYS]]
            for obs in observers:
                pong = await obs.ping()
                second = await obs.ping()  # the answer to a later ping: the first is done
                assert second["data"]["phase"] == "Connected"
                assert [p["data"]["correlation_id"] for p in obs.pongs].count(
                    pong["data"]["correlation_id"]) == 1, "two workers answered one ping"

    try:
        await until_settled("initially")
        await one_pong_each()
        info = stack
        for n in range(RESTARTS):
            await asyncio.to_thread(devstack_stack.stop_postgres, info)
            await asyncio.sleep(random.uniform(1, 4))  # PostgreSQL is down for a while
            await asyncio.to_thread(devstack_stack.start_postgres_again, info)
            await until_settled(f"after restart {n + 1}")
            await one_pong_each()
        lost = sum(w.log().count("lock lost") for w in procs)
        assert lost >= SESSIONS * RESTARTS  # every restart was noticed by every holder
    finally:
        await redis.aclose()
        for w in procs:
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        await asyncio.gather(*(w.stop() for w in procs))
