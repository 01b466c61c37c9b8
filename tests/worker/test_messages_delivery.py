"""Inbound delivery to the bot: retention by acknowledgement, offline delivery, a bot outage.

Real worker processes (simulator driver), real Redis and PostgreSQL; the bot is played with
a consumer group as docs/BOT.md tells a bot author to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devstack.phone import link_all
from salon_sessions.core import channels
from tests.helpers import metric_sample, session_redis_user, wait_for
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import WorkerProc, new_company, observing
from tests.worker.messages import inbound_entries, worker_metrics
from tests.worker.test_lock import link

pytestmark = pytest.mark.slow
BOT = "bot"


async def phone_says(redis: Redis, company: str, message_id: str, text: str,
                     sender: str = "79005556677@s.whatsapp.net") -> None:
    await redis.publish(channels.simulator_channel(company), json.dumps(
        {"action": "inbound", "id": message_id, "from": sender, "text": text}))


async def test_acknowledged_entries_are_trimmed_unacknowledged_kept_and_measured(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    stream = channels.inbound_stream(company)
    async with observing(redis_url, company) as obs:
        r = obs.redis
        await r.xgroup_create(stream, BOT, id="0", mkstream=True)
        workers(env={"SALON_METRICS_PORT": "-1"})
        await link(obs)
        for i in range(20):
            await phone_says(r, company, f"T{i:02d}", f"message {i}")
        await wait_for(lambda: r.xlen(stream), timeout=20)
        await wait_for(lambda: _length_at_least(r, stream, 20), timeout=20)
        # the bot reads everything and acknowledges the first ten
        read = await r.xreadgroup(BOT, "bot-1", {stream: ">"}, count=100)
        ids = [i for i, _ in read[0][1]]
        assert len(ids) == 20
        await r.xack(stream, BOT, *ids[:10])
        await wait_for(lambda: _length_is(r, stream, 10), timeout=10)
        left = await inbound_entries(r, company)
        assert [f["message_id"] for _, f in left] == [f"T{i:02d}" for i in range(10, 20)]
        # a second group that has read nothing holds everything back from now on
        await r.xgroup_create(stream, "audit", id="0")
        await r.xack(stream, BOT, *ids[10:])
        await asyncio.sleep(2.5)
        assert await r.xlen(stream) == 10
        text = await worker_metrics(obs)
        assert metric_sample(text, "salon_worker_stream_groups", stream="inbound") == 2
        assert metric_sample(text, "salon_worker_stream_backlog", stream="inbound", group=BOT) == 0
        assert metric_sample(text, "salon_worker_stream_backlog", stream="inbound",
                      group="audit") == 10
        age = metric_sample(text, "salon_worker_stream_oldest_unacked_age_seconds",
                            stream="inbound")
        assert age is not None
        assert 0 < age < 120
        assert metric_sample(text, "salon_worker_stream_dropped_total", stream="inbound",
                      cause="retention") in (None, 0.0)


async def _length_at_least(r: Redis, stream: str, n: int) -> bool:
    return int(await r.xlen(stream)) >= n


async def _length_is(r: Redis, stream: str, n: int) -> bool:
    return int(await r.xlen(stream)) == n


async def test_unacknowledged_entries_go_only_past_retention_or_the_cap_and_are_counted(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    stream = channels.inbound_stream(company)
    async with observing(redis_url, company) as obs:
        r = obs.redis
        now_ms = int(time.time() * 1000)
        # 5 entries from 2 hours ago (unread: past a 1-hour retention) and 1,200 recent
        for i in range(5):
            await r.xadd(stream, {"message_id": f"old{i}"}, id=f"{now_ms - 7_200_000 + i}-0")
        pipe = r.pipeline(transaction=False)
        for i in range(1200):
            pipe.xadd(stream, {"message_id": f"new{i}"})
        await pipe.execute()
        await r.xgroup_create(stream, BOT, id="0")
        w = workers(env={"SALON_METRICS_PORT": "-1", "SALON_STREAM_RETENTION_S": "3600",
                     "SALON_STREAM_MAX_ENTRIES": "1000"})
        await link(obs)
        await wait_for(lambda: _length_is(r, stream, 1000), timeout=15)
        entries = await inbound_entries(r, company)
        assert entries[0][1]["message_id"] == "new200"  # the oldest went, the newest stay
        text = await wait_for(lambda: _metrics_with(obs, "salon_worker_stream_dropped_total"))
        assert metric_sample(text, "salon_worker_stream_dropped_total", stream="inbound",
                      cause="retention") == 5
        assert metric_sample(text, "salon_worker_stream_dropped_total", stream="inbound",
                      cause="max_entries") == 200
        assert metric_sample(text, "salon_worker_stream_max_entries") == 1000
        assert metric_sample(text, "salon_worker_stream_retention_seconds") == 3600
        assert "dropped 205 unacknowledged entries (retention 5, max entries 200)" in w.log()


async def _metrics_with(obs: object, name: str) -> str | None:
    from tests.worker.harness import Observer

    assert isinstance(obs, Observer)
    text = await worker_metrics(obs)
    return text if metric_sample(text, name, stream="inbound", cause="max_entries") else None


async def test_messages_sent_while_offline_arrive_on_reconnect_in_order_once_marked_late(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    inbox = channels.simulator_inbox_key(company)
    async with observing(redis_url, company) as obs:
        r = obs.redis
        w = workers()
        await link(obs)
        await phone_says(r, company, "LIVE1", "while connected")
        await wait_for(lambda: _length_at_least(r, channels.inbound_stream(company), 1))
        await w.stop()
        # the worker is down: WhatsApp's server queues what the clients send meanwhile
        sent_at = datetime.now(UTC) - timedelta(seconds=30)
        for i in range(50):
            await r.rpush(inbox, json.dumps({
                "id": f"OFF{i:02d}", "from": "79005556677@s.whatsapp.net",
                "text": f"offline {i}", "ts": (sent_at + timedelta(seconds=i * 0.1)).isoformat()}))
        # one of them delivered twice by the server (a receipt it did not get)
        await r.rpush(inbox, json.dumps({"id": "OFF10", "from": "79005556677@s.whatsapp.net",
                                         "text": "offline 10", "ts": sent_at.isoformat()}))
        workers("w1")
        await wait_for(lambda: _length_at_least(r, channels.inbound_stream(company), 51),
                       timeout=30)
        await phone_says(r, company, "LIVE2", "after reconnect")
        await wait_for(lambda: _length_at_least(r, channels.inbound_stream(company), 52))
        await asyncio.sleep(1)
        entries = [f for _, f in await inbound_entries(r, company)]
        ids = [f["message_id"] for f in entries]
        assert ids == ["LIVE1", *(f"OFF{i:02d}" for i in range(50)), "LIVE2"]
        late = {f["message_id"]: f["delivered_late"] for f in entries}
        assert late["LIVE1"] == "false"
        assert late["LIVE2"] == "false"
        assert all(late[f"OFF{i:02d}"] == "true" for i in range(50))
        assert await r.llen(inbox) == 0  # every one acknowledged to the "server"


async def test_a_message_is_acknowledged_to_whatsapp_only_once_stored(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    """The receipt rule: when the worker cannot write the stream, the message stays with
    WhatsApp (the simulator's queue) and arrives once the stream can be written."""
    stream = channels.inbound_stream(company)
    async with observing(redis_url, company) as obs:
        r = obs.redis
        workers(env={"SALON_METRICS_PORT": "-1"})
        await link(obs)
        # a key of the wrong type in the stream's place: every XADD fails (WRONGTYPE)
        await r.delete(stream)
        await r.set(stream, "not a stream")
        await phone_says(r, company, "HELD", "kept by WhatsApp")
        await asyncio.sleep(3)
        assert await r.llen(channels.simulator_inbox_key(company)) == 1
        await r.delete(stream)
        await wait_for(lambda: _length_at_least(r, stream, 1), timeout=60)
        assert [f["message_id"] for _, f in await inbound_entries(r, company)] == ["HELD"]
        assert await r.llen(channels.simulator_inbox_key(company)) == 0


async def test_ten_thousand_messages_across_a_hundred_salons_survive_a_bot_outage(
        tmp_path: Path, database: str, redis_url: str) -> None:
    """The bot is down (its groups exist, nobody reads) while 10,000 messages arrive for
    100 salons; then it comes up, crashes once mid-way without acknowledging, and comes up
    again: every message is delivered, none twice by message id, none trimmed unread."""
    companies = [new_company() for _ in range(100)]
    admin = Redis.from_url(redis_url)
    procs: list[WorkerProc] = []
    users = contextlib.ExitStack()
    try:
        for c in companies:
            url = users.enter_context(session_redis_user(redis_url, c)).url
            await admin.xgroup_create(channels.inbound_stream(c), BOT, id="0", mkstream=True)
            procs.append(WorkerProc(tmp_path, database, url, c, name=f"w-{c}",
                                    env={"SALON_STREAM_TRIM_S": "2"}).start())
        async with asyncio.timeout(300):
            await link_all(admin, companies)
        per_salon = 100
        for n in range(per_salon):
            pipe = admin.pipeline(transaction=False)
            for c in companies:
                pipe.publish(channels.simulator_channel(c), json.dumps(
                    {"action": "inbound", "id": f"{c}-{n:03d}",
                     "from": "79005556677@s.whatsapp.net", "text": f"#{n}"}))
            await pipe.execute()
        streams = [channels.inbound_stream(c) for c in companies]

        async def all_stored() -> bool:
            return all(n == per_salon for n in await _lengths(admin, streams))

        await wait_for(all_stored, timeout=240, interval=1)
        await asyncio.sleep(5)  # two retention passes: nothing unacknowledged may go
        assert await all_stored()
        # the bot: one consumer reads half, dies without acknowledging; the next one
        # re-reads the dead one's pending entries (XAUTOCLAIM) and everything else
        seen: list[str] = []
        half = await admin.xreadgroup(BOT, "bot-a", {s: ">" for s in streams}, count=50)
        assert sum(len(entries) for _, entries in half) == 50 * len(streams)
        for s in streams:
            claimed = await admin.xautoclaim(s, BOT, "bot-b", min_idle_time=0, start_id="0",
                                             count=1000)
            ids = [i for i, _ in claimed[1]]
            seen += [f[b"message_id"].decode() for _, f in claimed[1]]
            if ids:
                await admin.xack(s, BOT, *ids)
        while True:
            batch = await admin.xreadgroup(BOT, "bot-b", {s: ">" for s in streams},
                                           count=200)
            if not batch:
                break
            for s, entries in batch:
                seen += [f[b"message_id"].decode() for _, f in entries]
                await admin.xack(s, BOT, *[i for i, _ in entries])
        assert len(seen) == len(set(seen)) == per_salon * len(companies)
        assert set(seen) == {f"{c}-{n:03d}" for c in companies for n in range(per_salon)}

        async def all_trimmed() -> bool:
            return all(n == 0 for n in await _lengths(admin, streams))

        await wait_for(all_trimmed, timeout=30, interval=1)  # acknowledged: trimmed
    finally:
        for p in procs:
            if p.proc is not None and p.proc.poll() is None:
                p.signal(signal.SIGTERM)
        for p in procs:
            try:
                await p.wait(30)
            except TimeoutError:
                assert p.proc is not None
                p.proc.kill()
        users.close()
        await admin.aclose()


async def _lengths(redis: Redis, streams: list[str]) -> list[int]:
    """Every stream's length in one round trip on one connection (100 concurrent calls
    opened 100 connections at once, and one timed out connecting on a loaded machine)."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return [int(n) for n in await pipe.execute()]
