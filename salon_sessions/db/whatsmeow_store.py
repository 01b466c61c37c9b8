"""The neonize driver's view of the session store (whatsmeow's tables in PostgreSQL).

In `db/` with every other query on the project's tables (it was `worker.neonize_store`);
the neonize driver (`worker.neonize.driver`, `worker.neonize.go`) uses it.

whatsmeow (through neonize's Go core and `lib/pq`) keeps its `whatsmeow_*` tables in the
project's database; the project's migrations create them at the version neonize ships
(`0004_whatsmeow_store.sql`), so that whatsmeow runs no DDL with a session's own role, which
sees only its company's devices (`0005_tenancy.sql`). This module only reads them, plus two
maintenance writes: deleting a logged-out device's credentials and terminating the
database connections of finished Go clients (same role: allowed).

- `go_store_dsn`: the DSN handed to neonize. neonize picks PostgreSQL when the database
  name starts with `postgres` (`postgres://` or `postgresql://` URLs); `lib/pq` defaults
  to `sslmode=require`, unlike libpq and asyncpg (`prefer`), so `prefer` is made explicit
  when the URL has no `sslmode`; and each Go client gets its own `application_name`.
- `whatsmeow_device(jid, ...)`: one row per registered device (`jid` is
  `79686484488:32@s.whatsapp.net`); every other `whatsmeow_*` table references it
  `ON DELETE CASCADE`, so deleting that row removes all of a device's keys.
- `whatsmeow_lid_map(lid PRIMARY KEY, pn UNIQUE)`: LID user part -> phone user part,
  filled by whatsmeow from history syncs and message metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from salon_sessions.core.phone import InvalidPhone, e164_digits
from salon_sessions.db.connections import behind_transaction_pooler, create_pool

T = TypeVar("T")
DSN_SCHEMES: Final = ("postgres", "postgresql")
_MISSING: Final = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError,
                   asyncpg.InvalidSchemaNameError)


GO_CONNECT_TIMEOUT_S = 10
"""Seconds lib/pq waits for PostgreSQL to answer a new connection."""


def go_store_dsn(database_url: str, application_name: str) -> str:
    """The URL neonize's Go core opens the store with (see the module docstring)."""
    parts = urlsplit(database_url)
    if parts.scheme not in DSN_SCHEMES:
        raise ValueError("the session store must be a postgres:// or postgresql:// URL")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k != "application_name"]
    if not any(k == "sslmode" for k, _ in query):
        query.append(("sslmode", "prefer"))
    if not any(k == "connect_timeout" for k, _ in query):
        # lib/pq waits for ever on a PostgreSQL that does not answer; the client would sit in
        # STARTING, where it cannot be stopped
        query.append(("connect_timeout", str(GO_CONNECT_TIMEOUT_S)))
    query.append(("application_name", application_name))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query),
                       parts.fragment))


class NeonizeStore:
    """asyncpg access to the store: on the worker's pool when given (`pool`, not closed
    here), else on a lazily created one of a single connection that closes when idle."""

    def __init__(self, database_url: str, pool: asyncpg.Pool | None = None) -> None:
        parts = urlsplit(database_url)
        if parts.scheme not in DSN_SCHEMES:
            raise ValueError("the session store must be a postgres:// or postgresql:// URL")
        self._dsn = database_url
        self._pool: asyncpg.Pool | None = pool
        self._owns_pool = pool is None
        self._lock = asyncio.Lock()
        self._closed = False

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise RuntimeError("the session store is closed")
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._dsn, "salon-neonize-store")
            return self._pool

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await pool.close()

    async def _or_missing(self, query: Callable[[asyncpg.Pool], Awaitable[T]],
                          missing: T) -> T:
        """`query` on the pool; `missing` when its table (or column, or schema) is not
        there."""
        pool = await self._get_pool()
        try:
            return await query(pool)
        except _MISSING:
            return missing

    async def device_registered(self, jid: str) -> bool:
        """Whether whatsmeow holds credentials for device `jid`."""
        found = await self._or_missing(lambda pool: pool.fetchval(
            "SELECT 1 FROM whatsmeow_device WHERE jid = $1", jid), None)
        return found is not None

    async def linked_device(self, company_id: str) -> str | None:
        """The device JID the project's `salon_sessions` table records for a company
        (None when the table or the row does not exist)."""
        value = await self._or_missing(lambda pool: pool.fetchval(
            "SELECT device_jid FROM salon_sessions "
            "WHERE company_id = $1 AND deleted_at IS NULL", company_id), None)
        return value if isinstance(value, str) and value else None

    async def phone_for_lid(self, lid_user: str) -> str | None:
        """The phone (digits) whatsmeow mapped a LID user part to, or None."""
        if not lid_user.isascii() or not lid_user.isdigit():
            return None
        value = await self._or_missing(lambda pool: pool.fetchval(
            "SELECT pn FROM whatsmeow_lid_map WHERE lid = $1", lid_user), None)
        if not isinstance(value, str):
            return None
        try:
            return e164_digits(value)
        except InvalidPhone:
            return None

    async def delete_device(self, jid: str) -> bool:
        """Delete a device's credentials (every whatsmeow table cascades from its row)."""
        status = await self._or_missing(lambda pool: pool.execute(
            "DELETE FROM whatsmeow_device WHERE jid = $1", jid), "DELETE 0")
        return status != "DELETE 0"

    async def terminate_backends(self, application_names: list[str]) -> int:
        """Terminate this database's connections opened under these application names.

        Not behind a transaction-mode PgBouncer (the worker's pool made with
        `SALON_DATABASE_POOLER=transaction`): there the Go client's connections end at
        PgBouncer, and a server backend only shows the `application_name` of the last client
        PgBouncer lent it to. Terminating by that name would not close the finished client's
        connection, and could cut a server connection PgBouncer has just lent to another
        client of the session (the live Go store's or the worker's) in the middle of its
        transaction. PgBouncer closes the finished clients' idle connections itself
        (`client_idle_timeout`) and idle server connections (`server_idle_timeout`);
        docs/HELM.md, "Behind PgBouncer"."""
        if not application_names:
            return 0
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            if behind_transaction_pooler(conn):
                return 0
            value = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = ANY($1::text[])", application_names)
        return int(value or 0)

    async def whatsmeow_tables(self) -> list[str]:
        """The whatsmeow tables present in the database (sorted)."""
        pool = await self._get_pool()
        rows = await pool.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name LIKE 'whatsmeow\\_%' "
            "ORDER BY table_name")
        return [str(row["table_name"]) for row in rows]


class StoreLidResolver:
    """`salon_sessions.core.phone.LidResolver` backed by the session's store."""

    def __init__(self, store: NeonizeStore) -> None:
        self._store = store

    async def phone_for_lid(self, lid_user: str) -> str | None:
        return await self._store.phone_for_lid(lid_user)
