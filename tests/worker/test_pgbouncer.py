"""Workers behind a real PgBouncer (Debian's, transaction mode), as docs/HELM.md describes it:
the tables and whatsmeow's store through the pooler, the session lock to PostgreSQL directly.

Real: PostgreSQL, PgBouncer (`devstack.pgbouncer`, authenticating the per-session role with
SCRAM through `auth_query`), Redis, the worker processes, neonize's Go core and lib/pq (up to
the network: there is no WhatsApp here).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from devstack.pgbouncer import PgBouncer, admin
from salon_sessions.core import channels
from salon_sessions.db.locks import session_lock_key
from tests.tenants import Tenants, session_roles
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import Observer, observing
from tests.worker.messages import command, results, sent

pytestmark = pytest.mark.slow


@dataclass
class Pooled:
    pg: PgBouncer
    t: Tenants
    company: str
    admin_dsn: str

    @property
    def role(self) -> str:
        return self.t.roles[self.company]

    def env(self) -> dict[str, str]:
        """What the operator gives a worker behind a pooler (`statefulset.database_env`)."""
        direct = self.t.dsn(self.company)
        return {"SALON_DATABASE_URL": self.pg.url(direct), "SALON_LOCK_DATABASE_URL": direct,
                "SALON_DATABASE_POOLER": "transaction"}

    def pooler_backends(self) -> set[int]:
        """PostgreSQL backend pids of PgBouncer's server connections."""
        return {int(s["remote_pid"]) for s in admin(self.pg, self.admin_dsn, "SHOW SERVERS")
                if s["remote_pid"].isdigit() and int(s["remote_pid"])}

    def clients(self) -> list[dict[str, str]]:
        """The role's client connections to PgBouncer."""
        return [c for c in admin(self.pg, self.admin_dsn, "SHOW CLIENTS")
                if c["user"] == self.role]

    async def backends(self) -> list[asyncpg.Record]:
        """The role's PostgreSQL backends (pid, application_name)."""
        return await self.t.admin.fetch(
            "SELECT pid, application_name FROM pg_stat_activity WHERE usename = $1",
            self.role)

    async def lock_holders(self) -> list[int]:
        return [r[0] for r in await self.t.admin.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND objid = ($1::bigint & 4294967295)::oid",
            session_lock_key(self.company))]


@pytest.fixture
async def pooled(pooler: PgBouncer, database: str, company: str) -> AsyncIterator[Pooled]:
    async with session_roles(database, company) as t:
        yield Pooled(pooler, t, company, database)


