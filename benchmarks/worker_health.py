"""Health round trip (ping -> pong) through real worker processes, next to a raw Redis
publish -> subscribe round trip measured in the same run; and each worker's CPU.

    .venv/bin/python -m benchmarks.worker_health --workers 1 10 100 --seconds 30

Starts its own PostgreSQL and Redis (devstack) unless --state-dir names a running stack.
Each worker (simulator driver) is pinged once a second on its own channel
`whatsapp:health:<company>`; a raw message is published and received once a second per
worker too, on a channel nobody else uses. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from benchmarks.measure import VENV_BIN, cpu_seconds, pct
from devstack import stack
from salon_sessions.core import channels
from salon_sessions.core.events import PingData, PingEvent


@dataclass
class Result:
    workers: int
    pings: int
    pongs: int
    ping_ms: list[float]
    raw_ms: list[float]
    echo_ms: list[float]
    cpu_s_per_min: float


def start_workers(n: int, info: stack.StackInfo, log_dir: Path,
                  base: int) -> list[tuple[str, subprocess.Popen[bytes]]]:
    procs = []
    for i in range(n):
        company = f"company_{base + i}"
        env = {
            "PATH": os.environ["PATH"], "HOME": str(log_dir),
            "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
            "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
            "SALON_DRIVER": "simulator", "SALON_POD_NAME": f"bench-{i}",
            "SALON_METRICS_PORT": "0",
            "SALON_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        }
        log = open(log_dir / f"{company}.log", "ab")  # noqa: SIM115
        procs.append((company, subprocess.Popen([str(VENV_BIN / "salon-sessions"), "worker"],
                                                env=env, stdout=log, stderr=log)))
    return procs


async def wait_ready(redis: Redis, companies: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = set(companies)
    while pending and time.monotonic() < deadline:
        for c in list(pending):
            if await redis.hget(channels.session_state_key(c), "phase") in (b"AwaitingLink",):
                pending.discard(c)
        await asyncio.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} workers not ready")


async def measure(redis_url: str, companies: list[str],
                  seconds: float) -> tuple[int, list[float], list[float], list[float]]:
    pub = Redis.from_url(redis_url)
    sub = Redis.from_url(redis_url)
    tag = uuid.uuid4().hex
    raw_channel, echo_in, echo_out = (f"bench:raw:{tag}", f"bench:echo-in:{tag}",
                                      f"bench:echo-out:{tag}")
    echo = subprocess.Popen([str(VENV_BIN / "python"), "-m", "benchmarks.echo", redis_url,
                             echo_in, echo_out], cwd=Path(__file__).resolve().parent.parent)
    sent: dict[str, float] = {}
    ping_ms: list[float] = []
    raw_ms: list[float] = []
    echo_ms: list[float] = []
    pubsub = sub.pubsub()
    await pubsub.subscribe(*(channels.health_pong_channel(c) for c in companies),
                           raw_channel, echo_out)
    while await pub.publish(echo_in, b"warm-up") == 0:  # the echo process is subscribed
        await asyncio.sleep(0.1)

    async def receive() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg is None:
                continue
            now = time.perf_counter()
            channel = msg["channel"].decode()
            if channel == raw_channel:
                raw_ms.append((now - float(msg["data"])) * 1000)
            elif channel == echo_out:
                if msg["data"] != b"warm-up":
                    echo_ms.append((now - float(msg["data"])) * 1000)
            else:
                cid = json.loads(msg["data"])["data"]["correlation_id"]
                if cid in sent:
                    ping_ms.append((now - sent.pop(cid)) * 1000)

    receiver = asyncio.create_task(receive())
    pings = 0
    spacing = 1.0 / len(companies)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in companies:  # each worker once a second, spread over the second
            cid = uuid.uuid4().hex
            ping = PingEvent(company_id=c, session=c.replace("_", "-"), seq=pings,
                             data=PingData(correlation_id=cid)).model_dump_json()
            sent[cid] = time.perf_counter()
            await pub.publish(channels.health_ping_channel(c), ping)
            await pub.publish(raw_channel, repr(time.perf_counter()))
            await pub.publish(echo_in, repr(time.perf_counter()))
            pings += 1
            await asyncio.sleep(spacing)
    await asyncio.sleep(2)
    receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    echo.terminate()
    echo.wait(timeout=10)
    await pubsub.aclose()
    await pub.aclose()
    await sub.aclose()
    return pings, ping_ms, raw_ms, echo_ms


async def run_one(n: int, info: stack.StackInfo, seconds: float, log_dir: Path) -> Result:
    procs = start_workers(n, info, log_dir, base=910_000_000 + n * 1000)
    redis = Redis.from_url(info.redis_url)
    try:
        companies = [c for c, _ in procs]
        await wait_ready(redis, companies)
        await asyncio.sleep(2)
        cpu0 = [cpu_seconds(p.pid) for _, p in procs]
        t0 = time.monotonic()
        pings, ping_ms, raw_ms, echo_ms = await measure(info.redis_url, companies, seconds)
        elapsed = time.monotonic() - t0
        cpu = [cpu_seconds(p.pid) - c0 for (_, p), c0 in zip(procs, cpu0, strict=True)]
        return Result(n, pings, len(ping_ms), ping_ms, raw_ms, echo_ms,
                      statistics.mean(cpu) / elapsed * 60)
    finally:
        for _, p in procs:
            p.terminate()
        slow = 0
        for _, p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                slow += 1
                p.kill()
                p.wait()
        if slow:
            print(f"  ({slow} of {n} workers took over 60 s to stop and were killed)")
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args()
    own = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="salon-bench-")) if own else args.state_dir
    info = (stack.start(state_dir, components=["postgres", "redis"]) if own
            else stack.StackInfo.load(state_dir))
    rows = []
    try:
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        for n in args.workers:
            r = asyncio.run(run_one(n, info, args.seconds, state_dir))
            rows.append(r)
            print(f"{n} workers: {r.pongs}/{r.pings} pongs, ping p50 {pct(r.ping_ms, 50):.2f} "
                  f"p99 {pct(r.ping_ms, 99):.2f} ms; raw p50 {pct(r.raw_ms, 50):.2f} "
                  f"p99 {pct(r.raw_ms, 99):.2f} ms; echo p50 {pct(r.echo_ms, 50):.2f} "
                  f"p99 {pct(r.echo_ms, 99):.2f} ms; worker CPU {r.cpu_s_per_min:.3f} s/min",
                  flush=True)
    finally:
        if own:
            stack.stop(state_dir)
    print("\n| workers | pongs/pings | ping→pong p50 / p99 ms | raw pub→sub p50 / p99 ms | "
          "Python echo (2 hops) p50 / p99 ms | ping p99 ÷ raw p99 | ÷ echo p99 | "
          "CPU per worker (s/min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.workers} | {r.pongs}/{r.pings} | {pct(r.ping_ms, 50):.2f} / "
              f"{pct(r.ping_ms, 99):.2f} | {pct(r.raw_ms, 50):.2f} / {pct(r.raw_ms, 99):.2f} | "
              f"{pct(r.echo_ms, 50):.2f} / {pct(r.echo_ms, 99):.2f} | "
              f"{pct(r.ping_ms, 99) / pct(r.raw_ms, 99):.2f} | "
              f"{pct(r.ping_ms, 99) / pct(r.echo_ms, 99):.2f} | {r.cpu_s_per_min:.3f} |")


if __name__ == "__main__":
    main()
