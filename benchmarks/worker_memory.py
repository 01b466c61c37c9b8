"""Resident memory of one idle worker process with each driver, and where it goes.

    flock /tmp/salon-stack.flock .venv/bin/python -m benchmarks.worker_memory --runs 3

Starts the local stack's PostgreSQL and Redis (fixed ports, one stack per machine: hold the
stack lock as above), then, per driver and run, a real `salon-sessions worker` process, as
the operator's pod would run it (default memory limit 512Mi passed as
`SALON_MEMORY_LIMIT_BYTES`, so the neonize worker re-executes itself with `GOMEMLIMIT`):

- simulator: linked and connected (idle, no traffic);
- neonize: its client created, its store open in PostgreSQL, connecting (WhatsApp is
  unreachable from here, so it sits in its reconnect loop: the closest to idle this machine
  allows).

After `--settle` seconds it reads `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/smaps`:
file-backed pages (code and read-only data of the interpreter, the C extensions, the Go
core: one copy in memory for every process that maps the same file, e.g. all the session
pods of a node) apart from anonymous ones (private to the process).

The breakdown by layer comes from `benchmarks.worker_imports`: a fresh process imports the
worker's layers one after the other and reports what each adds; what the running worker
has on top (connections, tasks, threads, neonize's Go client) is the measured RSS minus the
last layer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks.measure import VENV_BIN, rss_mib
from devstack import stack
from salon_sessions.core import channels
from salon_sessions.worker.neonize.goenv import exec_environment

POD_MEMORY_LIMIT = 512 * 2**20
"""The operator's default worker memory limit (`worker_memory_limit`)."""
GO_CORE = "neonize-linux"


def smaps(pid: int) -> Counter[str]:
    """Resident KiB of a process by kind of mapping."""
    kib: Counter[str] = Counter()
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            path = head[5] if len(head) == 6 else ""
            if GO_CORE in path:
                kind = "go core"
            elif not path or path.startswith("["):
                kind = "anon"
            elif "site-packages" in path:
                kind = "C extensions (site-packages)"
            elif "lib-dynload" in path:
                kind = "C extensions (standard library)"
            elif "python" in path:
                kind = "python and libpython"
            else:
                kind = "system libraries (libc, libssl, libcrypto, ...)"
        elif line.startswith("Rss:"):
            kib[f"{kind}:rss"] += int(line.split()[1])
        elif line.startswith("Anonymous:"):
            kib[f"{kind}:anon"] += int(line.split()[1])
    return kib


