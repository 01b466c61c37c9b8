"""Crash containment: a Go panic inside a neonize worker kills that process, and nothing
else. The session lock dies with the process (it is held by a PostgreSQL session), the
credentials stay, and the next worker - what Kubernetes starts after a container crash -
takes the lock and resumes the stored device as linked, without a new link.

Real: the worker process and its production driver (`crashing_worker.py` runs the
unchanged entry point and only adds the trigger), neonize's Go core and its genuine
panic, PostgreSQL, Redis.
"""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg
import pytest

from salon_sessions.db.locks import lock_holder_pids, session_lock_key
from salon_sessions.db.migrator import migrate
from tests import whatsmeow_rows
from tests.helpers import wait_for
from tests.worker.conftest import WorkerFactory
from tests.worker.crashing_worker import TRIGGER_ENV
from tests.worker.harness import VENV_BIN, observing

pytestmark = pytest.mark.slow

PHONE = "79686484488"
DEVICE = f"{PHONE}:32@s.whatsapp.net"
CRASHING_WORKER = Path(__file__).with_name("crashing_worker.py")
GO_PANIC = "panic: runtime error: invalid memory address or nil pointer dereference"


async def store_linked_device(database: str, company: str) -> None:
    """What a finished link leaves behind: whatsmeow's device row and the session's
    `device_jid` (written by the worker on `linked`)."""
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        await whatsmeow_rows.insert_device(conn, DEVICE)
        await conn.execute(
            "INSERT INTO salon_sessions (company_id, namespace, resource_name, device_jid, "
            "linked_at) VALUES ($1, 'default', $2, $3, now())",
            company, company.replace("_", "-"), DEVICE)
    finally:
        await conn.close()


async def lock_holders(database: str, company: str) -> list[int]:
    conn = await asyncpg.connect(database)
    try:
        return await lock_holder_pids(conn, session_lock_key(company))
    finally:
        await conn.close()


async def devices(database: str) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        return [r["jid"] for r in await conn.fetch("SELECT jid FROM whatsmeow_device")]
    finally:
        await conn.close()


async def test_a_go_panic_kills_only_its_worker_and_the_next_one_resumes_linked(
        workers: WorkerFactory, redis_url: str, company: str, database: str,
        tmp_path: Path) -> None:
    await store_linked_device(database, company)
    trigger = tmp_path / "crash-now"
    async with observing(redis_url, company) as obs:
        crashing = workers("w0", driver="neonize", env={TRIGGER_ENV: str(trigger)},
                           command=[str(VENV_BIN / "python"), str(CRASHING_WORKER)])
        # the worker runs with the lock and the resumed device, its Go client dialling
        state = await obs.wait_state(
            lambda s: s.get("lock") == "holding the session lock" and s["linked"] == "true",
            timeout=60, what="the worker holding the lock, linked")
        assert state["jid"] == DEVICE
        assert state["driver"] == "neonize"
        await obs.wait_event("disconnected", timeout=60)  # a Go client ran (no network)
        assert await lock_holders(database, company), "the worker holds the session lock"

        trigger.touch()
        code = await crashing.wait(timeout=60)
        log = crashing.log()
        assert code in (-signal.SIGABRT, 2), f"exit {code}, not a Go crash:\n{log[-3000:]}"
        assert GO_PANIC in log
        assert "main.GetLIDFromPN" in log, "the panic came from the triggered Go call"

        # the lock went with the process; the credentials did not
        await wait_for(lambda: _free(database, company), timeout=30,
                       what="PostgreSQL to release the dead worker's session lock")
        assert await devices(database) == [DEVICE]

        restarted = workers("w0-restarted", driver="neonize")
        state = await obs.wait_state(
            lambda s: s["pod"] == "w0-restarted" and s["lock"] == "holding the session lock",
            timeout=60, what="the restarted worker holding the lock")
        assert state["linked"] == "true", "resumed from the stored device"
        assert state["jid"] == DEVICE
        assert state["phone"] == PHONE
        assert not obs.of("linked"), "no new link: the stored device was resumed"
        assert await lock_holders(database, company)
        assert restarted.proc is not None
        assert restarted.proc.poll() is None
        restarted.signal(signal.SIGTERM)
        assert await restarted.wait(timeout=30) == 0


async def _free(database: str, company: str) -> bool:
    return not await lock_holders(database, company)
