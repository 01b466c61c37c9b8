"""The worker's rows of a session's link: `salon_sessions` (the current device) and the
append-only `salon_link_history`.

Here, in `db/`, because every query on the project's tables lives in the storage layer: the
worker says what happened (linked, logged out) and this module says how it is recorded, each
in one transaction so that the current row and its history never disagree.
"""

from __future__ import annotations

import asyncpg

from salon_sessions.core.events import LinkedData

MAX_REASON_CHARS = 1024


async def record_link(pool: asyncpg.Pool, company_id: str, namespace: str, session_name: str,
                      linked: LinkedData, actor: str) -> None:
    """A device linked: the session's row points to it, and `linked` joins the history."""
    method = linked.method.value if linked.method else None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO salon_sessions (company_id, namespace, resource_name, device_jid,
                                        phone, link_method, linked_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, now(), now())
            ON CONFLICT (company_id) DO UPDATE SET device_jid = EXCLUDED.device_jid,
                phone = EXCLUDED.phone, link_method = EXCLUDED.link_method,
                linked_at = now(), logged_out_at = NULL, updated_at = now()
            """,
            company_id, namespace, session_name, linked.jid, linked.phone, method)
        await conn.execute(
            "INSERT INTO salon_link_history (company_id, action, method, device_jid, "
            "phone, actor) VALUES ($1, 'linked', $2, $3, $4, $5)",
            company_id, method, linked.jid, linked.phone, actor)


async def record_logout(pool: asyncpg.Pool, company_id: str, reason: str, actor: str) -> None:
    """The device logged out: the session's row forgets it, and `logged_out` joins the
    history with the reason (bounded)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE salon_sessions SET device_jid = NULL, logged_out_at = now(), "
            "linked_at = NULL, updated_at = now() WHERE company_id = $1", company_id)
        await conn.execute(
            "INSERT INTO salon_link_history (company_id, action, actor, reason) "
            "VALUES ($1, 'logged_out', $2, $3)", company_id, actor, reason[:MAX_REASON_CHARS])
