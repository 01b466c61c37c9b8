"""Overhead of the lock proof (issue 10): N simulator workers, each proving its advisory
lock through `pg_locks` every SALON_LOCK_CHECK_S; PostgreSQL's CPU and transactions per
second, and the workers' CPU, over a window once every worker holds its lock.

    .venv/bin/python -m benchmarks.lock_proof --workers 100 --check-s 1 --seconds 30

Starts its own PostgreSQL and Redis (devstack). Prints a Markdown row for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from benchmarks.measure import VENV_BIN, cpu_seconds
from devstack import stack
from devstack.procs import pid_dir


def postgres_cpu(state_dir: Path) -> float:
    """CPU seconds of the postmaster and every backend (its children)."""
    root = int((pid_dir(state_dir) / "postgres.pid").read_text())
    pids = [root] + [int(p) for p in Path(f"/proc/{root}/task/{root}/children")
                     .read_text().split()]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that just ended
            total += cpu_seconds(pid)
    return total


async def holders(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"))
    finally:
        await conn.close()


async def commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


async def run(n: int, check_s: float, seconds: float) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    info = stack.start(state_dir, components=("postgres", "redis"))
    logs = state_dir / "workers"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        for i in range(n):
            company = f"company_{700000 + i}"
            tmp = logs / f"{i}.tmp"
            tmp.mkdir()
            env = {"PATH": os.environ["PATH"], "HOME": str(logs), "TMPDIR": str(tmp),
                   "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
                   "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
                   "SALON_DRIVER": "simulator", "SALON_POD_NAME": f"bench-{i}",
                   "SALON_METRICS_PORT": "0", "SALON_LOG_LEVEL": "WARNING",
                   "SALON_LOCK_CHECK_S": str(check_s)}
            with open(logs / f"{i}.log", "ab") as log:
                procs.append(subprocess.Popen([str(VENV_BIN / "salon-sessions"), "worker"],
                                              env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + 600
        while await holders(info.postgres_dsn) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("not every worker holds its lock")
            await asyncio.sleep(1)
        await asyncio.sleep(10)  # let the start-up settle
        pg0, w0 = postgres_cpu(state_dir), sum(cpu_seconds(p.pid) for p in procs)
        c0, t0 = await commits(info.postgres_dsn), time.monotonic()
        await asyncio.sleep(seconds)
        pg1, w1 = postgres_cpu(state_dir), sum(cpu_seconds(p.pid) for p in procs)
        c1, t1 = await commits(info.postgres_dsn), time.monotonic()
        span = t1 - t0
        print("| workers | check | PostgreSQL CPU | transactions/s (pg_stat_database) | "
              "workers' CPU (all) | per worker |")
        print("|---|---|---|---|---|---|")
        print(f"| {n} | {check_s:g} s | {100 * (pg1 - pg0) / span:.1f} % of a core | "
              f"{(c1 - c0) / span:.0f} | {100 * (w1 - w0) / span:.1f} % of a core | "
              f"{1000 * (w1 - w0) / span / n:.1f} ms/s |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stack.stop(state_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--check-s", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    asyncio.run(run(args.workers, args.check_s, args.seconds))


if __name__ == "__main__":
    main()
