"""`/health/pubsub` and `/health/pubsub/simple` latencies of the API, next to a raw Redis
round trip (PING) and a raw publish -> subscribe loop measured in the same run.

    .venv/bin/python -m benchmarks.api_health --requests 500

Starts PostgreSQL and Redis (devstack) unless --state-dir names a running stack, one
`salon-sessions api` process and one session worker (simulator driver). Requests are
sequential and interleaved (pubsub, simple, raw PING, raw pub/sub, ...) so that all four
see the same machine state. For the two endpoints it reports the latency the API measured
(`latency_ms` in the response) and the whole HTTP request as the client saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from redis.asyncio import Redis

from benchmarks.api_common import VENV_BIN, local_stack, pct, start_api


def start_worker(info: object, company: str, log: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "SALON_DATABASE_URL": info.postgres_dsn,  # type: ignore[attr-defined]
           "SALON_REDIS_URL": info.redis_url,  # type: ignore[attr-defined]
           "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
           "SALON_DRIVER": "simulator", "SALON_POD_NAME": "bench-0",
           "SALON_METRICS_PORT": "0", "SALON_LOG_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        return subprocess.Popen([str(VENV_BIN / "salon-sessions"), "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def run(args: argparse.Namespace, base_url: str, admin: str, redis_url: str,
              company: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "pubsub_api", "pubsub_http", "simple_api", "simple_http", "redis_ping",
        "redis_pubsub")}
    redis = Redis.from_url(redis_url)
    sub = redis.pubsub()
    raw_channel = f"bench:raw:{uuid.uuid4().hex}"
    await sub.subscribe(raw_channel)
    await sub.get_message(timeout=1)  # the subscribe confirmation
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
        deadline = time.monotonic() + 60
        while (await http.get("/health/pubsub", params={"company_id": company})
               ).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never answered a ping")
            await asyncio.sleep(0.2)
        for _ in range(args.requests):
            t = time.perf_counter()
            resp = await http.get("/health/pubsub", params={"company_id": company})
            out["pubsub_http"].append((time.perf_counter() - t) * 1e3)
            out["pubsub_api"].append(resp.json()["latency_ms"])
            t = time.perf_counter()
            resp = await http.get("/health/pubsub/simple")
            out["simple_http"].append((time.perf_counter() - t) * 1e3)
            out["simple_api"].append(resp.json()["latency_ms"])
            t = time.perf_counter()
            await redis.ping()
            out["redis_ping"].append((time.perf_counter() - t) * 1e3)
            nonce = uuid.uuid4().hex
            t = time.perf_counter()
            await redis.publish(raw_channel, nonce)
            while True:
                msg = await sub.get_message(timeout=5)
                if msg is not None and msg["data"] == nonce.encode():
                    break
            out["redis_pubsub"].append((time.perf_counter() - t) * 1e3)
            await asyncio.sleep(args.pause)
    await sub.aclose()  # type: ignore[no-untyped-call]
    await redis.aclose()
    return out


LABELS = {
    "pubsub_api": "`/health/pubsub` (ping -> worker -> pong), as the API measured it",
    "pubsub_http": "`/health/pubsub`, whole HTTP request",
    "simple_api": "`/health/pubsub/simple` (publish -> subscribe), as the API measured it",
    "simple_http": "`/health/pubsub/simple`, whole HTTP request",
    "redis_ping": "raw Redis PING round trip (same run)",
    "redis_pubsub": "raw Redis publish -> subscribe (same run)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between rounds")
    parser.add_argument("--state-dir", help="use a running devstack instead of starting one")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="salon-bench-health-"))
    company = f"company_{8_000_000 + os.getpid()}"
    with local_stack(args.state_dir) as info:
        api = start_api(info, tmp / "api.log")
        worker = start_worker(info, company, tmp / "worker.log")
        try:
            r = asyncio.run(run(args, api.base_url, api.admin_token, info.redis_url, company))
        finally:
            worker.terminate()
            worker.wait(20)
            api.stop()
    print(f"logs: {tmp}")
    print(f"{args.requests} sequential requests each")
    print("| measurement | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for key, label in LABELS.items():
        v = r[key]
        print(f"| {label} | {pct(v, 50):.2f} | {pct(v, 90):.2f} | {pct(v, 99):.2f} | "
              f"{max(v):.2f} |")


if __name__ == "__main__":
    main()
