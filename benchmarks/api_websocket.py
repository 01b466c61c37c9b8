"""WebSocket fan-out of the API: C clients across K companies, event -> client receipt
latency, and the API process's RSS and CPU.

    .venv/bin/python -m benchmarks.api_websocket --clients 1000 --companies 100 --rounds 30

Starts PostgreSQL and Redis (devstack) unless --state-dir names a running stack, then one
`salon-sessions api` process. The benchmark plays the workers: each round it publishes one
v1 event per company on `whatsapp:events` with the workers' `Publisher`, exactly as a worker
does, and every client of that company must receive it. Latency = client receipt - the
moment just before PUBLISH, on CLOCK_MONOTONIC (`time.monotonic()`, one clock for every
process of the machine). The clients run in `--client-procs` processes of their own
(`benchmarks.ws_clients`; browsers are not in the API's process either), or with
`--client-procs 0` in this process, next to the publisher. They still share the machine's
cores with the API. Prints a Markdown table.

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
from typing import Any

from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection

from benchmarks.api_common import (
    VENV_BIN,
    Api,
    cpu_seconds,
    local_stack,
    pct,
    rss_mib,
    start_api,
)
from benchmarks.ws_clients import open_client
from salon_sessions.api.auth import TokenSigner
from salon_sessions.core.events import DisconnectedData, EventSource
from salon_sessions.core.metrics import PublisherMetrics
from salon_sessions.core.publisher import Publisher
from salon_sessions.core.redis_client import connect_redis


class ClientGroup:
    """`benchmarks.ws_clients` in a process of its own."""

    def __init__(self, clients: list[tuple[str, str]], expected: int, deadline_s: float) -> None:
        self.spec = json.dumps({"clients": clients, "expected": expected,
                                "deadline_s": deadline_s}).encode()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "python"), "-m", "benchmarks.ws_clients",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[1]))
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(self.spec)
        self.proc.stdin.close()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300)
        if line.strip() != b"ready":
            raise RuntimeError(f"client group did not start: {line[:200]!r}")

    async def result(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        out = await self.proc.stdout.read()
        await self.proc.wait()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result


async def run(args: argparse.Namespace, api: Api, redis_url: str) -> dict[str, float]:
    signer = TokenSigner(api.token_secret.encode())
    companies = [f"company_{9_000_000 + i}" for i in range(args.companies)]
    ws_base = api.base_url.replace("http://", "ws://")
    per_company: dict[str, int] = defaultdict(int)
    specs: list[tuple[str, str]] = []
    for i in range(args.clients):
        company = companies[i % len(companies)]
        per_company[company] += 1
        specs.append((f"{ws_base}/v1/sessions/{company}/ws", signer.issue(company, 3600)[0]))
    expected_total = args.clients * args.rounds
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    received = 0
    done = asyncio.Event()
    groups: list[ClientGroup] = []
    clients: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    t0 = time.monotonic()
    if args.client_procs > 0:
        deadline = args.rounds * args.interval + 60
        for n in range(args.client_procs):
            part = specs[n::args.client_procs]
            groups.append(ClientGroup(part, len(part) * args.rounds, deadline))
        await asyncio.gather(*(g.start() for g in groups))
    else:
        for start in range(0, len(specs), 50):  # connect in batches
            clients += await asyncio.gather(*(open_client(u, t)
                                              for u, t in specs[start:start + 50]))

        async def reader(ws: ClientConnection) -> None:
            nonlocal received
            async for raw in ws:
                now = time.monotonic()
                text = raw if isinstance(raw, str) else raw.decode()
                if not text.startswith('{"kind":"event"'):
                    continue  # heartbeats
                at = text.index('"id":"') + 6  # cheaper than json.loads: shares the CPU
                latencies.append(now - sent_at[text[at:text.index('"', at)]])
                received += 1
                if received >= expected_total:
                    done.set()

        readers = [asyncio.create_task(reader(ws)) for ws in clients]
    connect_s = time.monotonic() - t0
    rss_connected = rss_mib(api.pid)
    redis = connect_redis(redis_url)
    publisher = Publisher(redis, PublisherMetrics(CollectorRegistry()))
    sources = {c: EventSource(c, c.replace("_", "-")) for c in companies}
    cpu0, wall0 = cpu_seconds(api.pid), time.monotonic()
    gap = args.interval / len(companies) if args.spread else 0.0
    for r in range(args.rounds):
        round_start = time.monotonic()
        for i, company in enumerate(companies):
            if gap:  # workers publish independently: spread over the round
                await asyncio.sleep(max(0.0, round_start + i * gap - time.monotonic()))
            event = sources[company].event(DisconnectedData(reason=f"round {r}"))
            sent_at[event.id] = time.monotonic()
            await publisher.publish(event)
        await asyncio.sleep(max(0.0, round_start + args.interval - time.monotonic()))
    if groups:
        results = await asyncio.gather(*(g.result() for g in groups))
        for result in results:
            latencies += [t - sent_at[event_id] for event_id, t in result["receipts"]]
        received = len(latencies)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(api.pid) - cpu0
    rss_end = rss_mib(api.pid)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    await redis.aclose()
    return {
        "clients": len(specs), "companies": len(per_company), "rounds": args.rounds,
        "events": args.rounds * len(companies), "expected": expected_total,
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
    parser.add_argument("--client-procs", type=int, default=0,
                        help="processes for the clients (0: in this process, next to the "
                        "publisher)")
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
    print(f"mode: {mode}, one event per company every {args.interval}s, clients in "
          f"{args.client_procs or 'the benchmark'} process(es)")
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
