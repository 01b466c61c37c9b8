"""examples/echo_bot.py against real simulator workers, with the Redis user docs/BOT.md
describes: every client message is echoed exactly once, across a bot killed with SIGKILL
(by its own pending list and by another consumer's XAUTOCLAIM) and a crash between queuing a
reply and acknowledging the message (the idempotency key).

What depends on issue 15's bridge (not in main when this was written; see the report): the
`SALON_SEND_PACING=false` setting only speeds the test up; the assertions hold with main's
bridge too (it neither paces nor sends `delayed`, which the assertions skip).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from salon_sessions.core import channels
from tests.examples.conftest import Salon, SalonFactory, bot_acl_rules
from tests.helpers import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo_bot.py"
GROUP = "echo-bot"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("echo_bot", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bot = load_example()


def test_the_example_uses_the_names_of_core_channels() -> None:
    assert bot.INBOUND_PREFIX == channels.INBOUND_PREFIX
    assert bot.OUTBOUND_PREFIX == channels.OUTBOUND_PREFIX
    assert bot.RESULTS_PREFIX == channels.RESULTS_PREFIX
    assert channels.inbound_stream(7) == bot.INBOUND_PREFIX + "company_7"
    assert channels.outbound_stream(7) == bot.OUTBOUND_PREFIX + "company_7"
    assert channels.results_stream(7) == bot.RESULTS_PREFIX + "company_7"


def test_idempotency_keys_are_deterministic_and_valid() -> None:
    from salon_sessions.core.messages import SendText

    key = bot.idempotency_key("company_7", "3EB0 odd/id+é", 0)
    assert key == bot.idempotency_key("company_7", "3EB0 odd/id+é", 0)
    assert key != bot.idempotency_key("company_7", "3EB0 odd/id+é", 1)
    assert key != bot.idempotency_key("company_8", "3EB0 odd/id+é", 0)
    SendText.model_validate({"v": 1, "type": "send_text", "company_id": "company_7",
                             "idempotency_key": key, "to": "79001234567", "text": "x"})


def test_the_documented_acl_parses() -> None:
    rules = bot_acl_rules("pw")
    assert rules[:3] == ["ACL", "SETUSER", "salon-bot"]
    assert "(%W~whatsapp:messages:out:* +xadd)" in rules


class BotProc:
    def __init__(self, tmp: Path, redis_url: str, companies: list[str], consumer: str,
                 claim_idle_ms: int = 60_000) -> None:
        self.log_path = tmp / f"bot-{consumer}.log"
        self.args = [sys.executable, str(EXAMPLE), "--redis-url", redis_url,
                     "--group", GROUP, "--consumer", consumer,
                     "--claim-idle-ms", str(claim_idle_ms), *companies]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    async def wait(self, timeout: float = 20) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def inbound(salon: Salon, message_id: str, text: str,
                  sender: str = "79001234567@s.whatsapp.net") -> None:
    assert await salon.obs.act({"action": "inbound", "id": message_id, "from": sender,
                                "text": text}) == 1


async def stream_ids(salon: Salon) -> list[str]:
    entries: Any = await salon.obs.redis.xrange(channels.inbound_stream(salon.company))
    return [f[b"message_id"].decode() for _, f in entries]


async def sent_texts(salon: Salon) -> list[str]:
    raw = await salon.obs.redis.lrange(channels.simulator_sent_key(salon.company), 0, -1)
    return [json.loads(r)["text"] for r in raw]


async def results(salon: Salon) -> list[dict[str, str]]:
    entries: Any = await salon.obs.redis.xrange(channels.results_stream(salon.company))
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


async def pending(salon: Salon) -> int:
    total = 0
    for stream in (channels.inbound_stream(salon.company),
                   channels.results_stream(salon.company)):
        summary: Any = await salon.obs.redis.xpending(stream, GROUP)
        total += int(summary["pending"])
    return total


@pytest.mark.slow
async def test_echo_bot_answers_every_message_once_across_crashes(
        salons: SalonFactory, bot_redis_url: str, tmp_path: Path) -> None:
    a, b = await salons(), await salons()
    companies = [a.company, b.company]
    for salon in (a, b):  # an auditor's group that never acknowledges: the worker trims
        # what every group acknowledged, so this keeps the results for the checks below
        await salon.obs.redis.xgroup_create(channels.results_stream(salon.company), "audit",
                                            id="0", mkstream=True)

    # --- a previous run of the bot that crashed: consumer `echo-1` read M1 and M2, queued
    # M1's echo (the worker sends it) and died before acknowledging either.
    for i in (1, 2, 3):
        await inbound(a, f"M{i}", f"early {i}")
    await wait_for(lambda: _has(stream_ids(a), 3), what="M1..M3 in the inbound stream")
    crashed = aioredis.Redis.from_url(bot_redis_url)
    try:
        stream = bot.INBOUND_PREFIX + a.company
        await crashed.xgroup_create(stream, GROUP, id="0", mkstream=True)
        got: Any = await crashed.xreadgroup(GROUP, "echo-1", {stream: ">"}, count=2)
        assert [f[b"message_id"] for _, f in got[0][1]] == [b"M1", b"M2"]
        m1 = {k.decode(): v.decode() for k, v in got[0][1][0][1].items()}
        await crashed.xadd(bot.OUTBOUND_PREFIX + a.company, {"payload": json.dumps({
            "v": 1, "type": "send_text", "company_id": a.company,
            "idempotency_key": bot.idempotency_key(a.company, "M1", 0),
            "to": m1["sender_phone"], "text": bot.echo_replies(m1["text"])[0]})})
        await wait_for(lambda: _has(sent_texts(a), 1), what="M1's echo sent")
    finally:
        await crashed.aclose()

    # --- the bot starts again as echo-1: its own pending first (M1: duplicate, M2), then M3
    first = BotProc(tmp_path, bot_redis_url, companies, "echo-1")
    try:
        await wait_for(lambda: _has(sent_texts(a), 3), what="echoes of M1..M3")
        # not answered: a group member (a phone sender in a group chat), a status update,
        # a sender without a phone number (an unresolved LID)
        for extra in ({"id": "GRP", "chat": "120363000000000001@g.us"},
                      {"id": "STATUS", "chat": "status@broadcast"},
                      {"id": "LID", "from": "999888777666555@lid"}):
            assert await a.obs.act({"action": "inbound", "from": "79001234567@s.whatsapp.net",
                                    "text": "not for the bot", **extra}) == 1
        # --- echo-1 dies with an entry read and not processed: frozen (SIGSTOP) while blocked
        # in XREADGROUP, a message arrives (Redis hands it to echo-1), then SIGKILL
        burst: list[tuple[Salon, str]] = []

        async def send(salon: Salon) -> None:
            n = len(burst)
            await inbound(salon, f"B{n}", f"burst {n}")
            burst.append((salon, f"echo: burst {n}"))

        for _ in range(8):  # SIGSTOP may land between two reads: then try again
            # let it finish what it holds and block in its next read first (a SIGSTOP right
            # after a SIGCONT catches it mid-way every time: the failure seen once in CI)
            await asyncio.sleep(1.5)
            first.proc.send_signal(signal.SIGSTOP)
            await send(b)
            if await _wait_pending(b, "echo-1"):
                break
            first.proc.send_signal(signal.SIGCONT)
        else:
            raise AssertionError("echo-1 was never stopped inside a read")
        for i in range(19):
            await send(a if i % 2 else b)
        first.kill()
    finally:
        first.kill()

    # --- another replica takes over what echo-1 left (XAUTOCLAIM) and reads the rest
    second = BotProc(tmp_path, bot_redis_url, companies, "echo-2", claim_idle_ms=500)
    third: BotProc | None = None
    try:
        expected_a = {f"echo: early {i}" for i in (1, 2, 3)} | {
            t for s, t in burst if s is a}
        expected_b = {t for s, t in burst if s is b}
        await wait_for(lambda: _covers(sent_texts(a), expected_a), what="every echo in a")
        await wait_for(lambda: _covers(sent_texts(b), expected_b), what="every echo in b")
        # --- echo-1 comes back: two replicas, each message still answered once
        third = BotProc(tmp_path, bot_redis_url, companies, "echo-1", claim_idle_ms=500)
        for salon in (a, b):
            await send(salon)
        expected_a |= {burst[-2][1]}
        expected_b |= {burst[-1][1]}
        await wait_for(lambda: _covers(sent_texts(a), expected_a), what="late echo in a")
        await wait_for(lambda: _covers(sent_texts(b), expected_b), what="late echo in b")
        await wait_for(lambda: _no_pending(a, b), what="nothing left pending for the bot")
        await asyncio.sleep(2)  # anything sent twice would show by now
        texts_a, texts_b = await sent_texts(a), await sent_texts(b)
        assert sorted(texts_a) == sorted(expected_a), "a: missed or sent twice"
        assert sorted(texts_b) == sorted(expected_b), "b: missed or sent twice"

        # M1 was queued twice (the crash, then the restart) and sent once
        key = bot.idempotency_key(a.company, "M1", 0)
        final = [r for r in await results(a)
                 if r["idempotency_key"] == key and r["status"] != "delayed"]
        assert [r["status"] for r in final] == ["sent", "duplicate"]
        assert final[1]["message_id"] == final[0]["message_id"]
        # the inbound stream held each message once (the worker drops redeliveries)
        ids = await stream_ids(a)
        assert len(ids) == len(set(ids))

        # SIGTERM: a clean exit
        for proc in (second, third):
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0, proc.log()
            assert "stopped" in proc.log()
    finally:
        second.kill()
        if third is not None:
            third.kill()


async def test_the_bot_user_cannot_write_inbound_nor_trim_commands(bot_redis_url: str) -> None:
    """What the bot's rules do not allow: forging an inbound message, trimming or reading
    the worker's command stream, deleting a stream."""
    company = "company_999999901"
    r = aioredis.Redis.from_url(bot_redis_url)
    try:
        for call in (
            lambda: r.xadd(channels.inbound_stream(company), {"text": "forged"}),
            lambda: r.xtrim(channels.outbound_stream(company), maxlen=0),
            lambda: r.xrange(channels.outbound_stream(company)),
            lambda: r.delete(channels.inbound_stream(company)),
            lambda: r.xadd(channels.results_stream(company), {"status": "sent"}),
        ):
            with pytest.raises(NoPermissionError):
                await call()
    finally:
        await r.aclose()


async def _has(values: Any, count: int) -> bool:
    return len(await values) >= count


async def _has_prefix(values: Any, prefix: str, count: int) -> bool:
    return len([v for v in await values if v.startswith(prefix)]) >= count


async def _covers(values: Any, expected: set[str]) -> bool:
    return expected <= set(await values)


async def _wait_pending(salon: Salon, consumer: str, timeout: float = 3) -> bool:
    """True once `consumer` holds an unacknowledged entry of the salon's inbound stream."""
    stream = channels.inbound_stream(salon.company)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await salon.obs.redis.xpending_range(stream, GROUP, "-", "+", 10, consumer):
            return True
        await asyncio.sleep(0.05)
    return False


async def _no_pending(a: Salon, b: Salon) -> bool:
    return await pending(a) == 0 and await pending(b) == 0
