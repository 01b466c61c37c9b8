"""db.credentials: what the finalizer deletes, against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from salon_sessions.db.credentials import SessionInUse, delete_session_credentials
from salon_sessions.db.locks import session_lock_key
from salon_sessions.db.migrator import migrate_database
from tests.whatsmeow_rows import PER_DEVICE, device_column, insert_device

MINE, OTHER = "company_111", "company_222"
JID_MINE, JID_OLD, JID_OTHER = ("79686484488:3@s.whatsapp.net", "79686484488:2@s.whatsapp.net",
                                "79991112233:4@s.whatsapp.net")

pytestmark = pytest.mark.slow


async def seed(conn: asyncpg.Connection) -> None:
    for jid in (JID_MINE, JID_OLD, JID_OTHER):  # the migrations made whatsmeow's tables
        await insert_device(conn, jid, rows=True)
    await conn.execute("INSERT INTO whatsmeow_lid_map VALUES ('123', '79686484488')")
    for company, jid, phone in ((MINE, JID_MINE, "79686484488"),
                                (OTHER, JID_OTHER, "79991112233")):
        await conn.execute("INSERT INTO salon_sessions (company_id, namespace, resource_name, "
                           "device_jid, phone, linked_at) VALUES ($1, 'ns', $2, $3, $4, now())",
                           company, company.replace("_", "-"), jid, phone)
        await conn.execute("INSERT INTO salon_link_history (company_id, action, device_jid, "
                           "actor) VALUES ($1, 'linked', $2, 'worker')", company, jid)
        await conn.execute("INSERT INTO simulator_device (company_id, jid, phone) "
                           "VALUES ($1, $2, $3)", company, jid, phone)
    # an earlier device of the same company, still in the store
    await conn.execute("INSERT INTO salon_link_history (company_id, action, device_jid, "
                       "actor) VALUES ($1, 'linked', $2, 'worker')", MINE, JID_OLD)


async def jids(conn: asyncpg.Connection, table: str, column: str = "our_jid") -> set[str]:
    return {r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")}


async def test_deletes_every_device_of_the_session_and_nothing_else(database: str) -> None:
    await migrate_database(database)
    conn = await asyncpg.connect(database)
    try:
        await seed(conn)
        report = await delete_session_credentials(conn, "111", actor="operator",
                                                  reason="test")
        assert report.device_jids == sorted([JID_MINE, JID_OLD])
        assert (report.whatsmeow_devices, report.simulator_devices, report.project_rows) == (
            2, 1, 1)
        assert await jids(conn, "whatsmeow_device", "jid") == {JID_OTHER}
        for table in PER_DEVICE:
            assert await jids(conn, table, device_column(table)) == {JID_OTHER}, table
        assert await conn.fetchval("SELECT count(*) FROM whatsmeow_lid_map") == 1
        assert await jids(conn, "simulator_device", "company_id") == {OTHER}
        assert await jids(conn, "salon_sessions", "company_id") == {OTHER}
        last = await conn.fetchrow("SELECT action, actor, reason, phone FROM "
                                   "salon_link_history WHERE company_id = $1 "
                                   "ORDER BY id DESC LIMIT 1", MINE)
        assert dict(last) == {"action": "deleted", "actor": "operator", "reason": "test",
                              "phone": "79686484488"}
        again = await delete_session_credentials(conn, MINE)  # idempotent
        assert again.whatsmeow_devices == again.project_rows == 0
    finally:
        await conn.close()


async def test_refuses_while_a_worker_holds_the_session_lock(database: str) -> None:
    worker = await asyncpg.connect(database)
    conn = await asyncpg.connect(database)
    try:
        assert await worker.fetchval("SELECT pg_try_advisory_lock($1)", session_lock_key(MINE))
        with pytest.raises(SessionInUse):
            await delete_session_credentials(conn, MINE)
        await worker.execute("SELECT pg_advisory_unlock_all()")
        report = await delete_session_credentials(conn, MINE)  # no tables yet: nothing to do
        assert report.device_jids == []
    finally:
        await worker.close()
        await conn.close()
