"""Resident memory of one idle worker process with each driver.

    .venv/bin/python -m benchmarks.worker_memory

simulator: linked and connected (idle, no traffic). neonize: the client created, its store
open in PostgreSQL and connecting (WhatsApp is unreachable here, so it sits in its
reconnect loop — the closest to idle this machine allows). RSS is read from /proc after
the worker has settled for `--settle` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from benchmarks.measure import VENV_BIN, rss_mib
from devstack import stack
from salon_sessions.core import channels


async def settle(info: stack.StackInfo, company: str, driver: str, seconds: float,
                 log_dir: Path) -> float:
    env = {
        "PATH": os.environ["PATH"], "HOME": str(log_dir),
        "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
        "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
        "SALON_DRIVER": driver, "SALON_POD_NAME": "mem", "SALON_METRICS_PORT": "0",
        "SALON_SIMULATOR_FIRST_QR_S": "2",
    }
    with open(log_dir / f"{driver}.log", "ab") as log:
        proc = subprocess.Popen([str(VENV_BIN / "salon-sessions"), "worker"], env=env,
                                stdout=log, stderr=log)
    redis = Redis.from_url(info.redis_url)
    try:
        key = channels.session_state_key(company)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await redis.hget(key, "lock") == b"holding the session lock":
                break
            await asyncio.sleep(0.3)
        if driver == "simulator":
            while not await redis.get(channels.latest_qr_key(company)):
                await asyncio.sleep(0.2)
            qr = (await redis.get(channels.latest_qr_key(company))).decode()
            await redis.publish(channels.simulator_channel(company), json.dumps(
                {"action": "scan", "qr": qr, "phone": "79686484488"}))
            while await redis.hget(key, "connected") != b"true":
                await asyncio.sleep(0.2)
        await asyncio.sleep(seconds)
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=10)
    parser.add_argument("--drivers", nargs="+", default=["simulator", "neonize"])
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="salon-bench-mem-"))
    info = stack.start(state_dir, components=["postgres", "redis"])
    try:
        print("| driver | RSS (MiB) |\n|---|---|")
        for i, driver in enumerate(args.drivers):
            rss = asyncio.run(settle(info, f"company_{920_000_000 + i}", driver, args.settle,
                                     state_dir))
            print(f"| {driver} | {rss:.1f} |", flush=True)
    finally:
        stack.stop(state_dir)


if __name__ == "__main__":
    main()
