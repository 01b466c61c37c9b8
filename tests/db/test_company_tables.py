"""`db.company_tables` against the migrations: no table with a company's rows is left out of
what deleting a session decides."""

from __future__ import annotations

import asyncpg

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
