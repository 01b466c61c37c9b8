"""What one session holds of the shared servers (issue 16): an idle session at most 2
PostgreSQL connections (the lock and at most one more) and 2 Redis connections, each named
after its session and its purpose; the bounds hold while it links, sends and receives."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest
from redis.asyncio import Redis

from salon_sessions.core import channels
from tests.helpers import wait_for
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import Observer, observing
from tests.worker.messages import command, results

pytestmark = pytest.mark.slow
POOL_IDLE_S = 2.0


async def pg_names(dsn: str, company: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT application_name FROM pg_stat_activity "
                                "WHERE application_name LIKE '%:' || $1 || '%'", company)
    finally:
        await conn.close()
    return Counter(r["application_name"] for r in rows)


async def redis_names(redis: Redis, company: str) -> Counter[str]:
    clients = await redis.client_list()
    return Counter(c["name"] for c in clients if c.get("name", "").endswith(f":{company}"))


async def worker_names(redis: Redis, company: str) -> Counter[str]:
    """The worker's own Redis connections (the simulated WhatsApp server's are not its)."""
    return Counter({k: v for k, v in (await redis_names(redis, company)).items()
                    if not k.startswith("salon-simulator:")})


async def test_an_idle_session_holds_one_lock_connection_and_two_named_redis_connections(
        workers: WorkerFactory, redis_url: str, postgres_dsn: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers(env={"SALON_DATABASE_POOL_IDLE_S": str(POOL_IDLE_S)})
        await obs.wait_event("qr")
        await obs.scan()
        await obs.wait_event("connected")
        seen_pg: Counter[str] = Counter()
        seen_redis: Counter[str] = Counter()

        async def sample() -> None:
            seen_pg.update(await pg_names(postgres_dsn, company) - seen_pg)
            seen_redis.update(await worker_names(obs.redis, company) - seen_redis)

        # busy: sends and inbound messages, sampled meanwhile
        for i in range(10):
            await obs.redis.xadd(channels.outbound_stream(company),
                                 command(company, f"bound-{i}"))  # type: ignore[arg-type]
        for i in range(10):
            await obs.act({"action": "inbound", "id": f"BOUND{i}",
                           "from": "79005556677@s.whatsapp.net", "text": f"hello {i}"})
        for _ in range(10):
            await sample()
            await asyncio.sleep(0.2)
        await results(obs, company, 10)
        await wait_for(lambda: count_messages(obs, company), what="inbound stored")
        await sample()
        assert sum(seen_pg.values()) <= 2, seen_pg
        assert set(seen_pg) <= {f"salon-lock:{company}", f"salon-tables:{company}"}, seen_pg
        assert seen_redis == Counter({f"salon-commands:{company}": 1,
                                      f"salon-pubsub:{company}": 1}), seen_redis

        # idle: the pool shrinks to nothing, only the lock stays
        async def only_the_lock() -> bool:
            return await pg_names(postgres_dsn, company) == Counter(
                {f"salon-lock:{company}": 1})

        await wait_for(only_the_lock, timeout=POOL_IDLE_S + 30, interval=0.5)
        assert await worker_names(obs.redis, company) == Counter(
            {f"salon-commands:{company}": 1, f"salon-pubsub:{company}": 1})
        # and the session still answers at once: pings through the pub/sub connection
        assert (await obs.ping())["data"]["correlation_id"]


async def count_messages(obs: Observer, company: str) -> bool:
    return int(await obs.redis.xlen(channels.inbound_stream(company))) >= 10
