"""A minimal salon-sessions bot: answers every client message with an echo (docs/BOT.md).

    python examples/echo_bot.py --redis-url redis://echo-bot:PASSWORD@redis:6379/0 \\
        company_1001 company_1002

What it shows, in the order docs/BOT.md explains it:

- one consumer group (`--group`) on each company's inbound and results stream, created
  from the start of the stream (`XGROUP CREATE ... 0 MKSTREAM`), read with one
  `XREADGROUP` over all of them;
- on start, its own pending entries first (what it read before a crash but never
  acknowledged), then entries a dead consumer left pending (`XAUTOCLAIM`), then new ones;
- every reply is an `XADD` to the company's out stream with an idempotency key derived
  from the inbound message id and the reply's index, so processing a message again (a
  crash before `XACK`) never sends a second echo: the worker answers `duplicate`;
- `XACK` only after the replies are queued; results are logged (`delayed` is not final);
- SIGTERM/SIGINT: finishes the entry in hand, then exits 0.

It needs only redis-py and its Redis user needs only the rules in docs/BOT.md. It does not
import salon_sessions: a bot is another service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The names are salon-sessions' (core/channels.py); tests/examples checks they still are.
INBOUND_PREFIX: Final = "whatsapp:messages:in:"
OUTBOUND_PREFIX: Final = "whatsapp:messages:out:"
RESULTS_PREFIX: Final = "whatsapp:messages:results:"

COMPANY_ID: Final = re.compile(r"company_[1-9][0-9]{0,17}")
MAX_TEXT: Final = 4096
"""The worker rejects a text longer than this (characters)."""
ONE_TO_ONE_SERVERS: Final = frozenset({"s.whatsapp.net", "c.us", "lid", "hosted", "hosted.lid"})
"""A `chat` on these servers is a chat with one person; `g.us` is a group, `broadcast` a
status update or broadcast list, `newsletter` a channel."""
FINAL_STATUSES: Final = frozenset({"sent", "duplicate", "unknown", "failed", "rejected"})
BLOCK_MS: Final = 1000
"""How long one read waits for new entries: also how soon SIGTERM is noticed when idle."""

log = logging.getLogger("echo_bot")


def idempotency_key(company_id: str, message_id: str, index: int, bot: str = "echo") -> str:
    """The key of reply number `index` to one inbound message: the same inputs give the same
    key, so a message processed twice is answered once. Hashed because a message id may
    hold characters a key may not (keys: 1-128 of `A-Za-z0-9_.:-`)."""
    digest = hashlib.sha256(f"{company_id}\0{message_id}".encode()).hexdigest()[:40]
    return f"{bot}:{digest}:{index}"


def echo_replies(text: str) -> list[str]:
    """The bot's "work": one reply per message. A real bot may return several; each gets
    its own index, and the list must come out the same when a message is processed again
    (or the key of reply n may stand for a different text: only the first is sent)."""
    return [("echo: " + text)[:MAX_TEXT]]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EchoBot:
    def __init__(self, redis: Redis, companies: Iterable[str], group: str, consumer: str,
                 claim_idle_ms: int) -> None:
        self.redis = redis
        self.companies = list(companies)
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.stopping = asyncio.Event()
        self.streams = [p + c for c in self.companies for p in (INBOUND_PREFIX, RESULTS_PREFIX)]

    async def ensure_groups(self) -> None:
        """One group per stream, from the stream's first entry (`0`): messages that arrived
        before the bot's first start are answered too. MKSTREAM: the salon may have had no
        message yet."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        """Own pending entries, then dead consumers' ones, then new ones, until SIGTERM.
        Redis unreachable: wait and start over (pending first again)."""
        while not self.stopping.is_set():
            try:
                await self.ensure_groups()
                await self.read_own_pending()
                await self.claim_abandoned()
                await self.read_new()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("Redis unavailable (%s); retrying", exc)
                await self._sleep(1.0)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):  # a group lost (Redis lost its data): recreate
                    raise
                log.warning("consumer group missing (%s); recreating", exc)

    async def read_own_pending(self) -> None:
        """Entries delivered to this consumer before a crash and never acknowledged: ID `0`
        reads this consumer's pending list, from a cursor so that a failing entry cannot
        loop forever."""
        cursor = dict.fromkeys(self.streams, "0")
        while cursor and not self.stopping.is_set():
            resp: Any = await self.redis.xreadgroup(self.group, self.consumer,
                                                    cursor, count=100)  # type: ignore[arg-type]
            for stream_b, entries in resp or []:
                stream = _s(stream_b)
                if not entries:
                    cursor.pop(stream, None)
                    continue
                for entry_id, fields in entries:
                    if self.stopping.is_set():
                        return
                    await self.handle(stream, _s(entry_id), fields)
                    cursor[stream] = _s(entry_id)

    async def claim_abandoned(self) -> None:
        """Take over what other consumers of the group read and left unacknowledged for
        `claim_idle_ms` (a replica that died, or a company moved to this shard)."""
        for stream in self.streams:
            start = "0-0"
            while not self.stopping.is_set():
                resp: Any = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms,
                    start_id=start, count=100)
                for entry_id, fields in resp[1]:
                    await self.handle(stream, _s(entry_id), fields)
                start = _s(resp[0])
                if start == "0-0":
                    break

    async def read_new(self) -> None:
        """Entries never delivered to any consumer of the group (`>`), all streams in one
        blocking read; abandoned entries are claimed again every `claim_idle_ms`."""
        loop = asyncio.get_running_loop()
        next_claim = loop.time() + self.claim_idle_ms / 1000
        while not self.stopping.is_set():
            resp: Any = await self.redis.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, ">"),
                count=100, block=BLOCK_MS)
            for stream_b, entries in resp or []:
                for entry_id, fields in entries:
                    if self.stopping.is_set():
                        return  # read but not handled: pending, handled after the restart
                    await self.handle(_s(stream_b), _s(entry_id), fields)
            if loop.time() >= next_claim:
                await self.claim_abandoned()
                next_claim = loop.time() + self.claim_idle_ms / 1000

    async def handle(self, stream: str, entry_id: str,
                     raw: dict[bytes, bytes] | None) -> None:
        """Process one entry, then acknowledge it. An entry with no fields was deleted
        from the stream while pending (dropped by retention): nothing left to process."""
        fields = {_s(k): _s(v) for k, v in (raw or {}).items()}
        if fields and stream.startswith(INBOUND_PREFIX):
            await self.answer(stream.removeprefix(INBOUND_PREFIX), fields)
        elif fields:
            self.result(fields)
        else:
            log.warning("%s %s was deleted before it was processed", stream, entry_id)
        await self.redis.xack(stream, self.group, entry_id)

    async def answer(self, company: str, msg: dict[str, str]) -> None:
        """Queue the echo of one inbound message. Skipped: what the salon's own phone sent
        (`from_me`), anything outside a one-to-one chat (a group's, a status update: its
        sender is a phone too) and senders without a phone number (an unresolved LID)."""
        if msg.get("from_me") == "true" or msg.get("sender_kind") != "phone":
            return
        if msg.get("chat", "").rpartition("@")[2] not in ONE_TO_ONE_SERVERS:
            return
        if not msg.get("sender_phone") or not msg.get("text"):
            return
        for index, text in enumerate(echo_replies(msg["text"])):
            command = {"v": 1, "type": "send_text", "company_id": company,
                       "idempotency_key": idempotency_key(company, msg["message_id"], index),
                       "to": msg["sender_phone"], "text": text}
            # never MAXLEN/MINID here: the worker deletes what it has processed
            await self.redis.xadd(OUTBOUND_PREFIX + company, {"payload": json.dumps(command)})
        log.info("answered %s %s", company, msg["message_id"])

    def result(self, res: dict[str, str]) -> None:
        """What became of a send. `delayed` (paced or paused) is followed by a final one;
        `unknown` may or may not have reached the client and is never resent."""
        status = res.get("status", "")
        if not res.get("idempotency_key", "").startswith("echo:"):
            return  # another sender's command on the same session
        if status == "delayed":
            log.info("delayed %s until %s (%s)", res["idempotency_key"],
                     res.get("expected_at"), res.get("reason"))
        elif status in ("sent", "duplicate"):
            log.info("%s %s %s", status, res["idempotency_key"], res.get("message_id"))
        elif status in FINAL_STATUSES:
            log.error("%s %s: %s", status, res["idempotency_key"], res.get("error"))
        else:
            log.warning("unexpected result %s", res)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("companies", nargs="+", metavar="company_<id>",
                        help="the companies this replica serves (its shard)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="the bot's Redis user (default: $REDIS_URL)")
    parser.add_argument("--group", default="echo-bot",
                        help="consumer group: one per bot application")
    parser.add_argument("--consumer", default=socket.gethostname(),
                        help="this replica's name, stable across restarts (a pod name)")
    parser.add_argument("--claim-idle-ms", type=int, default=60_000,
                        help="claim other consumers' entries pending this long")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("--redis-url or REDIS_URL is required")
    for company in args.companies:
        if not COMPANY_ID.fullmatch(company):
            parser.error(f"{company!r} is not a company id like company_1001")
    return args


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    redis = Redis.from_url(args.redis_url, socket_timeout=BLOCK_MS / 1000 + 10)
    bot = EchoBot(redis, args.companies, args.group, args.consumer, args.claim_idle_ms)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bot.stopping.set)
    log.info("serving %s as %s/%s", " ".join(bot.companies), bot.group, bot.consumer)
    try:
        await bot.run()
    finally:
        await redis.aclose()
    log.info("stopped")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main())