async def settle(info: stack.StackInfo, company: str, driver: str, seconds: float,
                 log_dir: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    env = {
        "PATH": os.environ["PATH"], "HOME": str(log_dir),
        "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
        "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
        "SALON_DRIVER": driver, "SALON_POD_NAME": "mem", "SALON_METRICS_PORT": "0",
        "SALON_SIMULATOR_FIRST_QR_S": "2", "SALON_MEMORY_LIMIT_BYTES": str(POD_MEMORY_LIMIT),
        **extra_env,
    }
    with open(log_dir / f"{driver}.log", "ab") as log:
        proc = subprocess.Popen([str(VENV_BIN / "salon-sessions"), "worker"], env=env,
                                stdout=log, stderr=log)
    redis = Redis.from_url(info.redis_url)
    try:
        key = channels.session_state_key(company)
        deadline = time.monotonic() + 60
        while await redis.hget(key, "lock") != b"holding the session lock":
            assert time.monotonic() < deadline, "the worker never held its lock"
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
        status = Path(f"/proc/{proc.pid}/status").read_text()
        threads = int(status.split("Threads:")[1].split()[0])
        go_env = {k: v for k, v in exec_environment(proc.pid).items()
                  if k in ("NEONIZE_BOT_TAG", "GOMEMLIMIT", "GOGC")}
        return {"rss": rss_mib(proc.pid), "smaps": smaps(proc.pid), "threads": threads,
                "go_env": go_env}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await redis.aclose()


def ladder(driver: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "benchmarks.worker_imports",
                          driver], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent,
                         env={**os.environ, "NEONIZE_BOT_TAG": "off"})
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def print_report(results: dict[str, list[dict[str, Any]]]) -> None:
    print("\n| driver | RSS per run (MiB) | median | threads | Go environment |")
    print("|---|---|---|---|---|")
    for driver, runs in results.items():
        rss = [r["rss"] for r in runs]
        go = ", ".join(f"{k}={v}" for k, v in sorted(runs[0]["go_env"].items())) or "-"
        print(f"| {driver} | {', '.join(f'{x:.1f}' for x in rss)} | "
              f"{statistics.median(rss):.1f} | {runs[0]['threads']} | {go} |")

    print("\nResident pages of the first run by mapping (MiB; anonymous = private):\n")
    kinds = ["anon", "python and libpython", "C extensions (standard library)",
             "C extensions (site-packages)", "system libraries (libc, libssl, libcrypto, ...)",
             "go core"]
    drivers = list(results)
    print("| mapping | " + " | ".join(drivers) + " |")
    print("|---|" + "---|" * len(drivers))
    for kind in kinds:
        cells = []
        for driver in drivers:
            s = results[driver][0]["smaps"]
            rss, anon = s[f"{kind}:rss"], s[f"{kind}:anon"]
            cells.append(f"{mib(rss)}" + (f" ({mib(anon)} anonymous)"
                                          if anon and kind != "anon" else ""))
        print(f"| {kind} | " + " | ".join(cells) + " |")
    totals = []
    for driver in drivers:
        s = results[driver][0]["smaps"]
        rss = sum(v for k, v in s.items() if k.endswith(":rss"))
        anon = sum(v for k, v in s.items() if k.endswith(":anon"))
        totals.append(f"{mib(rss)} ({mib(anon)} anonymous, {mib(rss - anon)} file-backed)")
    print("| total | " + " | ".join(totals) + " |")

    print("\nBy layer (MiB added by each, in a fresh process; then the running worker):\n")
    print("| layer | " + " | ".join(drivers) + " |")
    print("|---|" + "---|" * len(drivers))
    ladders = {d: ladder(d) for d in drivers}
    names: list[str] = []
    for d in drivers:
        names += [step["step"] for step in ladders[d] if step["step"] not in names]
    for name in names:
        cells = []
        for d in drivers:
            steps = ladders[d]
            index = next((i for i, s in enumerate(steps) if s["step"] == name), None)
            if index is None:
                cells.append("-")
                continue
            before = steps[index - 1]["rss_kib"] if index else 0
            cells.append(mib(steps[index]["rss_kib"] - before))
        print(f"| {name} | " + " | ".join(cells) + " |")
    running = []
    for d in drivers:
        first = results[d][0]
        total = sum(v for k, v in first["smaps"].items() if k.endswith(":rss"))
        running.append(mib(total - ladders[d][-1]["rss_kib"]))
    print("| running worker: connections, tasks, threads (neonize: the Go client) | "
          + " | ".join(running) + " |")
    print("| **total (first run's RSS)** | " + " | ".join(
        mib(sum(v for k, v in results[d][0]["smaps"].items() if k.endswith(":rss")))
        for d in drivers) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--drivers", nargs="+", default=["simulator", "neonize"])
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="more environment for the workers (e.g. SALON_GO_GC_PERCENT=50)")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    state_dir = Path(tempfile.mkdtemp(prefix="salon-bench-mem-"))
    info = stack.start(state_dir, components=["postgres", "redis"])
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        for run in range(args.runs):
            for i, driver in enumerate(args.drivers):
                company = f"company_{920_000_000 + run * 100 + i}"
                result = asyncio.run(settle(info, company, driver, args.settle, state_dir,
                                            extra_env))
                results.setdefault(driver, []).append(result)
                print(f"run {run + 1}: {driver} {result['rss']:.1f} MiB", file=sys.stderr,
                      flush=True)
    finally:
        stack.stop(state_dir)
    print_report(results)


if __name__ == "__main__":
    main()
