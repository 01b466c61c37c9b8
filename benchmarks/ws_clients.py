"""One group of WebSocket clients of the API benchmark, in its own process.

    python -m benchmarks.ws_clients < spec.json

The spec (JSON on stdin): `{"clients": [[url, token], ...], "expected": N, "deadline_s": S}`.
Connects every client (each must get its snapshot first), prints `ready`, then records the
receipt time (`time.monotonic()`, the same clock in every process of the machine) of every
event message until N have arrived or S seconds have passed, and prints
`{"receipts": [[event id, t], ...], "connect_s": ...}` as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from websockets.asyncio.client import ClientConnection, connect


async def open_client(url: str, token: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["salon.v1", f"bearer.{token}"],  # type: ignore[list-item]
                       compression=None, open_timeout=60, ping_interval=None)
    first = json.loads(await ws.recv())
    assert first["kind"] == "snapshot", first
    return ws


async def run(spec: dict[str, object]) -> dict[str, object]:
    pairs = [(str(u), str(t)) for u, t in spec["clients"]]  # type: ignore[attr-defined]
    expected = int(spec["expected"])  # type: ignore[call-overload]
    deadline_s = float(spec["deadline_s"])  # type: ignore[arg-type]
    t0 = time.monotonic()
    clients: list[ClientConnection] = []
    for start in range(0, len(pairs), 50):  # connect in batches
        clients += await asyncio.gather(*(open_client(u, t) for u, t in pairs[start:start + 50]))
    connect_s = time.monotonic() - t0
    receipts: list[tuple[str, float]] = []
    done = asyncio.Event()

    async def reader(ws: ClientConnection) -> None:
        async for raw in ws:
            now = time.monotonic()
            text = raw if isinstance(raw, str) else raw.decode()
            if not text.startswith('{"kind":"event"'):
                continue  # heartbeats
            at = text.index('"id":"') + 6  # cheaper than json.loads
            receipts.append((text[at:text.index('"', at)], now))
            if len(receipts) >= expected:
                done.set()

    readers = [asyncio.create_task(reader(ws)) for ws in clients]
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), deadline_s)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    return {"receipts": receipts, "connect_s": connect_s}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(run(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
