"""`db.connections` behind a real PgBouncer in transaction mode (`devstack.pgbouncer`, one
server connection per role so that every client shares it): connection names survive, no
named prepared statement is needed, and the operator's cleanup works through it."""

from __future__ import annotations

import asyncpg
import pytest

from devstack.pgbouncer import PgBouncer, pgbouncer
from devstack.stack import StackInfo
from salon_sessions.db.connections import behind_transaction_pooler, connect, create_pool
from salon_sessions.operator.cleanups import delete_credentials
from tests.tenants import session_roles
from tests.worker.harness import new_company

pytestmark = pytest.mark.slow
NAME = "current_setting('application_name')"


async def test_pooled_clients_keep_their_names_and_use_no_named_statements(
        stack: StackInfo, database: str) -> None:
    company = new_company()
    with pgbouncer(stack.postgres_dsn, pool_size=1) as pg:
        async with session_roles(database, company) as t:
            url = pg.url(t.dsn(company))
            pool = await create_pool(url, f"salon-tables:{company}", pooler="transaction")
            other = await connect(url, "salon-other", pooler="transaction")
            try:
                assert behind_transaction_pooler(other)
                async with pool.acquire() as proxy:
                    assert behind_transaction_pooler(proxy)
                backends = set()
                for i in range(3):
                    # asyncpg's RESET ALL on release would have named every later one ''
                    assert await pool.fetchval(f"SELECT {NAME}") == f"salon-tables:{company}"
                    assert await other.fetchval(f"SELECT {NAME}") == "salon-other"
                    # the same parameterised statement again and again: no named one
                    assert await pool.fetchval("SELECT $1::int + 1", i) == i + 1
                    assert await other.fetchval("SELECT $1::int + 1", i) == i + 1
                    backends.add(await pool.fetchval("SELECT pg_backend_pid()"))
                    backends.add(await other.fetchval("SELECT pg_backend_pid()"))
                assert len(backends) == 1  # one server connection served both clients
            finally:
                await other.close()
                await pool.close()
            direct = await connect(t.dsn(company), "salon-x")
            try:
                assert not behind_transaction_pooler(direct)
            finally:
                await direct.close()


async def test_the_operator_deletes_a_session_s_credentials_through_pgbouncer(
        pooler: PgBouncer, database: str) -> None:
    company = new_company()
    async with session_roles(database, company) as t:
        role = t.roles[company]
        session = await asyncpg.connect(pooler.url(t.dsn(company)), statement_cache_size=0)
        await session.close()
        report = await delete_credentials(pooler.url(database), company, "test",
                                          pooler="transaction")
        assert report.company_id == company
        assert await t.admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) is None
