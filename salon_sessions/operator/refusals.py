"""PostgreSQL's refusals of session roles as a metric: `salon_postgres_tenancy_refusals`.

The tenancy model (migrations `0005`, `0007`) counts every refusal of a session role in the
sequence `salon_tenancy_refusals` (a rolled-back statement cannot count in a table; a
sequence survives the rollback): a row written for another company, another company's
device, another session's lock. The leader reads the sequence every `interval_s`
(`db.tenancy.read_refusals`) and exports it as a gauge that only grows (the database's own
total since the migration); alert on `delta(...) > 0`. Which role was refused is in
PostgreSQL's log.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from salon_sessions.core.settings import DatabasePooler
from salon_sessions.db.connections import connect
from salon_sessions.db.tenancy import read_refusals
from salon_sessions.operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)


class TenancyRefusals:
    def __init__(self, dsn: str, metrics: OperatorMetrics, *, interval_s: float = 15.0,
                 pooler: DatabasePooler = "none") -> None:
        self._dsn = dsn
        self._pooler: DatabasePooler = pooler
        self._metrics = metrics
        self._interval = interval_s

    async def collect(self) -> int:
        conn = await connect(self._dsn, "salon-operator", pooler=self._pooler,
                             connect_timeout_s=10)
        try:
            value = await read_refusals(conn)
        finally:
            await conn.close()
        self._metrics.postgres_refusals.set(value)
        return value

    async def run(self) -> None:
        while True:
            try:
                await self.collect()
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:  # down, or not migrated yet
                log.debug("reading the tenancy refusals failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
