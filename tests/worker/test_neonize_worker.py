"""The worker process with the production neonize driver, up to the network boundary:
WhatsApp is unreachable here, so the session must sit in a retrying disconnected state —
not crash, not claim linked or connected — and still stop cleanly on SIGTERM."""

from __future__ import annotations

import re
import signal

import asyncpg
import pytest

from salon_sessions.worker.neonize.goenv import exec_environment
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing

pytestmark = pytest.mark.slow


async def test_neonize_worker_retries_unreachable_network_and_stops_cleanly(
        workers: WorkerFactory, redis_url: str, company: str, database: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers(driver="neonize")
        dropped = await obs.wait_event("disconnected", timeout=60)
        assert dropped["data"]["will_reconnect"] is True
        state = await obs.wait_state(lambda s: s["lock"] == "holding the session lock")
        assert state["driver"] == "neonize"
        assert state["linked"] == "false"
        assert state["connected"] == "false"
        assert not obs.of("linked")
        assert not obs.of("connected")
        # the health path is the same code for both drivers
        assert (await obs.ping())["data"]["correlation_id"]
        conn = await asyncpg.connect(database)
        try:
            tables = {r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_name LIKE 'whatsmeow_%'")}
        finally:
            await conn.close()
        assert "whatsmeow_device" in tables
        assert w.proc is not None
        assert w.proc.poll() is None
        w.signal(signal.SIGTERM)
        assert await w.wait(timeout=30) == 0
        assert (await obs.state())["lock"] == "stopped"


async def test_the_go_core_runs_with_its_environment(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    """The started worker process (same pid: it re-executes itself) has NEONIZE_BOT_TAG=off
    and the GOMEMLIMIT/GOGC derived from its settings in the environment Go reads, and Go
    applies the limit: 8 MiB x 50 % = 4 MiB, so its heap goals (gctrace) stay under the
    4 MB that GOGC=100 alone never goes below."""
    async with observing(redis_url, company) as obs:
        w = workers(driver="neonize", env={"SALON_MEMORY_LIMIT_BYTES": str(8 * 2**20),
                                           "GODEBUG": "gctrace=1"})
        await obs.wait_state(lambda s: s["lock"] == "holding the session lock", timeout=60)
        await obs.wait_event("disconnected", timeout=60)  # the Go client ran
        env = exec_environment(w.pid)
        assert env["NEONIZE_BOT_TAG"] == "off"
        assert env["GOMEMLIMIT"] == str(4 * 2**20)
        assert env["GOGC"] == "100"
        goals = [int(g) for g in re.findall(r"^gc \d+ @.* (\d+) MB goal", w.log(),
                                            re.MULTILINE)]
        assert goals, w.log()[-3000:]
        assert min(goals) < 4
        assert w.proc is not None
        assert w.proc.poll() is None
