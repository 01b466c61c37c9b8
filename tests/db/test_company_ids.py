"""`migrate company-ids` on a seeded legacy database with mixed forms."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from salon_sessions.db.company_ids import CompanyIdMigrationError, convert_company_ids
from salon_sessions.db.migrator import migrate

LEGACY = """
CREATE TABLE bookings (id int PRIMARY KEY, company_id text, note text);
INSERT INTO bookings VALUES (1, '962302', 'a'), (2, '962302', 'b'), (3, '962303', 'c'),
                            (4, NULL, 'no company'), (5, ' 962305 ', 'padded');
CREATE TABLE clients (id int PRIMARY KEY, company_id varchar(64) NOT NULL);
INSERT INTO clients VALUES (1, 'company_962302'), (2, 'company_962303'), (3, 'company_1');
CREATE TABLE salon_settings (company_id text PRIMARY KEY, value text);
INSERT INTO salon_settings VALUES ('962302', 'x'), ('962304', 'y');
CREATE SCHEMA legacy;
CREATE TABLE legacy.audit (company_id text, what text);
INSERT INTO legacy.audit VALUES ('company_962302', 'old'), ('company_962302', 'older');
CREATE VIEW bookings_view AS SELECT company_id FROM bookings;
"""
TABLES = ["bookings", "clients", "salon_settings", "legacy.audit", "salon_sessions"]


async def _seeded(dsn: str, extra: str = "") -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)  # the project's own tables are there too, already canonical
    await conn.execute("INSERT INTO salon_sessions (company_id, namespace, resource_name) "
                       "VALUES ('company_962302', 'default', 'company-962302')")
    await conn.execute(LEGACY + extra)
    return conn


async def _snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    snap: dict[str, Any] = {
        t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
        for t in TABLES
    }
    snap["backup schema"] = await conn.fetchval("SELECT to_regnamespace('salon_backup')")
    return snap


async def _ids(conn: asyncpg.Connection, table: str) -> list[str | None]:
    return [r[0] for r in await conn.fetch(f"SELECT company_id FROM {table} ORDER BY 1")]


async def test_dry_run_prints_the_plan_and_changes_nothing(database: str) -> None:
    conn = await _seeded(database)
    lines: list[str] = []
    try:
        before = await _snapshot(conn)
        result = await convert_company_ids(conn, dry_run=True, out=lines.append)
        assert await _snapshot(conn) == before
    finally:
        await conn.close()
    assert result.backup_table is None
    assert result.plan.rows_to_change() == 6
    text = "\n".join(lines)
    assert "public.bookings.company_id: 5 row(s), 4 to convert" in text
    assert "  '962302' -> 'company_962302' (2 row(s))" in text
    assert "  ' 962305 ' -> 'company_962305' (1 row(s))" in text
    assert "public.clients.company_id: 3 row(s), 0 to convert" in text
    assert "legacy.audit.company_id" in text
    assert "would convert 6 row(s) in 2 column(s); nothing was changed" in text


async def test_converts_every_legacy_form_with_a_backup_first(database: str) -> None:
    conn = await _seeded(database)
    try:
        before = await _snapshot(conn)
        result = await convert_company_ids(conn, dry_run=False, out=lambda _: None)
        assert result.converted_rows == 6
        assert await _ids(conn, "bookings") == [
            "company_962302", "company_962302", "company_962303", "company_962305", None]
        assert await _ids(conn, "salon_settings") == ["company_962302", "company_962304"]
        assert await _ids(conn, "clients") == ["company_1", "company_962302", "company_962303"]
        assert await _ids(conn, "legacy.audit") == ["company_962302", "company_962302"]
        for table in TABLES:  # same rows, other columns untouched
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == len(before[table])
        assert [r[2] for r in before["bookings"]] == [
            r["note"] for r in await conn.fetch("SELECT note FROM bookings ORDER BY id")]

        backup = result.backup_table
        assert backup is not None
        assert backup.startswith("salon_backup.company_ids_")
        rows = await conn.fetch(f"SELECT table_name, old_value, new_value, row_count "
                                f"FROM {backup} ORDER BY 1, 2")
        assert [tuple(r) for r in rows] == [
            ("bookings", " 962305 ", "company_962305", 1),
            ("bookings", "962302", "company_962302", 2),
            ("bookings", "962303", "company_962303", 1),
            ("salon_settings", "962302", "company_962302", 1),
            ("salon_settings", "962304", "company_962304", 1),
        ]
        # the backup undoes the conversion exactly
        for table in ("bookings", "salon_settings"):
            await conn.execute(
                f"UPDATE {table} t SET company_id = b.old_value FROM {backup} b "
                f"WHERE b.table_name = '{table}' AND t.company_id = b.new_value")
        restored = await _snapshot(conn)
        restored["backup schema"] = before["backup schema"]
        assert restored == before
    finally:
        await conn.close()


async def test_rerun_after_conversion_changes_nothing(database: str) -> None:
    conn = await _seeded(database)
    lines: list[str] = []
    try:
        await convert_company_ids(conn, dry_run=False, out=lambda _: None)
        again = await convert_company_ids(conn, dry_run=False, out=lines.append)
    finally:
        await conn.close()
    assert again.backup_table is None
    assert again.converted_rows == 0
    assert "nothing to convert" in lines[-1]


async def test_both_forms_for_one_company_fail_cleanly_and_change_nothing(
        database: str) -> None:
    conn = await _seeded(database, "INSERT INTO legacy.audit VALUES ('962302', 'dup');")
    try:
        before = await _snapshot(conn)
        for dry_run in (True, False):
            with pytest.raises(CompanyIdMigrationError) as caught:
                await convert_company_ids(conn, dry_run=dry_run, out=lambda _: None)
            message = str(caught.value)
            assert "nothing was changed" in message
            assert ("legacy.audit.company_id: conflict: company_962302 is stored as "
                    "'962302' (1 row(s)), 'company_962302' (2 row(s))") in message
            assert await _snapshot(conn) == before
        assert before["backup schema"] is None
    finally:
        await conn.close()


@pytest.mark.parametrize(("extra", "problem"), [
    ("INSERT INTO bookings VALUES (9, 'salon-7', 'bad');",
     "public.bookings.company_id: 'salon-7' in 1 row(s) is not a company id"),
    ("INSERT INTO bookings VALUES (9, '', 'empty');",
     "public.bookings.company_id: '' in 1 row(s) is not a company id (it is empty)"),
    ("CREATE TABLE stats (company_id bigint); INSERT INTO stats VALUES (962302);",
     "public.stats.company_id is of type bigint"),
    ("CREATE TABLE short (company_id varchar(10));",
     "public.short.company_id is varchar(10)"),
])
async def test_values_and_columns_that_cannot_be_converted_are_refused(
        database: str, extra: str, problem: str) -> None:
    conn = await _seeded(database, extra)
    try:
        before = await _snapshot(conn)
        with pytest.raises(CompanyIdMigrationError, match="nothing was changed") as caught:
            await convert_company_ids(conn, dry_run=False, out=lambda _: None)
        assert problem in str(caught.value)
        assert await _snapshot(conn) == before
    finally:
        await conn.close()


async def test_tables_can_be_selected(database: str) -> None:
    conn = await _seeded(database, "CREATE TABLE stats (company_id bigint);")
    try:
        result = await convert_company_ids(conn, dry_run=False, out=lambda _: None,
                                           tables=["bookings", "public.clients"])
        assert sorted(str(c) for c in result.plan.columns) == [
            "public.bookings.company_id", "public.clients.company_id"]
        assert await _ids(conn, "salon_settings") == ["962302", "962304"]
        with pytest.raises(CompanyIdMigrationError, match="'nope' has no column"):
            await convert_company_ids(conn, dry_run=True, out=lambda _: None, tables=["nope"])
    finally:
        await conn.close()


async def test_failed_verification_rolls_everything_back(database: str) -> None:
    # A legacy trigger that writes the old form back: the update "succeeds", but the
    # verification finds legacy ids and the whole run, backup included, is rolled back.
    sneaky = """
    CREATE FUNCTION keep_legacy() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.company_id := OLD.company_id; RETURN NEW; END $$;
    CREATE TRIGGER keep_legacy BEFORE UPDATE ON salon_settings
        FOR EACH ROW EXECUTE FUNCTION keep_legacy();
    """
    conn = await _seeded(database, sneaky)
    try:
        before = await _snapshot(conn)
        with pytest.raises(CompanyIdMigrationError, match="verification failed") as caught:
            await convert_company_ids(conn, dry_run=False, out=lambda _: None)
        assert "public.salon_settings.company_id: 2 row(s) still not canonical" in str(
            caught.value)
        assert await _snapshot(conn) == before
    finally:
        await conn.close()


async def test_cli(database: str) -> None:
    conn = await _seeded(database)
    await conn.close()
    env = {"SALON_DATABASE_URL": database, "PATH": "/usr/bin:/bin"}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "salon_sessions.cli", "migrate", "company-ids", *args],
            env=env, capture_output=True, text=True, timeout=60)

    dry = await cli("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "'962302' -> 'company_962302' (2 row(s))" in dry.stdout
    assert "nothing was changed" in dry.stdout
    real = await cli()
    assert real.returncode == 0, real.stderr
    assert "backup written to salon_backup.company_ids_" in real.stdout
    assert "verified: row counts match and no legacy form remains" in real.stdout

    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO bookings VALUES (10, '962302', 'late legacy row')")
        before = await _snapshot(conn)
        conflict = await cli()
        assert await _snapshot(conn) == before
    finally:
        await conn.close()
    assert conflict.returncode == 1
    assert "conflict: company_962302 is stored as" in conflict.stderr
    assert "nothing was changed" in conflict.stderr
