"""The simulated phone scanning many salons' QR codes (benchmarks and tests with fleets of
simulator workers): one place for the loop that `benchmarks.messages_fleet` and the
10,000-message test both need."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from salon_sessions.core import channels

PHONE = "79686484488"


async def link_all(redis: Redis, companies: Iterable[str], *, interval: float = 1.0,
                   phone: str = PHONE, check: Callable[[], None] | None = None) -> None:
    """Scan every salon's QR (`whatsapp:qr:<company>`) until each session is connected
    (bound it with `asyncio.timeout`). `check` runs every round (e.g. raise when a worker
    process died)."""
    pending = set(companies)
    while pending:
        for c in list(pending):
            state = await redis.hgetall(channels.session_state_key(c))
            if state.get(b"connected") == b"true":
                pending.discard(c)
                continue
            qr: Any = await redis.get(channels.latest_qr_key(c))
            if qr is not None:
                await redis.publish(channels.simulator_channel(c), json.dumps(
                    {"action": "scan", "qr": qr.decode(), "phone": phone}))
        if check is not None:
            check()
        await asyncio.sleep(interval)
