"""Outbound sends under pacing and faults: a runaway bot is paced, WhatsApp's refusal trips
the breaker, a worker killed between sending and confirming reports exactly that command.

Real worker processes (simulator driver), real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from salon_sessions.core import channels
from salon_sessions.core.events import SENDING_PAUSED
from tests.helpers import wait_for
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing
from tests.worker.messages import command, results, sent
from tests.worker.test_lock import link

pytestmark = pytest.mark.slow
RATE_PER_S = 50
BURST = 10
PACED = {"SALON_SEND_RATE_PER_MINUTE": str(RATE_PER_S * 60), "SALON_SEND_BURST": str(BURST),
         "SALON_SEND_JITTER_S": "0", "SALON_SEND_TYPING": "false"}


def sent_times(delivered: list[dict[str, str]]) -> list[float]:
    return [datetime.fromisoformat(d["ts"]).timestamp() for d in delivered]


async def push(redis: Redis, company: str, commands: list[dict[str, str]]) -> None:
    pipe = redis.pipeline(transaction=False)
    for c in commands:
        pipe.xadd(channels.outbound_stream(company), c)  # type: ignore[arg-type]
    await pipe.execute()


async def test_a_sending_loop_of_1000_commands_is_paced_and_the_breaker_trips(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        r = obs.redis
        workers(env=PACED)
        await link(obs)
        await push(r, company, [command(company, f"loop-{i:04d}", f"reminder {i}",
                                        to=f"+7 900 000-{i % 7:02d}-00") for i in range(1000)])
        await wait_for(lambda: _sent_at_least(r, company, 300), timeout=60)
        # WhatsApp answers the next send with 429 rate-overlimit for 4 seconds
        await obs.act({"action": "send_limit", "code": 429, "expire_s": 4})
        got = await results(obs, company, 1000, timeout=120)
        assert sorted(x["idempotency_key"] for x in got) == [f"loop-{i:04d}"
                                                            for i in range(1000)]
        assert {x["status"] for x in got} == {"sent"}
        delivered = await sent(obs, company)
        assert len(delivered) == 1000  # each once: the refused send went again, once
        assert sorted(d["text"] for d in delivered) == sorted(f"reminder {i}"
                                                              for i in range(1000))
        times = sent_times(delivered)
        # the bucket: any 100 consecutive sends span at least (100 - burst) / rate
        spans = [times[i + 99] - times[i] for i in range(len(times) - 99)]
        assert min(spans) >= (100 - BURST) / RATE_PER_S - 0.05
        # the breaker: one pause of the announced length, nothing sent within it
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        assert gaps[-1] >= 3.9
        assert gaps[-2] < 1.0
        paused = [e for e in obs.of("error") if e["data"]["code"] == SENDING_PAUSED]
        assert len(paused) == 1
        assert paused[0]["data"]["reason"] == "rate_limited"
        assert paused[0]["data"]["will_retry"] is True
        every = await results(obs, company, 1000, delayed=True)
        delayed = [x for x in every if x["status"] == "delayed"]
        assert {x["reason"] for x in delayed} == {"sending_paused"}  # pacing waits < 1 s
        pause_notice = next(x for x in delayed if x["reason"] == "sending_paused")
        until = datetime.fromisoformat(pause_notice["expected_at"])
        assert until == datetime.fromisoformat(paused[0]["data"]["retry_at"])
        resumed = min(t for t in times if t >= until.timestamp() - 0.01)
        assert resumed - until.timestamp() < 1.5


async def _sent_at_least(r: Redis, company: str, n: int) -> bool:
    return int(await r.llen(channels.simulator_sent_key(company))) >= n


async def test_a_command_that_waits_for_its_slot_is_announced_as_delayed_first(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers(env={**PACED, "SALON_SEND_RATE_PER_MINUTE": "30", "SALON_SEND_BURST": "1",
                     "SALON_SEND_JITTER_S": "0.5"})
        await link(obs)
        await push(obs.redis, company, [command(company, f"p{i}", f"paced {i}")
                                        for i in range(3)])
        got = await results(obs, company, 5, timeout=30, delayed=True)
        assert [(x["idempotency_key"], x["status"]) for x in got] == [
            ("p0", "sent"), ("p1", "delayed"), ("p1", "sent"), ("p2", "delayed"),
            ("p2", "sent")]
        delivered = await sent(obs, company)
        for notice, item in zip((got[1], got[3]), delivered[1:], strict=True):
            assert notice["reason"] == "pacing"
            expected = datetime.fromisoformat(notice["expected_at"]).timestamp()
            assert datetime.fromisoformat(item["ts"]).timestamp() >= expected - 0.01
        spacing = sent_times(delivered)
        assert spacing[2] - spacing[1] >= 1.95  # one send per 2 s once the burst is spent
        assert spacing[2] - spacing[1] < 2.6  # plus a jitter of at most 0.5 s, once


async def test_an_open_breaker_survives_a_worker_restart(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        r = obs.redis
        w = workers(env=PACED)
        await link(obs)
        await obs.act({"action": "send_limit", "code": 463, "expire_s": 600})
        await push(r, company, [command(company, "first", "hello")])
        await obs.wait_event("error")
        paused = [e for e in obs.of("error") if e["data"]["code"] == SENDING_PAUSED]
        assert paused[0]["data"]["reason"] == "reachout_restricted"
        await w.stop()
        workers("w0", env=PACED)
        await obs.wait_event("connected", count=2)
        await push(r, company, [command(company, "second", "still waiting")])
        await asyncio.sleep(4)
        assert await sent(obs, company) == []  # nothing went out: the breaker is still open
        every = await results(obs, company, 1, delayed=True)
        notices = {(x["idempotency_key"], x["reason"]) for x in every}
        assert ("first", "sending_paused") in notices
        pending = await r.xpending(channels.outbound_stream(company), channels.OUTBOUND_GROUP)
        assert pending["pending"] >= 1  # waiting, not dropped


async def test_first_messages_to_new_contacts_are_paced_more_and_typing_comes_first(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        r = obs.redis
        workers(env={**PACED, "SALON_SEND_NEW_CONTACTS_PER_HOUR": "1800",
                     "SALON_SEND_NEW_CONTACT_BURST": "1", "SALON_SEND_TYPING": "true",
                     "SALON_SEND_TYPING_MAX_S": "0.5"})
        await link(obs)
        # a client who wrote first is a known contact
        await obs.act({"action": "inbound", "id": "HI", "from": "79001110000@s.whatsapp.net",
                       "text": "hello"})
        await wait_for(lambda: r.xlen(channels.inbound_stream(company)))
        await push(r, company, [
            command(company, "n1", "welcome", to="79002220001"),
            command(company, "n2", "welcome", to="79002220002"),
            command(company, "n3", "welcome", to="79002220003"),
            command(company, "k1", "see you", to="79001110000"),
            command(company, "k2", "see you again", to="79001110000"),
        ])
        got = await results(obs, company, 5, timeout=30)
        assert [x["status"] for x in got] == ["sent"] * 5
        delivered = await sent(obs, company)
        times = dict(zip((d["to"] for d in delivered), sent_times(delivered), strict=True))
        new = [times[f"7900222000{i}@s.whatsapp.net"] for i in (1, 2, 3)]
        assert new[1] - new[0] >= 1.95  # one new contact per 2 seconds
        assert new[2] - new[1] >= 1.95
        known = [d for d in delivered if d["to"] == "79001110000@s.whatsapp.net"]
        assert len(known) == 2
        k_times = sent_times(known)
        assert k_times[1] - k_times[0] < 0.95  # known contacts wait for no new-contact slot
        assert all(d["typing_s"] is not None and d["typing_s"] >= 0.45 for d in delivered)
        every = await results(obs, company, 5, delayed=True)
        assert {x["reason"] for x in every if x["status"] == "delayed"} == {"new_contact"}


async def test_a_worker_killed_between_sending_and_confirming_reports_only_that_command(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        r = obs.redis
        w = workers(env=PACED)
        await link(obs)
        await push(r, company, [command(company, "before", "one")])
        await results(obs, company, 1)
        await obs.act({"action": "hold_sends", "seconds": 60})
        await asyncio.sleep(0.3)
        await push(r, company, [command(company, "held", "two")])
        await wait_for(lambda: _sent_at_least(r, company, 2))  # delivered, not confirmed
        w.signal(signal.SIGKILL)
        await w.wait()
        await push(r, company, [command(company, "after-1", "three"),
                                command(company, "after-2", "four")])
        workers("w0", env=PACED)  # the StatefulSet's pod comes back under its name
        got = await results(obs, company, 4, timeout=60)
        assert {x["idempotency_key"]: x["status"] for x in got} == {
            "before": "sent", "held": "unknown", "after-1": "sent", "after-2": "sent"}
        texts = [d["text"] for d in await sent(obs, company)]
        assert texts == ["one", "two", "three", "four"]  # "two" once: never resent
        unknown = next(x for x in got if x["idempotency_key"] == "held")
        assert "not resent" in unknown["error"]


async def test_commands_wait_while_disconnected_and_go_once_reconnected(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        r = obs.redis
        workers(env=PACED)
        await link(obs)
        await obs.act({"action": "temporary_ban", "code": 101, "expire_s": 3})
        await obs.wait_event("error")
        until = datetime.now(UTC) + timedelta(seconds=2)
        await push(r, company, [command(company, f"w{i}", f"wait {i}") for i in range(5)])
        got = await results(obs, company, 5, timeout=30)
        assert [x["status"] for x in got] == ["sent"] * 5
        first = datetime.fromisoformat((await sent(obs, company))[0]["ts"])
        assert first >= until  # nothing went out while the ban lasted
        assert [d["text"] for d in await sent(obs, company)] == [
            f"wait {i}" for i in range(5)]
