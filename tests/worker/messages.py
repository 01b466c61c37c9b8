"""Playing the bot and the phone around a session's message streams (tests only)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from redis.asyncio import Redis

from salon_sessions.core import channels
from tests.worker.harness import Observer


def command(company: str, key: str, text: str = "hello", to: str = "+7 900 123-45-67",
            **extra: Any) -> dict[str, str]:
    body = {"v": 1, "type": "send_text", "company_id": company, "idempotency_key": key,
            "to": to, "text": text, **extra}
    return {"payload": json.dumps(body)}


async def results(obs: Observer, company: str, count: int, timeout: float = 20,
                  *, delayed: bool = False) -> list[dict[str, str]]:
    """The first `count` results (final ones only, unless `delayed`)."""
    async with asyncio.timeout(timeout):
        while True:
            entries = await obs.redis.xrange(channels.results_stream(company))
            mine = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
            mine = [r for r in mine if r["company_id"] == company
                    and (delayed or r["status"] != "delayed")]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.1)


async def sent(obs: Observer, company: str) -> list[dict[str, str]]:
    return [json.loads(x) for x in await obs.redis.lrange(
        channels.simulator_sent_key(company), 0, -1)]


def fields(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


async def inbound_entries(redis: Redis, company: str) -> list[tuple[str, dict[str, str]]]:
    entries = await redis.xrange(channels.inbound_stream(company))
    return [(i.decode(), fields(f)) for i, f in entries]


async def worker_metrics(obs: Observer) -> str:
    """The worker's /metrics text (it runs with SALON_METRICS_PORT=-1)."""
    state = await obs.wait_state(lambda s: s.get("metrics_port", "0") != "0")
    url = f"http://127.0.0.1:{state['metrics_port']}/metrics"
    return await asyncio.to_thread(
        lambda: urllib.request.urlopen(url, timeout=5).read().decode())
