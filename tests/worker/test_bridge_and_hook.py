"""The message bridge (Redis Streams) and the post-connect hook."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from salon_sessions.core import channels
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing
from tests.worker.messages import command, results, sent
from tests.worker.test_lock import link

pytestmark = pytest.mark.slow


async def test_inbound_messages_reach_the_stream_with_resolved_senders(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await link(obs)
        await obs.act({"action": "map_lid", "lid": "123456789012345", "phone": "79001112233"})
        await asyncio.sleep(0.3)
        for action in (
            {"action": "inbound", "id": "M1", "from": "79005556677:12@s.whatsapp.net",
             "text": "hi"},
            {"action": "inbound", "id": "M2", "from": "123456789012345@lid", "text": "lid"},
            {"action": "inbound", "id": "M3", "from": "999888777666555@lid", "text": "?"},
            {"action": "inbound", "id": "M1", "from": "79005556677@s.whatsapp.net",
             "text": "redelivered"},
        ):
            await obs.act(action)
        async with asyncio.timeout(15):
            while True:
                entries = await obs.redis.xrange(channels.inbound_stream(company))
                mine = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
                mine = [m for m in mine if m["company_id"] == company]
                if len(mine) >= 3:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        entries = await obs.redis.xrange(channels.inbound_stream(company))
        mine = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
        by_id = {m["message_id"]: m for m in mine if m["company_id"] == company}
        assert len([m for m in mine if m["company_id"] == company]) == 3  # M1 once
        assert by_id["M1"]["sender_phone"] == "79005556677"
        assert by_id["M1"]["text"] == "hi"
        assert by_id["M2"]["sender_phone"] == "79001112233"
        assert by_id["M2"]["sender_lid"] == "123456789012345@lid"
        assert by_id["M3"]["sender_phone"] == ""  # an unresolved LID is never a phone
        assert by_id["M3"]["sender_kind"] == "unresolved_lid"


async def test_outbound_sent_once_per_idempotency_key_and_bad_commands_rejected(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        stream = channels.outbound_stream(company)
        # queued before the worker even starts: not lost
        await obs.redis.xadd(stream, command(company, "k1", "first"))
        workers()
        await link(obs)
        await obs.redis.xadd(stream, command(company, "k1", "first again"))
        await obs.redis.xadd(stream, command(company, "k2", "second"))
        await obs.redis.xadd(stream, command("company_1", "k3"))
        await obs.redis.xadd(stream, {"payload": "not json"})
        await obs.redis.xadd(stream, {"something": "else"})
        await obs.redis.xadd(stream, command(company, "k4", to="12"))
        await obs.redis.xadd(stream, command(company, "k5", "x" * 70000))
        await obs.redis.xadd(stream, {"payload": json.dumps({"v": 1, "type": "delete_all"})})
        got = await results(obs, company, 9)
        statuses = [(r["idempotency_key"], r["status"]) for r in got]
        assert statuses[:3] == [("k1", "sent"), ("k1", "duplicate"), ("k2", "sent")]
        assert [s for _, s in statuses[3:]] == ["rejected"] * 6
        errors = " ".join(r["error"] for r in got[3:])
        assert "wrong_company" in errors
        assert "oversized" in errors
        assert "unknown_type" in errors
        assert "to" in errors  # the invalid field is named
        delivered = await sent(obs, company)
        assert [d["text"] for d in delivered] == ["first", "second"]
        assert delivered[0]["to"] == "79001234567@s.whatsapp.net"
        assert got[0]["message_id"] == delivered[0]["id"]
        pending = await obs.redis.xpending(stream, channels.OUTBOUND_GROUP)
        assert pending["pending"] == 0
        assert [e for e in obs.of("error") if e["data"]["code"] == "bad_command"]


async def test_outbound_command_survives_a_crash_mid_way_and_is_never_sent_twice(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        stream = channels.outbound_stream(company)
        w = workers()
        await link(obs)  # the worker has created the consumer group by now
        await w.stop()
        # a command this pod's consumer read and never acknowledged (died after XREADGROUP)
        await obs.redis.xadd(stream, command(company, "crash1", "after crash"))
        read = await obs.redis.xreadgroup(channels.OUTBOUND_GROUP, "w0", {stream: ">"})
        assert len(read[0][1]) == 1
        # a command whose key a dying worker marked `sending` before it could confirm
        await obs.redis.set(channels.sent_marker_key(company, "ambiguous"), "sending")
        await obs.redis.xadd(stream, command(company, "ambiguous", "maybe sent"))
        workers("w0")
        got = await results(obs, company, 2)
        by_key = {r["idempotency_key"]: r["status"] for r in got}
        assert by_key == {"crash1": "sent", "ambiguous": "unknown"}
        texts = [d["text"] for d in await sent(obs, company)]
        assert texts == ["after crash"]  # the ambiguous one is reported, never resent


async def test_post_connect_hook_retries_and_never_blocks_connected(
        workers: WorkerFactory, redis_url: str, company: str, database: str) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.Response(status=503 if len(calls) < 3 else 200)

    app = web.Application()
    app.router.add_post("/activate", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with observing(redis_url, company) as obs:
            workers(env={"SALON_POST_CONNECT_URL": f"http://127.0.0.1:{port}/activate"})
            await link(obs)
            # connected at once, while the hook is still failing
            state = await obs.wait_state(lambda s: s["connected"] == "true")
            assert state["phase"] == "Connected"
            await obs.wait_state(lambda s: s.get("post_connect_hook") == "succeeded",
                                 timeout=30)
            assert (await obs.state())["connected"] == "true"
            assert len(calls) == 3
            assert calls[0] == {"company_id": company, "phone": "79686484488",
                                "event": "connected"}
            failures = [e for e in obs.of("error")
                        if e["data"]["code"] == "post_connect_hook_failed"]
            assert len(failures) == 2
            assert not obs.of("disconnected")
        conn = await asyncpg.connect(database)
        try:
            row = await conn.fetchrow("SELECT status, attempts FROM salon_post_connect_hooks "
                                      "WHERE company_id = $1", company)
        finally:
            await conn.close()
        assert row is not None
        assert (row["status"], row["attempts"]) == ("succeeded", 3)
    finally:
        await runner.cleanup()
