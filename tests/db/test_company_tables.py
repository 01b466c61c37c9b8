"""`db.company_tables` against the migrations: no table with a company's rows is left out of
what deleting a session decides."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

import salon_sessions
from salon_sessions.db.company_tables import COMPANY_TABLES, DELETED_WITH_SESSION
from salon_sessions.db.migrator import migrate


async def test_every_table_with_a_company_column_says_what_deletion_does(
        database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        rows = await conn.fetch(
            "SELECT c.table_schema, c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.column_name = 'company_id' AND t.table_type = 'BASE TABLE' "
            "AND c.table_schema NOT IN ('pg_catalog', 'information_schema')")
    finally:
        await conn.close()
    assert {r["table_schema"] for r in rows} == {"public"}
    assert {r["table_name"] for r in rows} == {t.name for t in COMPANY_TABLES}
    assert DELETED_WITH_SESSION == ("simulator_device", "simulator_lid_map",
                                    "salon_post_connect_hooks", "salon_sessions")
    assert len(COMPANY_TABLES) == len({t.name for t in COMPANY_TABLES})


def test_only_the_migrations_create_the_projects_tables() -> None:
    """A session's database role runs no DDL (0005_tenancy.sql): no module creates a table
    but the migrator (its own version table, before any migration) and `migrate
    company-ids` (the administrator's backup of a conversion, in its own schema)."""
    package = Path(salon_sessions.__file__).parent
    creating = {str(p.relative_to(package)) for p in package.rglob("*.py")
                if re.search(r"CREATE\s+(TEMP\w*\s+|UNLOGGED\s+)?TABLE", p.read_text(), re.I)}
    assert creating == {"db/migrator.py", "db/company_ids.py"}
