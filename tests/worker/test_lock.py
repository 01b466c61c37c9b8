"""One live connection per session: the PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing

pytestmark = pytest.mark.slow


async def link(obs: object) -> None:
    from tests.worker.harness import Observer

    assert isinstance(obs, Observer)
    await obs.wait_event("qr")
    await obs.scan()
    await obs.wait_event("connected")


async def test_two_workers_exactly_one_connects_and_the_other_takes_over_on_kill(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        first = workers("w0")
        await link(obs)
        second = workers("w1")
        async with asyncio.timeout(20):  # the standby has started and tried the lock
            while "standing by" not in second.log():
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # ... and keeps trying without connecting
        assert len(obs.of("connected")) == 1
        assert (await obs.state())["pod"] == "w0"

        first.signal(signal.SIGKILL)
        await first.wait()
        # the standby takes the lock and resumes the linked device; bounded wait
        await obs.wait_event("connected", count=2, timeout=20)
        state = await obs.wait_state(lambda s: s["pod"] == "w1" and s["connected"] == "true")
        assert state["linked"] == "true"
        assert len(obs.of("linked")) == 1  # no new link


async def test_cut_database_connection_drops_whatsapp_connection(
        workers: WorkerFactory, redis_url: str, company: str, database: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await link(obs)
        conn = await asyncpg.connect(database)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1", f"salon-lock:{company}")
        finally:
            await conn.close()
        assert killed == 1
        dropped = await obs.wait_event("disconnected")
        assert dropped["data"]["reason"] == "lock lost"
        # the error that explains it follows the disconnect (after the lock is released)
        error = await obs.wait_event("error")
        assert error["data"]["code"] == "lock_lost"
        # it re-acquires the lock and reconnects, without a new link
        await obs.wait_event("connected", count=2, timeout=20)
        assert len(obs.of("linked")) == 1
