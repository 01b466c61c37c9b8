"""Schema migrations against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from salon_sessions.db.migrator import (
    VERSION_TABLE,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    migrate_database,
    pending,
    wait_for_migrations,
)

PROJECT_TABLES = {"salon_sessions", "salon_link_history", "salon_company_aliases",
                  "salon_post_connect_hooks", VERSION_TABLE, "simulator_device",
                  "simulator_lid_map", "salon_tenancy", "salon_session_roles",
                  "salon_device_owners"}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


def test_packaged_migrations_are_found_in_order() -> None:
    migrations = load_migrations()
    assert [m.label for m in migrations][:2] == ["0001_initial", "0002_post_connect_hooks"]
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    # whatsmeow's store is created by one migration (a session role runs no DDL) and
    # isolated by the tenancy ones; the others do not touch it
    assert [m.label for m in migrations if "whatsmeow_" in m.sql.replace("whatsmeow_*", "")
            ] == ["0004_whatsmeow_store", "0005_tenancy", "0006_lid_map_per_session",
                  "0007_tenancy_refusals"]


async def test_migrate_creates_the_schema_and_is_idempotent(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        assert await pending(conn) == load_migrations()
        first = await migrate(conn)
        assert first.applied == [m.label for m in load_migrations()]
        tables = await _tables(conn)
        assert {t for t in tables if not t.startswith("whatsmeow_")} == PROJECT_TABLES
        assert {"whatsmeow_version", "whatsmeow_device", "whatsmeow_sessions"} <= tables
        second = await migrate(conn)
        assert second.applied == []
        assert second.already == first.applied
        assert await pending(conn) == []
        rows = await conn.fetch(f"SELECT version, checksum FROM {VERSION_TABLE} ORDER BY 1")
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.version, m.checksum) for m in load_migrations()]
    finally:
        await conn.close()


async def test_schema_enforces_the_contracts(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO salon_sessions (company_id, namespace, resource_name) "
            "VALUES ('company_962302', 'default', 'company-962302')")
        for sql in (
            "INSERT INTO salon_sessions (company_id, namespace, resource_name) "
            "VALUES ('962302', 'default', 'x')",
            "UPDATE salon_sessions SET phone = '123@lid'",
            "UPDATE salon_sessions SET device_jid = '79686484488:32@s.whatsapp.net'",
            "INSERT INTO salon_sessions (company_id, namespace, resource_name) "
            "VALUES ('company_962302', 'other', 'company-962302')",
            "INSERT INTO salon_link_history (company_id, action) "
            "VALUES ('company_962302', 'linked')",
            "INSERT INTO salon_link_history (company_id, action) "
            "VALUES ('company_962302', 'exploded')",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await conn.execute(sql)
        await conn.execute(
            "UPDATE salon_sessions SET device_jid = '79686484488:32@s.whatsapp.net', "
            "linked_at = now(), phone = '79686484488', link_method = 'pairingCode'")
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_done(database: str) -> None:
    good = Migration(1, "good", "CREATE TABLE t_good (id int)")
    bad = Migration(2, "bad", "CREATE TABLE t_half (id int);\n"
                              "INSERT INTO t_half VALUES (1);\n"
                              "ALTER TABLE t_good ADD COLUMN extra int;\n"
                              "SELECT no_such_function();")
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(MigrationError, match="0002_bad failed and was rolled back"):
            await migrate(conn, [good, bad])
        assert await _tables(conn) == {"t_good", VERSION_TABLE}
        columns = await conn.fetch("SELECT column_name FROM information_schema.columns "
                                   "WHERE table_name = 't_good'")
        assert [c["column_name"] for c in columns] == ["id"]
        assert await conn.fetchval(f"SELECT array_agg(version) FROM {VERSION_TABLE}") == [1]
        # the lock was released: a corrected migration applies
        fixed = Migration(2, "bad", "CREATE TABLE t_half (id int)")
        assert (await migrate(conn, [good, fixed])).applied == ["0002_bad"]
    finally:
        await conn.close()


async def test_edited_applied_migration_and_newer_database_are_refused(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn, [Migration(1, "one", "CREATE TABLE t1 (id int)"),
                             Migration(2, "two", "CREATE TABLE t2 (id int)")])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, [Migration(1, "one", "CREATE TABLE t1 (id bigint)"),
                                 Migration(2, "two", "CREATE TABLE t2 (id int)")])
        with pytest.raises(MigrationError, match="newer release"):
            await migrate(conn, [Migration(1, "one", "CREATE TABLE t1 (id int)")])
    finally:
        await conn.close()


async def test_two_concurrent_runners_apply_each_migration_once(database: str) -> None:
    # The first migration holds the lock for a while, so the second runner must wait on
    # the advisory lock (without it, both would try to CREATE TABLE and one would fail).
    slow = [Migration(1, "slow", "SELECT pg_sleep(1); CREATE TABLE t_slow (id int)"),
            Migration(2, "next", "CREATE TABLE t_next (id int)")]
    first, second = await asyncpg.connect(database), await asyncpg.connect(database)
    try:
        reports = await asyncio.gather(migrate(first, slow), migrate(second, slow))
    finally:
        await first.close()
        await second.close()
    applied = sorted(label for r in reports for label in r.applied)
    assert applied == ["0001_slow", "0002_next"]
    assert sorted(len(r.applied) for r in reports) == [0, 2]


async def test_a_waiter_holds_no_connection_and_goes_on_once_migrated(database: str) -> None:
    """What a session worker does at start: it waits for the administrator's migrations
    instead of applying them, connecting only to check."""
    name = "salon-migrate:waiter"
    with pytest.raises(MigrationError, match=r"'0001_initial'.*`salon-sessions migrate up`"):
        await wait_for_migrations(database, name, timeout_s=0)
    started = time.monotonic()
    with pytest.raises(MigrationError, match=r"still pending after waiting 0\.5 s"):
        await wait_for_migrations(database, name, timeout_s=0.5, poll_s=0.1)
    assert 0.5 <= time.monotonic() - started < 5

    waiter = asyncio.create_task(wait_for_migrations(database, name, timeout_s=60, poll_s=1))
    observer = await asyncpg.connect(database)
    try:
        seen = []
        for _ in range(12):  # over two polls: a check's connection is closed before waiting
            await asyncio.sleep(0.2)
            seen.append(await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))
        assert max(seen) <= 1, seen
        assert 0 in seen, seen
        assert not waiter.done()
    finally:
        await observer.close()
    await migrate_database(database)
    report = await asyncio.wait_for(waiter, timeout=10)
    assert report.applied == []
    assert report.already == [m.label for m in load_migrations()]


def test_cli_migrate_up_and_status(database: str) -> None:
    env = {"SALON_DATABASE_URL": database, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "salon_sessions.cli", "migrate", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    status = cli("status")
    assert status.returncode == 3, status.stderr
    assert "0001_initial: pending" in status.stdout
    up = cli("up")
    assert up.returncode == 0, up.stderr
    assert "applied 0001_initial" in up.stdout
    again = cli("up")
    assert again.returncode == 0
    assert "0 applied now" in again.stdout
    status = cli("status")
    assert status.returncode == 0
    assert "pending" not in status.stdout
    password = database.split(":")[2].split("@")[0]
    assert password not in up.stdout + up.stderr
