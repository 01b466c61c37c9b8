"""Onboardings that end (`spec.link.expireAfter`), against real worker processes, Redis and
PostgreSQL with the simulator at a bound of a few seconds: the QR codes stop (no `qr` event
for several QR periods after the bound), the state says `LinkExpired`, a pending pairing
code ends with it, a restarted worker stays expired, and a renewal brings QR codes back so
that a scan links. What is checked is what the operator and the page read: the state hash,
the events, the latest QR key."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import pytest

from salon_sessions.core import channels, control
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import Observer, observing

pytestmark = pytest.mark.slow
BOUND_S = 5
EXPIRING = {"SALON_LINK_EXPIRE_AFTER_S": str(BOUND_S)}
"""First QR valid 2 s, then one every second (the harness's fast simulator)."""
QUIET_S = 4.0
"""How long no QR may come after the bound: four QR periods."""


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def no_new_qr(obs: Observer, seconds: float = QUIET_S) -> None:
    """Measure: not one `qr` event for `seconds`, and no QR stored to fetch."""
    before = len(obs.of("qr"))
    await asyncio.sleep(seconds)
    assert len(obs.of("qr")) == before, "QR codes after the onboarding ended"
    assert await obs.redis.get(channels.latest_qr_key(obs.company)) is None


async def onboarding(workers: WorkerFactory, obs: Observer) -> datetime:
    """A worker at the short bound; when its onboarding ends, from its first QR."""
    workers(env=EXPIRING)
    first = await obs.wait_event("qr")
    return when(first["data"]["link_expires_at"])


async def test_an_onboarding_ends_stays_ended_across_restarts_and_renews(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers(env=EXPIRING)
        first = await obs.wait_event("qr")
        ends = when(first["data"]["link_expires_at"])
        started = when(first["ts"])
        assert started < ends <= started + timedelta(seconds=BOUND_S)

        expired = await obs.wait_event("link_expired", timeout=BOUND_S + 10)
        assert expired["data"] == {"expire_after_s": BOUND_S}
        assert ends <= when(expired["ts"]) < ends + timedelta(seconds=2.5)
        state = await obs.wait_state(lambda s: s["phase"] == "LinkExpired")
        assert (state["linked"], state["connected"]) == ("false", "false")
        assert when(state["link_expires_at"]) == ends
        # every QR the worker published was let through before the bound (a QR the driver
        # reports after it is dropped; the event's `ts` is stamped a moment after the check)
        assert all(when(e["ts"]) < ends + timedelta(milliseconds=200) for e in obs.of("qr"))
        await no_new_qr(obs)
        assert (await obs.ping())["data"]["phase"] == "LinkExpired"
        with pytest.raises(control.ControlError) as refused:
            await obs.control("pairing_code", phone="79686484488")
        assert refused.value.code == "link_expired"

        # a crash and a new process: the window is in Redis, the new worker stays expired
        # and never starts its driver (nobody listens as the simulated WhatsApp)
        w.signal(signal.SIGKILL)
        await w.wait()
        w1 = workers(name="w1", env=EXPIRING)
        state = await obs.wait_state(lambda s: s.get("pod") == "w1" and s["lock"]
                                     == "holding the session lock")
        assert state["phase"] == "LinkExpired"
        assert when(state["link_expires_at"]) == ends
        await no_new_qr(obs)
        assert await obs.act({"action": "deliver"}) == 0  # no simulated server runs
        assert len(obs.of("link_expired")) == 2  # each process says it once

        # Redis loses the record: the expired worker writes it back at its next heartbeat
        key = channels.link_window_key(company)
        stored = await obs.redis.get(key)
        assert stored is not None
        await obs.redis.delete(key)
        async with asyncio.timeout(10):
            while await obs.redis.get(key) is None:
                await asyncio.sleep(0.2)
        assert await obs.redis.get(key) == stored

        # renewed: QR codes again, for another bound from now, and a scan links
        qrs = len(obs.of("qr"))
        before = datetime.now(UTC)
        renewed = await obs.control("renew_link")
        assert renewed["phase"] == "Starting"
        assert renewed["expire_after_s"] == BOUND_S
        new_end = when(renewed["expires_at"])
        assert before + timedelta(seconds=BOUND_S) <= new_end <= datetime.now(UTC) + \
            timedelta(seconds=BOUND_S)
        qr = await obs.wait_event("qr", count=qrs + 1, timeout=5)
        assert when(qr["data"]["link_expires_at"]) == new_end
        await obs.scan()
        await obs.wait_event("connected")
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert state["link_expires_at"] == ""
        assert await obs.redis.get(channels.link_window_key(company)) is None

        # linked: the bound no longer applies, and there is nothing to renew
        await asyncio.sleep(BOUND_S + 1.5)
        assert (await obs.state())["phase"] == "Connected"
        assert len(obs.of("link_expired")) == 2
        with pytest.raises(control.ControlError) as linked:
            await obs.control("renew_link")
        assert linked.value.code == "already_linked"
        await w1.stop()


async def test_a_pending_pairing_code_ends_with_the_onboarding(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        ends = await onboarding(workers, obs)
        code = await obs.control("pairing_code", phone="79686484488")
        # the code is announced as valid until the onboarding ends, not WhatsApp's 3 min
        assert when(code["expires_at"]) == ends
        await obs.wait_event("link_expired", timeout=BOUND_S + 10)
        state = await obs.wait_state(lambda s: s["phase"] == "LinkExpired")
        assert state["pairing_code_pending"] == "false"
        # the simulated WhatsApp is gone with the driver: the code cannot be entered
        assert await obs.act({"action": "enter_code", "code": code["code"]}) == 0
        await no_new_qr(obs, 2.0)
        assert (await obs.state())["linked"] == "false"


async def test_renewing_before_the_end_moves_it_and_a_logout_starts_a_new_one(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        ends = await onboarding(workers, obs)
        await asyncio.sleep(2)
        renewed = await obs.control("renew_link")
        assert renewed["phase"] == "AwaitingLink"
        assert when(renewed["expires_at"]) >= ends + timedelta(seconds=1.5)
        await asyncio.sleep((ends - datetime.now(UTC)).total_seconds() + 1.5)
        assert obs.of("link_expired") == []  # the old end passed: nothing ended
        await obs.scan()
        await obs.wait_event("connected")

        # the phone removes the device: a new onboarding starts, with its own bound
        qrs = len(obs.of("qr"))
        await obs.act({"action": "logout", "code": 401})
        await obs.wait_event("logged_out")
        qr = await obs.wait_event("qr", count=qrs + 1)
        assert when(qr["data"]["link_expires_at"]) > datetime.now(UTC)
        await obs.wait_event("link_expired", timeout=BOUND_S + 10)
        await obs.wait_state(lambda s: s["phase"] == "LinkExpired")


async def test_the_neonize_driver_stops_dialling_whatsapp_when_the_onboarding_ends(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    """With the production driver (WhatsApp unreachable here, so each login attempt is a
    dial that fails and is retried with backoff): once the bound passes, no new client is
    started, and a restarted worker of the expired onboarding never loads the Go core."""
    started = "starting a WhatsApp client"
    async with observing(redis_url, company) as obs:
        w = workers(driver="neonize", env=EXPIRING)
        await obs.wait_event("link_expired", timeout=60)
        await obs.wait_state(lambda s: s["phase"] == "LinkExpired")
        attempts = w.log().count(started)
        assert attempts >= 1
        # the retries' backoff (2 s base) would have started two or three more by now
        await asyncio.sleep(20)
        assert w.log().count(started) == attempts
        w.signal(signal.SIGKILL)
        await w.wait()
        w1 = workers(name="w1", driver="neonize", env=EXPIRING)
        await obs.wait_state(lambda s: s.get("pod") == "w1" and s["phase"] == "LinkExpired"
                             and s["lock"] == "holding the session lock")
        await asyncio.sleep(3)
        assert started not in w1.log()
