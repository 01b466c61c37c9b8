"""Redis killed (SIGKILL) and started again mid-flow, with its append-only file.

While a phone sends a stream of messages and a bot a stream of commands, Redis dies without
a shutdown and comes back from its AOF (`appendfsync everysec`). Nothing acknowledged may be
lost: every message that left WhatsApp's queue (the simulated server's inbox, which
empties only once the worker stored a message) is in the inbound stream, once; every
command the bot appended gets a final result and is sent at most once; `unknown` only for
commands in flight at the crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from devstack import stack as devstack_stack
from devstack.stack import StackInfo
from salon_sessions.core import channels
from salon_sessions.core.redis_client import REDIS_ERRORS
from tests.helpers import restore_session_users, wait_for
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing
from tests.worker.messages import command
from tests.worker.test_lock import link

pytestmark = pytest.mark.slow
MESSAGES = 400
COMMANDS = 300


async def _retry(what: object) -> None:
    """Do one Redis call as a client that keeps trying through the outage."""
    assert callable(what)
    while True:
        try:
            await what()
            return
        except REDIS_ERRORS:
            await asyncio.sleep(0.1)


async def test_redis_killed_mid_flow_loses_no_acknowledged_message_and_sends_nothing_twice(
        workers: WorkerFactory, redis_url: str, company: str, stack: StackInfo) -> None:
    inbox = channels.simulator_inbox_key(company)
    out = channels.outbound_stream(company)
    async with observing(redis_url, company) as obs:
        w = workers(env={"SALON_STREAM_TRIM_S": "1"})
        await link(obs)
        phone = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        bot = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        await bot.xgroup_create(channels.inbound_stream(company), "bot", id="0", mkstream=True)

        async def phone_sends() -> None:
            for i in range(MESSAGES):
                record = json.dumps({"id": f"R{i:04d}", "from": "79005556677@s.whatsapp.net",
                                     "text": f"message {i}",
                                     "ts": datetime.now(UTC).isoformat()})
                await _retry(lambda r=record: phone.rpush(inbox, r))
                await _retry(lambda: phone.publish(channels.simulator_channel(company),
                                                   '{"action":"deliver"}'))
                await asyncio.sleep(0.01)

        async def bot_sends() -> None:
            for i in range(COMMANDS):
                await _retry(lambda i=i: bot.xadd(out, command(  # type: ignore[misc]
                    company, f"c{i:04d}", f"reply {i}")))
                await asyncio.sleep(0.015)

        flows = asyncio.gather(phone_sends(), bot_sends())
        await asyncio.sleep(1.5)
        await asyncio.to_thread(devstack_stack.kill_redis, stack)
        await asyncio.sleep(2)
        await asyncio.to_thread(devstack_stack.start_redis_again, stack)
        await asyncio.to_thread(restore_session_users)
        await asyncio.wait_for(flows, 120)

        async def inbox_drained() -> bool:
            with contextlib.suppress(*REDIS_ERRORS):
                return int(await phone.llen(inbox)) == 0
            return False

        await wait_for(inbox_drained, timeout=90, interval=0.5)
        entries = await bot.xrange(channels.inbound_stream(company))
        ids = Counter(f[b"message_id"].decode() for _, f in entries)
        assert set(ids) == {f"R{i:04d}" for i in range(MESSAGES)}
        assert max(ids.values()) == 1  # stored once, whatever the crash cut

        async def all_final() -> list[dict[str, str]] | None:
            rows = [{k.decode(): v.decode() for k, v in f.items()}
                    for _, f in await bot.xrange(channels.results_stream(company))]
            final = [r for r in rows if r["status"] != "delayed"]
            keys = {r["idempotency_key"] for r in final}
            return final if keys == {f"c{i:04d}" for i in range(COMMANDS)} else None

        final = await wait_for(all_final, timeout=90, interval=0.5)
        sent = Counter(json.loads(x)["text"] for x in await bot.lrange(
            channels.simulator_sent_key(company), 0, -1))
        assert max(sent.values()) == 1  # no command sent twice
        by_key: dict[str, set[str]] = {}
        for r in final:
            by_key.setdefault(r["idempotency_key"], set()).add(r["status"])
        unknown = [k for k, s in by_key.items() if "unknown" in s]
        assert len(unknown) <= 2  # only what was in flight when Redis died
        for k, statuses in by_key.items():
            assert statuses <= {"sent", "duplicate", "unknown"}, (k, statuses)
            if statuses & {"sent", "duplicate"}:
                assert sent[f"reply {int(k[1:])}"] == 1
        assert len(sent) >= COMMANDS - len(unknown)
        assert "Traceback" not in w.log()
        await phone.aclose()
        await bot.aclose()
