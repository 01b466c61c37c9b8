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

import weakref
from typing import Any

import asyncpg

from salon_sessions.core.settings import DatabasePooler, SecretUrl


def connect_options(application_name: str, pooler: DatabasePooler = "none") -> dict[str, Any]:
    """asyncpg keyword arguments for a connection named `application_name`."""
    options: dict[str, Any] = {"server_settings": {"application_name": application_name[:63]}}
    if pooler == "transaction":
        options["statement_cache_size"] = 0
    return options


def _dsn(url: SecretUrl | str) -> str:
    return url.get_secret_value() if isinstance(url, SecretUrl) else url


_TRANSACTION_POOLED: weakref.WeakSet[asyncpg.Pool] = weakref.WeakSet()


def transaction_pooled(pool: asyncpg.Pool) -> bool:
    """Whether `pool` was made by `create_pool` for a transaction-mode pooler: its
    connections are PgBouncer's clients, not PostgreSQL backends of their own."""
    return pool in _TRANSACTION_POOLED


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """A pool's reset behind a transaction pooler: nothing session-level to undo (see the
    module docstring); asyncpg has already rolled back an open transaction."""


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
    if pooler == "transaction":
        extra.setdefault("reset", _no_session_reset)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        _dsn(url), min_size=0, max_size=max_size, max_inactive_connection_lifetime=idle_s,
        **connect_options(application_name, pooler), **extra)
    if pooler == "transaction":
        _TRANSACTION_POOLED.add(pool)
    return pool
