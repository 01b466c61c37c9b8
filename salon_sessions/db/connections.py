"""How every process of the project connects to PostgreSQL: one rule for connection names,
pool sizes and running behind a transaction-mode PgBouncer.

Why one module: a platform engineer sizing PostgreSQL counts backends by
`application_name` (`pg_stat_activity`), so every connection says which session it serves
and what for (`salon-lock:<company>`, `salon-tables:<company>`, `salon-neonize:<company>:…`
for whatsmeow's store, `salon-operator`, `salon-api`, …). And behind a transaction-mode
pooler asyncpg must not use named prepared statements (a statement prepared in one
transaction's server connection is missing in the next one's): `statement_cache_size=0`
makes asyncpg use the unnamed statement, which PgBouncer supports in every mode. Nor may a
pool send asyncpg's reset query when it takes a connection back (`RESET ALL`, `SELECT
pg_advisory_unlock_all()`, ...): it runs on whichever server connection PgBouncer picks,
and `RESET ALL` sets `application_name` back to that server connection's default, which
PgBouncer then records as the client's own (verified with PgBouncer 1.18: every later
transaction of the pool ran unnamed). asyncpg still rolls back an open transaction.

Pools shrink to zero: `min_size=0` and `max_inactive_connection_lifetime` close what an idle
process does not use, so an idle session worker holds only its lock connection (direct) and
whatever whatsmeow's store keeps open.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from salon_sessions.core.settings import DatabasePooler, SecretUrl


class TransactionPooledConnection(asyncpg.Connection):
    """A connection to a transaction-mode pooler: no reset query when a pool takes it back
    (asyncpg's documented way: `get_reset_query`; see the module docstring). asyncpg still
    rolls back an open transaction."""

    behind_transaction_pooler = True
    """Readable through a pool's connection proxy too (`behind_transaction_pooler`)."""

    def get_reset_query(self) -> str:
        return ""


def behind_transaction_pooler(conn: Any) -> bool:
    """Whether `conn` (a connection, or a pool's proxy of one) is a PgBouncer client in
    transaction mode rather than a PostgreSQL backend of its own."""
    return bool(getattr(conn, "behind_transaction_pooler", False))


def connect_options(application_name: str, pooler: DatabasePooler = "none") -> dict[str, Any]:
    """asyncpg keyword arguments for a connection named `application_name`."""
    options: dict[str, Any] = {"server_settings": {"application_name": application_name[:63]}}
    if pooler == "transaction":
        options["statement_cache_size"] = 0
        options["connection_class"] = TransactionPooledConnection
    return options


def _dsn(url: SecretUrl | str) -> str:
    return url.get_secret_value() if isinstance(url, SecretUrl) else url


async def connect(url: SecretUrl | str, application_name: str, *,
                  pooler: DatabasePooler = "none", connect_timeout_s: float = 5.0,
                  ) -> asyncpg.Connection:
    """One connection (for the session lock and migrations: pass the *direct* URL)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        _dsn(url), timeout=connect_timeout_s, **connect_options(application_name, pooler))
    return conn


async def create_pool(url: SecretUrl | str, application_name: str, *,
                      pooler: DatabasePooler = "none", max_size: int = 1,
                      idle_s: float = 30.0, **extra: Any) -> asyncpg.Pool:
    """A pool that holds nothing while unused (min 0; closed after `idle_s` unused)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        _dsn(url), min_size=0, max_size=max_size, max_inactive_connection_lifetime=idle_s,
        **connect_options(application_name, pooler), **extra)
    return pool
