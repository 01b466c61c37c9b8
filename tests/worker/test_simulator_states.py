"""WhatsApp's harder states, played through the simulator against a real worker, Redis and
PostgreSQL: a passkey asked during linking, logouts and refusals with WhatsApp's codes,
temporary bans, a replaced stream. What is checked is what the operator and the page read:
the session's state hash and the events the worker publishes.

A refused action is followed by a good one: the simulator handles its channel's messages
in order, so once the good one shows, the refused one is known to have changed nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from salon_sessions.worker.simulator.driver import SimulatorTiming
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import Observer, WorkerProc, observing

pytestmark = pytest.mark.slow
# a login window (first QR + 5 rotations) long enough for a passkey exchange: 3 s + 50 s
SLOW_LOGIN = {"SALON_SIMULATOR_FIRST_QR_S": "3", "SALON_SIMULATOR_QR_PERIOD_S": "10"}
TIMING = SimulatorTiming()


async def connected(obs: Observer) -> None:
    """Link by QR and wait for the socket."""
    await obs.wait_event("qr")
    await obs.scan()
    await obs.wait_event("connected")
    await obs.wait_state(lambda s: s["connected"] == "true")


async def refused(worker: WorkerProc, why: str) -> None:
    """The worker logged that the simulator refused an action for `why`."""
    try:
        async with asyncio.timeout(10):
            while f"simulator action refused: {why}" not in worker.log():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no refusal '{why}' in the worker's log") from None


async def test_passkey_keeps_the_qr_login_open_and_a_scan_still_links(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers(env=SLOW_LOGIN)
        await obs.wait_event("qr")
        await obs.act({"action": "passkey", "stage": "request"})
        asked = await obs.wait_event("passkey_required")
        assert asked["data"] == {"stage": "request", "code": None}
        state = await obs.wait_state(lambda s: s["phase"] == "PasskeyRequired")
        assert (state["reason"], state["linked"], state["connected"]) == (
            "passkey_required", "false", "false")

        # the QR keeps rotating meanwhile, and the phase stays
        qrs = len(obs.of("qr"))
        await obs.wait_event("qr", count=qrs + 1)
        assert (await obs.state())["phase"] == "PasskeyRequired"

        # bad stages and codes change nothing
        await obs.act({"action": "passkey", "stage": "approve"})
        await refused(w, "passkey with an unknown stage")
        await obs.act({"action": "passkey", "stage": "confirmation", "code": "12"})
        await refused(w, "passkey code is not XXXX-XXXX")
        await obs.act({"action": "passkey", "stage": "confirmation", "code": "abcd2345"})
        confirm = await obs.wait_event("passkey_required", count=2)
        assert confirm["data"] == {"stage": "confirmation", "code": "ABCD-2345"}
        assert len(obs.of("passkey_required")) == 2
        assert (await obs.state())["phase"] == "PasskeyRequired"

        linked = await obs.scan()
        assert linked["data"]["method"] == "qr"
        await obs.wait_event("connected")
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert (state["phase"], state["reason"]) == ("Connected", "")

        # a linked device is never asked
        await obs.act({"action": "passkey", "stage": "request"})
        await refused(w, "a linked device is never asked for a passkey")
        assert len(obs.of("passkey_required")) == 2


@pytest.mark.parametrize(("action", "reason", "on_connect"), [
    ({"action": "logout", "code": 406}, "banned", False),
    ({"action": "logout", "code": 403}, "locked", False),
    ({"action": "logout"}, "logged_out", False),
    ({"action": "connect_failure", "code": 401}, "logged_out", True),  # whatsmeow: a logout
])
async def test_logout_reasons_reach_the_state_the_events_and_the_history(
        workers: WorkerFactory, redis_url: str, company: str, database: str,
        action: dict[str, object], reason: str, on_connect: bool) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await connected(obs)
        qrs = len(obs.of("qr"))
        await obs.act(action)
        out = await obs.wait_event("logged_out")
        assert out["data"] == {"reason": reason, "on_connect": on_connect}
        # a new login starts; the reason stays until the next link, for a page opened later
        await obs.wait_event("qr", count=qrs + 1)
        state = await obs.wait_state(lambda s: s["phase"] == "AwaitingLink")
        assert (state["reason"], state["linked"], state["phone"]) == (reason, "false", "")
        conn = await asyncpg.connect(database)
        try:
            rows = await conn.fetch("SELECT action, reason FROM salon_link_history "
                                    "WHERE company_id = $1 ORDER BY id", company)
        finally:
            await conn.close()
        assert [(r["action"], r["reason"]) for r in rows] == [
            ("linked", None), ("logged_out", reason)]
        await obs.scan()
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert state["reason"] == ""


async def test_temporary_ban_names_its_reason_and_reconnects_when_it_ends(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await connected(obs)
        before = datetime.now(UTC)
        await obs.act({"action": "temporary_ban", "code": 102, "expire_s": 2})
        error = await obs.wait_event("error")
        assert (error["data"]["code"], error["data"]["reason"]) == (
            "temporary_ban", "blocked_by_users")
        retry_at = datetime.fromisoformat(error["data"]["retry_at"])
        assert before + timedelta(seconds=2) <= retry_at <= datetime.now(UTC) + timedelta(
            seconds=2)
        assert (await obs.wait_event("disconnected"))["data"]["will_reconnect"] is True
        state = await obs.wait_state(lambda s: s["last_error"] == "temporary_ban")
        assert (state["reason"], state["connected"], state["linked"]) == (
            "blocked_by_users", "false", "true")
        # the ban ends: the socket opens again and the reason goes
        await obs.wait_event("connected", count=2)
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert (state["reason"], state["last_error"]) == ("", "")

        # an unknown code keeps its number; a ban without an end is not retried
        await obs.act({"action": "temporary_ban", "code": "abc"})
        await refused(w, "code is not a number")
        await obs.act({"action": "temporary_ban", "code": 107, "expire_s": None})
        error = await obs.wait_event("error", count=2)
        assert (error["data"]["reason"], error["data"]["retry_at"]) == ("code_107", None)
        assert (await obs.wait_event("disconnected", count=2))["data"]["will_reconnect"] is False
        state = await obs.wait_state(lambda s: s["reason"] == "code_107")
        assert state["phase"] == "Disconnected"


async def test_connect_failures_by_code(workers: WorkerFactory, redis_url: str,
                                        company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await connected(obs)
        # 503: retried by itself
        await obs.act({"action": "connect_failure", "code": 503})
        error = await obs.wait_event("error")
        assert (error["data"]["code"], error["data"]["reason"]) == (
            "connect_failure", "service_unavailable")
        assert "not reconnecting" not in error["data"]["message"]
        await obs.wait_event("connected", count=2)
        assert (await obs.wait_state(lambda s: s["connected"] == "true"))["reason"] == ""

        # refused: not numbers, and 402, which is a ban (its own action)
        await obs.act({"action": "connect_failure", "code": "five-o-three"})
        await refused(w, "code is not a number")
        await obs.act({"action": "connect_failure", "code": 402})
        await refused(w, "402 is a temporary ban")
        assert len(obs.of("error")) == 1
        assert (await obs.state())["connected"] == "true"

        # an unknown code keeps its number; it is retried, slowly (not within this test)
        await obs.act({"action": "connect_failure", "code": 419})
        error = await obs.wait_event("error", count=2)
        assert error["data"]["reason"] == "code_419"
        assert "not reconnecting" not in error["data"]["message"]
        state = await obs.wait_state(lambda s: s["reason"] == "code_419")
        assert (state["last_error"], state["phase"], state["linked"]) == (
            "connect_failure", "Disconnected", "true")

        # 405: this client build is refused; nothing reconnects by itself
        await obs.act({"action": "connect_failure", "code": 405})
        error = await obs.wait_event("error", count=3)
        assert error["data"]["reason"] == "client_outdated"
        assert "not reconnecting automatically" in error["data"]["message"]
        state = await obs.wait_state(lambda s: s["reason"] == "client_outdated")
        assert (state["phase"], state["linked"]) == ("Disconnected", "true")
        assert await obs.control("restart") == {"restarting": True}  # the way out
        await obs.wait_event("connected", count=3)


async def test_a_replaced_stream_is_retried_once_then_halts(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr")
        await obs.act({"action": "stream_replaced"})  # nothing is open yet
        await refused(w, "no open stream to replace")
        await connected(obs)
        assert "error" not in obs.types()

        await obs.act({"action": "stream_replaced"})
        gone = await obs.wait_event("disconnected")
        assert gone["data"]["will_reconnect"] is True
        error = await obs.wait_event("error")
        assert (error["data"]["code"], error["data"]["reason"]) == (
            "stream_replaced", "stream_replaced")
        await obs.wait_event("connected", count=2)  # after the pause
        assert (await obs.wait_state(lambda s: s["connected"] == "true"))["reason"] == ""

        # again within the window: halted, and said so
        await obs.act({"action": "stream_replaced"})
        gone = await obs.wait_event("disconnected", count=2)
        assert gone["data"]["will_reconnect"] is False
        error = await obs.wait_event("error", count=2)
        assert "not reconnecting automatically" in error["data"]["message"]
        state = await obs.wait_state(lambda s: s["connected"] == "false")
        assert (state["phase"], state["reason"], state["last_error"], state["linked"]) == (
            "Disconnected", "stream_replaced", "stream_replaced", "true")
        # it stays down past the pause that the first replacement waited
        await asyncio.sleep(3 * TIMING.replaced_retry_s)
        assert len(obs.of("connected")) == 2
        assert (await obs.state())["connected"] == "false"
        assert await obs.control("restart") == {"restarting": True}  # a new driver, a new rule
        await obs.wait_event("connected", count=3)
