"""Session roles for tests: a migrated database and one PostgreSQL role per company, as the
operator makes them (`db.tenancy`), dropped afterwards (roles outlive databases)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from salon_sessions.core.urls import with_credentials
from salon_sessions.db.migrator import migrate_database
from salon_sessions.db.tenancy import drop_session_role, ensure_session_role


@dataclass
class Tenants:
    admin_dsn: str
    admin: asyncpg.Connection
    roles: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    conns: list[asyncpg.Connection] = field(default_factory=list)

    def dsn(self, company: str) -> str:
        """The URL a session pod of `company` gets."""
        return with_credentials(self.admin_dsn, self.roles[company], self.passwords[company])

    async def connect(self, company: str) -> asyncpg.Connection:
        """A connection as `company`'s session role (closed at the end)."""
        conn = await asyncpg.connect(self.dsn(company))
        self.conns.append(conn)
        return conn


@asynccontextmanager
async def session_roles(database: str, *companies: str) -> AsyncIterator[Tenants]:
    await migrate_database(database)
    t = Tenants(database, await asyncpg.connect(database))
    try:
        for company in companies:
            t.passwords[company] = secrets.token_urlsafe(18)
            t.roles[company] = await ensure_session_role(t.admin, company,
                                                         t.passwords[company])
        yield t
    finally:
        for conn in t.conns:
            await conn.close()
        for company in companies:
            await drop_session_role(t.admin, company)
        await t.admin.close()
