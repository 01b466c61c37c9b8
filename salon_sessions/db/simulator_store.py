"""The simulator driver's device store: `simulator_device` and `simulator_lid_map`.

Like whatsmeow's store for the neonize driver, the simulated "server" keeps the session's
linked device in PostgreSQL, so that a linked session resumes after a restart without a new
link (`worker.simulator`). The tables are created by migration `0003_simulator_store.sql`
(a session's database role runs no DDL) and deleted with the session by `db.credentials`
(`db.company_tables`); the queries are here so that every query on the project's tables is
in `db/`.
"""

from __future__ import annotations

import asyncpg


class SimulatorStore:
    """One company's rows, on the worker's pool (not closed here). Its `phone_for_lid` makes
    it the driver's `core.phone.LidResolver`."""

    def __init__(self, pool: asyncpg.Pool, company_id: str) -> None:
        self._pool = pool
        self._company = company_id

    async def device(self) -> str | None:
        """The linked device's JID, or None."""
        row = await self._pool.fetchrow(
            "SELECT jid FROM simulator_device WHERE company_id = $1", self._company)
        return None if row is None else str(row["jid"])

    async def save_device(self, jid: str, phone: str, push_name: str) -> None:
        """Record the device a pairing linked (a relink replaces the JID and phone)."""
        await self._pool.execute(
            "INSERT INTO simulator_device (company_id, jid, phone, push_name) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (company_id) DO UPDATE "
            "SET jid = EXCLUDED.jid, phone = EXCLUDED.phone", self._company, jid, phone,
            push_name)

    async def forget_device(self) -> None:
        await self._pool.execute("DELETE FROM simulator_device WHERE company_id = $1",
                                 self._company)

    async def map_lid(self, lid: str, phone: str) -> None:
        await self._pool.execute(
            "INSERT INTO simulator_lid_map (company_id, lid, phone) VALUES ($1, $2, $3)"
            " ON CONFLICT (company_id, lid) DO UPDATE SET phone = EXCLUDED.phone",
            self._company, lid, phone)

    async def phone_for_lid(self, lid_user: str) -> str | None:
        row = await self._pool.fetchrow(
            "SELECT phone FROM simulator_lid_map WHERE company_id = $1 AND lid = $2",
            self._company, lid_user)
        return None if row is None else str(row["phone"])