async def _wait(what: str, check: object, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            value = check() if callable(check) else check  # type: ignore[operator]
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(what)  # pragma: no cover


async def test_a_simulator_session_works_through_pgbouncer_with_the_lock_direct(
        workers: WorkerFactory, pooled: Pooled, redis_url: str, company: str) -> None:
    env = pooled.env()
    async with observing(redis_url, company) as obs:
        first = workers("w0", env=env)
        await obs.wait_event("qr")
        linked = await obs.scan()
        await obs.wait_event("connected")
        await _sends(obs, company, "through-pgbouncer-1")

        # the lock: one direct connection of the session's role, holding the advisory lock
        via_pooler = pooled.pooler_backends()
        backends = await pooled.backends()
        locks = [r["pid"] for r in backends if r["application_name"] == f"salon-lock:{company}"]
        assert len(locks) == 1, backends
        assert locks[0] not in via_pooler
        assert await pooled.lock_holders() == locks
        # nothing else of the session reaches PostgreSQL directly (the migration check
        # closed its connection); the tables' traffic arrived through PgBouncer
        direct = [r for r in backends if r["pid"] not in via_pooler]
        assert [r["application_name"] for r in direct] == [f"salon-lock:{company}"], backends
        assert any(r["pid"] in via_pooler for r in backends), (backends, via_pooler)
        clients = {c["application_name"] for c in pooled.clients()}
        assert f"salon-tables:{company}" in clients, clients
        row = await pooled.t.admin.fetchrow(
            "SELECT device_jid, phone FROM salon_sessions WHERE company_id = $1", company)
        assert (row["device_jid"], row["phone"]) == (linked["data"]["jid"], "79686484488")

        # a standby waits on the lock (direct) while the first holds it: one holder
        second = workers("w1", env=env)
        await _wait("the standby to stand by", lambda: "standing by" in second.log())
        await asyncio.sleep(1.0)
        assert len(await pooled.lock_holders()) == 1
        assert (await obs.state())["pod"] == "w0"
        # the standby's tries are direct too (it may hold a connection between tries or not)
        lock_backends = {r["pid"] for r in await pooled.backends()
                         if r["application_name"] == f"salon-lock:{company}"}
        assert 1 <= len(lock_backends) <= 2
        assert not lock_backends & pooled.pooler_backends()

        first.signal(signal.SIGKILL)
        await first.wait()
        await obs.wait_event("connected", count=2, timeout=30)
        state = await obs.wait_state(lambda s: s["pod"] == "w1" and s["connected"] == "true")
        assert state["linked"] == "true"
        assert len(obs.of("linked")) == 1  # resumed from the store read through PgBouncer
        holders = await pooled.lock_holders()
        assert len(holders) == 1
        assert holders[0] not in pooled.pooler_backends()
        await _sends(obs, company, "through-pgbouncer-2")
        for w in (first, second):
            assert "prepared statement" not in w.log(), w.log()[-2000:]
        second.signal(signal.SIGTERM)
        assert await second.wait(timeout=30) == 0
    assert "unsupported startup parameter" not in pooled.pg.log.read_text()


async def _sends(obs: Observer, company: str, key: str) -> None:
    """A send command goes out once and its result comes back `sent`."""
    before = len(await sent(obs, company))
    await obs.redis.xadd(channels.outbound_stream(company),
                         command(company, key, f"text {key}"))  # type: ignore[arg-type]
    async with asyncio.timeout(20):
        while not (mine := [r for r in await results(obs, company, 0)
                            if r["idempotency_key"] == key]):
            await asyncio.sleep(0.1)
    assert mine[0]["status"] == "sent", mine
    assert [s["text"] for s in (await sent(obs, company))[before:]] == [f"text {key}"]


async def test_a_neonize_worker_opens_its_store_through_pgbouncer(
        workers: WorkerFactory, pooled: Pooled, redis_url: str, company: str) -> None:
    """whatsmeow's store (lib/pq, which sends `extra_float_digits`) through PgBouncer: the
    worker sits in its network-retry loop, not in "session store unavailable"."""
    async with observing(redis_url, company) as obs:
        w = workers(driver="neonize", env=pooled.env())
        dropped = await obs.wait_event("disconnected", timeout=60)
        assert dropped["data"]["will_reconnect"] is True
        assert "store" not in dropped["data"]["reason"], dropped
        state = await obs.wait_state(lambda s: s["lock"] == "holding the session lock")
        assert (state["driver"], state["linked"]) == ("neonize", "false")
        # the Go client's store connections are PgBouncer clients, under the role
        await _wait("a lib/pq client of the store at PgBouncer", lambda: any(
            c["application_name"].startswith(f"salon-neonize:{company}:")
            for c in pooled.clients()))
        backends = await pooled.backends()
        via_pooler = pooled.pooler_backends()
        assert [r["application_name"] for r in backends if r["pid"] not in via_pooler] == [
            f"salon-lock:{company}"], backends
        await asyncio.sleep(3)  # a retry or two through the same store
        log = w.log()
        assert "session store unavailable" not in log, log[-3000:]
        assert "could not close finished clients' store connections" not in log, log[-3000:]
        assert "prepared statement" not in log, log[-3000:]
        assert w.proc is not None
        assert w.proc.poll() is None
        w.signal(signal.SIGTERM)
        assert await w.wait(timeout=30) == 0
    bouncer_log = pooled.pg.log.read_text()
    assert "unsupported startup parameter" not in bouncer_log, bouncer_log[-2000:]
