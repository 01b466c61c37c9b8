"""WebSocket fan-out of the API: C clients across K companies, event -> client receipt
latency, and the API process's RSS and CPU.

    .venv/bin/python -m benchmarks.api_websocket --clients 1000 --companies 100 --rounds 30

Starts PostgreSQL and Redis (devstack) unless --state-dir names a running stack, then one
`salon-sessions api` process. The benchmark plays the workers: each round it publishes one
v1 event per company on `whatsapp:events` with the workers' `Publisher`, exactly as a worker
does, and every client of that company must receive it. Latency = client receipt - the
moment just before PUBLISH (one clock: publishers and clients share this process, so the
client side's own CPU is part of the figure). Prints a Markdown table.

By default each round's events are spread evenly over the round (independent workers);
`--burst` publishes them back to back (every company's worker at the same instant).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.api_common import Api, cpu_seconds, local_stack, pct, rss_mib, start_api
from salon_sessions.api.auth import TokenSigner
from salon_sessions.core.events import DisconnectedData, EventSource
from salon_sessions.core.metrics import PublisherMetrics
from salon_sessions.core.publisher import Publisher
from salon_sessions.core.redis_client import connect_redis


async def _client(url: str, token: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["salon.v1", f"bearer.{token}"],  # type: ignore[list-item]
                       compression=None, open_timeout=60, ping_interval=None)
    first = json.loads(await ws.recv())
    assert first["kind"] == "snapshot", first
    return ws


async def run(args: argparse.Namespace, api: Api, redis_url: str) -> dict[str, float]:
    signer = TokenSigner(api.token_secret.encode())
    companies = [f"company_{9_000_000 + i}" for i in range(args.companies)]
    ws_base = api.base_url.replace("http://", "ws://")
    clients: list[tuple[str, ClientConnection]] = []
    t0 = time.perf_counter()
    for start in range(0, args.clients, 50):  # connect in batches
        batch = []
        for i in range(start, min(start + 50, args.clients)):
            company = companies[i % len(companies)]
            token, _ = signer.issue(company, 3600)
            batch.append((company, _client(f"{ws_base}/v1/sessions/{company}/ws", token)))
        for company, ws in zip([c for c, _ in batch],
                               await asyncio.gather(*(c for _, c in batch)), strict=True):
            clients.append((company, ws))
    connect_s = time.perf_counter() - t0
    rss_connected = rss_mib(api.pid)

    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    per_round_expected = args.clients
    received = 0
    done = asyncio.Event()

    async def reader(ws: ClientConnection) -> None:
        nonlocal received
        async for raw in ws:
            now = time.perf_counter()
            text = raw if isinstance(raw, str) else raw.decode()
            if not text.startswith('{"kind":"event"'):
                continue  # heartbeats
            at = text.index('"id":"') + 6  # cheaper than json.loads: the client shares the CPU
            latencies.append(now - sent_at[text[at:text.index('"', at)]])
            received += 1
            if received >= per_round_expected * args.rounds:
                done.set()

    readers = [asyncio.create_task(reader(ws)) for _, ws in clients]
    redis = connect_redis(redis_url)
    publisher = Publisher(redis, PublisherMetrics(CollectorRegistry()))
    sources = {c: EventSource(c, c.replace("_", "-")) for c in companies}
    cpu0, wall0 = cpu_seconds(api.pid), time.perf_counter()
    gap = args.interval / len(companies) if args.spread else 0.0
    for r in range(args.rounds):
        round_start = time.perf_counter()
        for i, company in enumerate(companies):
            if gap:  # workers publish independently: spread over the round
                await asyncio.sleep(max(0.0, round_start + i * gap - time.perf_counter()))
            event = sources[company].event(DisconnectedData(reason=f"round {r}"))
            sent_at[event.id] = time.perf_counter()
            await publisher.publish(event)
        await asyncio.sleep(max(0.0, round_start + args.interval - time.perf_counter()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 30)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(api.pid) - cpu0
    rss_end = rss_mib(api.pid)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for _, ws in clients), return_exceptions=True)
    await redis.aclose()
    per_company: dict[str, int] = defaultdict(int)
    for company, _ in clients:
        per_company[company] += 1
    return {
        "clients": len(clients), "companies": len(per_company), "rounds": args.rounds,
        "events": args.rounds * len(companies), "expected": per_round_expected * args.rounds,
        "received": received, "connect_s": connect_s,
        "p50_ms": pct(latencies, 50) * 1e3, "p99_ms": pct(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3 if latencies else float("nan"),
        "rss_connected_mib": rss_connected, "rss_end_mib": rss_end,
        "cpu_pct": 100 * cpu / wall, "wall_s": wall,
        "fanout_per_s": received / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--companies", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between rounds (one event per company per round)")
    parser.add_argument("--burst", dest="spread", action="store_false",
                        help="publish each round's events back to back (worst case) instead "
                        "of spread over the round")
    parser.add_argument("--state-dir", help="use a running devstack instead of starting one")
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="salon-bench-api-")) / "api.log"
    with local_stack(args.state_dir) as info:
        api = start_api(info, log, SALON_WS_MAX_CLIENTS_PER_COMPANY=str(args.clients),
                        SALON_WS_HEARTBEAT_S="15")
        try:
            rss_idle = rss_mib(api.pid)
            r = asyncio.run(run(args, api, info.redis_url))
        finally:
            api.stop()
    print(f"API log: {log}")
    mode = "spread" if args.spread else "burst"
    print(f"mode: {mode}, one event per company every {args.interval}s")
    print("| clients | companies | events | receipts | p50 ms | p99 ms | max ms | "
          "API RSS idle / connected / end MiB | API CPU % | receipts/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['clients']:.0f} | {r['companies']:.0f} | {r['events']:.0f} | "
          f"{r['received']:.0f}/{r['expected']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
          f"{r['max_ms']:.2f} | {rss_idle:.0f} / {r['rss_connected_mib']:.0f} / "
          f"{r['rss_end_mib']:.0f} | {r['cpu_pct']:.0f} | {r['fanout_per_s']:.0f} |")
    print(f"(connecting {r['clients']:.0f} clients took {r['connect_s']:.1f}s; "
          f"{r['rounds']:.0f} rounds in {r['wall_s']:.1f}s)")


if __name__ == "__main__":
    main()
