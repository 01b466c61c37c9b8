"""Workers and drivers running with their session's own PostgreSQL role (`db.tenancy`), as
session pods do: their own work still works, with no DDL and no other company's rows.

Real: PostgreSQL, Redis, the worker process, neonize's Go core (up to the network).
"""

from __future__ import annotations

import signal

import asyncpg
import pytest

from devstack.stack import StackInfo
from salon_sessions.db.locks import session_lock_key
from salon_sessions.db.migrator import migrate_database
from salon_sessions.worker.driver import Disconnected, DriverFact
from salon_sessions.worker.neonize.driver import NeonizeDriver
from tests.conftest import fresh_database
from tests.helpers import wait_for
from tests.tenants import session_roles
from tests.whatsmeow_rows import insert_device
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import new_company, observing
from tests.worker.test_neonize_driver import ensure_store

pytestmark = pytest.mark.slow
JID = "79686484488:21@s.whatsapp.net"


async def test_a_simulator_worker_links_and_connects_with_its_session_role(
        workers: WorkerFactory, database: str, redis_url: str, company: str) -> None:
    other = new_company()
    async with session_roles(database, company, other) as t:
        await t.admin.execute("INSERT INTO salon_sessions (company_id, namespace, resource_name)"
                              " VALUES ($1, 'ns', 'other')", other)
        async with observing(redis_url, company) as obs:
            w = workers(env={"SALON_DATABASE_URL": t.dsn(company)})
            await obs.wait_event("qr")
            linked = await obs.scan(phone="79686484488")
            await obs.wait_event("connected")
            holder = await t.admin.fetchval(
                "SELECT a.usename FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
                "AND l.objid = ($1::bigint & 4294967295)::oid", session_lock_key(company))
            assert holder == t.roles[company]  # its own lock, through the wrappers
            w.signal(signal.SIGTERM)
            assert await w.wait(timeout=30) == 0
        row = await t.admin.fetchrow("SELECT device_jid, phone FROM salon_sessions "
                                     "WHERE company_id = $1", company)
        assert (row["device_jid"], row["phone"]) == (linked["data"]["jid"], "79686484488")
        assert await t.admin.fetchval("SELECT count(*) FROM simulator_device "
                                      "WHERE company_id = $1", company) == 1
        assert await t.admin.fetchval("SELECT resource_name FROM salon_sessions "
                                      "WHERE company_id = $1", other) == "other"


async def test_the_neonize_store_opens_and_resumes_only_its_own_device(database: str) -> None:
    mine, other = "company_962302", "company_1"
    async with session_roles(database, mine, other) as t:
        conn = await t.connect(mine)
        await insert_device(conn, JID)  # as whatsmeow saves it at pairing, as this role
        await conn.execute("INSERT INTO salon_sessions (company_id, namespace, resource_name, "
                           "device_jid, linked_at) VALUES ($1, 'ns', 'mine', $2, now())",
                           mine, JID)
        own = NeonizeDriver(t.dsn(mine), mine)
        foreign = NeonizeDriver(t.dsn(other), other, device_jid=JID)
        fresh = NeonizeDriver(t.dsn(other), other)
        try:
            assert await own.stored_device() == JID
            assert await foreign.stored_device() is None
            for driver in (own, fresh):  # whatsmeow opens the store: reads, no DDL
                events: list[DriverFact] = []

                async def sink(event: DriverFact, into: list[DriverFact] = events) -> None:
                    into.append(event)

                await driver.start(sink)
                down = await wait_for(
                    lambda into=events: next(
                        (e for e in into if isinstance(e, Disconnected)), None),
                    what="the first connection attempt")
                assert "websocket" in down.reason, down.reason  # the network, not the store
            assert await own.stored_device() == JID
        finally:
            for driver in (own, foreign, fresh):
                await driver.close()


async def test_the_migrations_make_whatsmeows_schema_as_neonize_does(
        stack: StackInfo, database: str) -> None:
    """If neonize ships a newer store schema, whatsmeow would run DDL that session roles may
    not: this fails until a migration brings the schema up to it."""
    await migrate_database(database)
    with fresh_database(stack, "nz") as by_neonize:
        await ensure_store(by_neonize)
        assert await whatsmeow_schema(database) == await whatsmeow_schema(by_neonize)


async def whatsmeow_schema(dsn: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
            "column_default FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name LIKE 'whatsmeow%' ORDER BY 1, 3")
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid::regclass::text LIKE 'whatsmeow%' ORDER BY 1, 2")
        indexes = await conn.fetch("SELECT tablename, indexname, indexdef FROM pg_indexes "
                                   "WHERE tablename LIKE 'whatsmeow%' ORDER BY 1, 2")
        version = await conn.fetch("SELECT version, compat FROM whatsmeow_version")
    finally:
        await conn.close()
    return {"columns": [tuple(r) for r in columns],
            "constraints": [tuple(r) for r in constraints],
            "indexes": [tuple(r) for r in indexes], "version": [tuple(r) for r in version]}
