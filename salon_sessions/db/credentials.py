"""Delete one session's credentials (the operator's finalizer, `deletionPolicy: Delete`).

In one transaction:

- the whatsmeow store: the `whatsmeow_device` rows of every device JID the session ever
  linked (its `salon_sessions.device_jid`, its `linked` history rows, the devices bound to
  the company in `salon_device_owners`, the simulator's device). The other whatsmeow
  tables reference `whatsmeow_device(jid)` with `ON DELETE CASCADE` (identity keys,
  pre-keys, sessions, sender keys, app state, contacts, chat settings, message secrets, NCT
  salt, event and retry buffers); the ones that do not (`whatsmeow_privacy_tokens`) are
  cleared explicitly by their `our_jid` column.
  the session's own `whatsmeow_lid_map` (its role's schema) goes with the role (db.tenancy).
- the company's rows of every table `db.company_tables` marks `DELETED` (the simulator's
  store, `salon_post_connect_hooks`, `salon_sessions`), and `deleted` is appended to
  `salon_link_history` (which is append-only and keeps the earlier history).

Tables that do not exist (a database the neonize driver never used) are skipped. The
session's advisory lock is taken first (`pg_try_advisory_xact_lock`): while a worker still
holds it (it is connected with these credentials) nothing is deleted and `SessionInUse` is
raised, so the caller retries after stopping the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from salon_sessions.core.company import canonical_company_id
from salon_sessions.db.company_tables import DELETED_WITH_SESSION
from salon_sessions.db.locks import session_lock_key, try_xact_lock


class SessionInUse(Exception):
    """A worker still holds the session's lock (it runs with these credentials)."""


@dataclass
class DeletedCredentials:
    company_id: str
    device_jids: list[str] = field(default_factory=list)
    whatsmeow_devices: int = 0
    simulator_devices: int = 0
    project_rows: int = 0


async def _exists(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"))


async def _count(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    status = await conn.execute(sql, *args)
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


async def delete_session_credentials(conn: asyncpg.Connection, company_id: str, *,
                                     actor: str = "operator",
                                     reason: str = "SalonSession deleted") -> DeletedCredentials:
    company = canonical_company_id(company_id)
    report = DeletedCredentials(company)
    async with conn.transaction():
        if not await try_xact_lock(conn, session_lock_key(company)):
            raise SessionInUse(f"a worker still holds the session lock of {company}")
        jids: set[str] = set()
        phone: str | None = None
        if await _exists(conn, "salon_sessions"):
            row = await conn.fetchrow(
                "SELECT device_jid, phone FROM salon_sessions WHERE company_id = $1", company)
            if row is not None:
                phone = row["phone"]
                if row["device_jid"]:
                    jids.add(str(row["device_jid"]))
        if await _exists(conn, "salon_link_history"):
            jids.update(str(r["device_jid"]) for r in await conn.fetch(
                "SELECT DISTINCT device_jid FROM salon_link_history WHERE company_id = $1 "
                "AND device_jid IS NOT NULL", company))
        if await _exists(conn, "salon_device_owners"):
            jids.update(str(r["jid"]) for r in await conn.fetch(
                "SELECT jid FROM salon_device_owners WHERE company_id = $1", company))
        if await _exists(conn, "simulator_device"):
            jids.update(str(r["jid"]) for r in await conn.fetch(
                "SELECT jid FROM simulator_device WHERE company_id = $1", company))
        report.device_jids = sorted(jids)
        if jids:
            report.whatsmeow_devices = await _delete_whatsmeow(conn, sorted(jids))
        deleted: dict[str, int] = {}
        for table in DELETED_WITH_SESSION:
            if await _exists(conn, table):
                deleted[table] = await _count(
                    conn, f"DELETE FROM {table} WHERE company_id = $1", company)
        report.simulator_devices = deleted.get("simulator_device", 0)
        report.project_rows = deleted.get("salon_sessions", 0)
        if await _exists(conn, "salon_link_history"):
            await conn.execute(
                "INSERT INTO salon_link_history (company_id, action, device_jid, phone, actor,"
                " reason) VALUES ($1, 'deleted', $2, $3, $4, $5)", company,
                report.device_jids[0] if len(report.device_jids) == 1 else None, phone,
                actor, reason[:1024])
    return report


async def _delete_whatsmeow(conn: asyncpg.Connection, jids: list[str]) -> int:
    # tables keyed by our_jid without a foreign key to whatsmeow_device (privacy tokens)
    loose = await conn.fetch(
        """
        SELECT c.table_name FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.table_name LIKE 'whatsmeow\\_%'
          AND c.column_name = 'our_jid'
          AND NOT EXISTS (
            SELECT 1 FROM information_schema.table_constraints t
            WHERE t.table_schema = c.table_schema AND t.table_name = c.table_name
              AND t.constraint_type = 'FOREIGN KEY')
        """)
    for row in loose:
        table = str(row["table_name"])
        await conn.execute(f'DELETE FROM "{table}" WHERE our_jid = ANY($1::text[])', jids)
    if not await _exists(conn, "whatsmeow_device"):
        return 0
    return await _count(conn, "DELETE FROM whatsmeow_device WHERE jid = ANY($1::text[])", jids)
