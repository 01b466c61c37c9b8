"""A bare Python echo process for the health benchmark's baseline: subscribes to one channel
and republishes every message on another, with the same redis-py client the worker uses —
the floor for any ping -> pong through a Python process (two pub/sub hops)."""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis


async def main(url: str, inbound: str, outbound: str) -> None:
    redis = Redis.from_url(url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(inbound)
    while True:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is not None:
            await redis.publish(outbound, msg["data"])


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
