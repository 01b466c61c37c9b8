"""State hash heartbeat, health pings, Redis restarts, shutdown, bad input and logs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from datetime import datetime

import pytest
from redis.asyncio import Redis

from salon_sessions.core import channels
from salon_sessions.core.control import ControlError
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing
from tests.worker.test_lock import link

pytestmark = pytest.mark.slow


async def test_state_hash_has_a_ttl_heartbeat_and_qr_a_short_ttl(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr")
        state = await obs.wait_state(lambda s: s["phase"] == "AwaitingLink")
        assert state["pod"] == "w0"
        assert state["driver"] == "simulator"
        ttl = await obs.redis.ttl(channels.session_state_key(company))
        assert 0 < ttl <= 6
        qr_ttl = await obs.redis.ttl(channels.latest_qr_key(company))
        assert 0 < qr_ttl <= 5
        first_beat = state["heartbeat_at"]
        await obs.wait_state(lambda s: s["heartbeat_at"] != first_beat, what="heartbeat")
        # a killed worker's hash expires: nobody keeps a stale "connected"
        w.signal(signal.SIGKILL)
        await w.wait()
        async with asyncio.timeout(15):
            while await obs.redis.exists(channels.session_state_key(company)):
                await asyncio.sleep(0.2)


async def test_metrics_on_a_free_port_published_in_the_state_hash(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    import urllib.request

    async with observing(redis_url, company) as obs:
        workers(env={"SALON_METRICS_PORT": "-1"})
        await obs.wait_event("qr")
        state = await obs.wait_state(lambda s: s.get("metrics_port", "0") != "0")
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{state['metrics_port']}/metrics", timeout=5).read().decode())
        assert "salon_worker_lock_held 1.0" in body
        assert 'salon_worker_driver_events_total{kind="QrCode"}' in body


async def test_ping_is_answered_with_correlation_id_phase_and_timestamp(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        pong = await obs.ping()
        assert pong["type"] == "pong"
        assert pong["data"]["phase"] == "AwaitingLink"
        assert datetime.fromisoformat(pong["ts"].replace("Z", "+00:00"))


async def test_ping_channels_are_per_session(workers: WorkerFactory, redis_url: str,
                                             company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        receivers = await obs.redis.publish(channels.health_ping_channel(company), b"{}")
        other = await obs.redis.publish(channels.health_ping_channel("company_1"), b"{}")
        assert receivers == 1
        assert other == 0


async def test_worker_restates_its_state_after_a_redis_restart(
        workers: WorkerFactory, redis_url: str, company: str,
        restart_redis: Callable[[], None]) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await link(obs)
        before = len(obs.events)
        await asyncio.to_thread(restart_redis)
        # Redis kept the hash (AOF, devstack.stack.redis_config); the worker writes it
        # again and republishes its connection state after the gap
        state = await obs.wait_state(lambda s: s.get("connected") == "true", timeout=30)
        assert state["linked"] == "true"
        async with asyncio.timeout(30):
            while not [e for e in obs.events[before:] if e["type"] == "connected"]:
                await asyncio.sleep(0.1)
        pong = await obs.ping()
        assert pong["data"]["phase"] == "Connected"


async def test_sigterm_disconnects_releases_the_lock_and_publishes_final_state(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await link(obs)
        w.signal(signal.SIGTERM)
        assert await w.wait(timeout=15) == 0
        final = await obs.wait_event("disconnected")
        assert final["data"]["reason"] == "worker stopping"
        state = await obs.state()
        assert state["connected"] == "false"
        assert state["lock"] == "stopped"
        # the lock is free at once: a new worker connects without waiting for a timeout
        w2 = workers("w1")
        await obs.wait_event("connected", count=2, timeout=20)
        assert "standing by" not in w2.log()


async def test_bad_control_requests_are_rejected_and_the_worker_keeps_running(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr")
        control = channels.control_channel(company)
        hostile = [
            b"not json",
            b"[]",
            json.dumps({"v": 1, "id": "x1", "company_id": "company_1", "cmd": "state"}).encode(),
            json.dumps({"v": 1, "id": "x2", "company_id": company, "cmd": "format_disk"}).encode(),
            json.dumps({"v": 1, "id": "x3", "company_id": company, "cmd": "pairing_code",
                        "phone": "1" * 80}).encode(),
            b"{" + b" " * 20000 + b"}",
            json.dumps({"v": 2, "id": "x4", "company_id": company, "cmd": "state"}).encode(),
        ]
        for raw in hostile:
            await obs.redis.publish(control, raw)
        async with asyncio.timeout(10):
            while len([e for e in obs.of("error") if e["data"]["code"] == "bad_command"]) \
                    < len(hostile):
                await asyncio.sleep(0.1)
        messages = " ".join(e["data"]["message"] for e in obs.of("error"))
        assert "another company" in messages
        assert "oversized" in messages or "limit" in messages
        # a number that is no valid phone is answered to the caller (the API's 422)
        for typed in ("12", "89161234567", "+7 000 000-00-00"):
            with pytest.raises(ControlError) as invalid:
                await obs.control("pairing_code", phone=typed)
            assert invalid.value.code == "invalid"
            assert "like +7 912 345-67-89" in str(invalid.value)
        # garbage on the ping channel is dropped too
        await obs.redis.publish(channels.health_ping_channel(company), b"\xff\xfe garbage")
        assert (await obs.ping())["data"]["phase"] == "AwaitingLink"
        state = await obs.control("state")
        assert state["phase"] == "AwaitingLink"
        assert w.proc is not None
        assert w.proc.poll() is None


async def test_no_secret_qr_or_code_in_logs(workers: WorkerFactory, redis_url: str,
                                            company: str, database: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers(env={"SALON_LOG_LEVEL": "DEBUG"})
        await obs.wait_event("qr")
        code = (await obs.control("pairing_code", phone="79686484488"))["code"]
        await obs.act({"action": "enter_code", "code": code})
        await obs.wait_event("connected")
        qrs = [e["data"]["code"] for e in obs.of("qr")]
        await w.stop()
    log = w.log()
    assert log.strip()
    for line in log.splitlines():
        record = json.loads(line)  # every line is a JSON object with the company id
        assert record["company_id"] == company
    for secret in [*qrs, code, database.split(":")[2].split("@")[0],
                   redis_url.split(":")[2].split("@")[0]]:
        assert secret not in log
    assert not re.search(r"2@[A-Za-z0-9+/]{20,}", log)


async def test_simulator_actions_are_ignored_by_a_neonize_session(
        redis_url: str, company: str) -> None:
    """Nothing listens on the simulator channel of a session that is not simulated."""
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.publish(channels.simulator_channel(company), b"{}") == 0
    finally:
        await redis.aclose()
