"""Real session workers for the message benchmarks: start N, link them, read their CPU, stop.

Each worker is a `salon-sessions worker` process with the simulator driver, started once per
benchmark run and reused by every measurement (starting 100 Python processes on 2 cores takes
longer than any one measurement). The benchmark links them as a phone would: it scans the QR
each worker stores in `whatsapp:qr:<company>`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks.measure import CLK_TCK, VENV_BIN, cpu_seconds
from devstack import stack
from devstack.phone import link_all

UNPACED = {"SALON_SEND_PACING": "false", "SALON_SEND_TYPING": "false"}
"""The bridge itself, without the pacing a salon's bot experiences (docs/BOT.md)."""


@dataclass
class Fleet:
    """N linked workers, one company each."""

    companies: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, info: stack.StackInfo, log_dir: Path, n: int, base: int,
              env: dict[str, str]) -> Fleet:
        fleet = cls([f"company_{base + i}" for i in range(n)])
        for i, company in enumerate(fleet.companies):
            tmp = log_dir / f"{company}.tmp"  # its own /tmp, as in a pod (the fence file)
            tmp.mkdir(parents=True, exist_ok=True)
            worker_env = {
                "PATH": os.environ["PATH"], "HOME": str(log_dir), "TMPDIR": str(tmp),
                "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
                "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
                "SALON_DRIVER": "simulator", "SALON_POD_NAME": f"bench-{i}",
                "SALON_METRICS_PORT": "0", "SALON_SIMULATOR_FIRST_QR_S": "1",
                "SALON_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
                **env,
            }
            with open(log_dir / f"{company}.log", "ab") as log:
                fleet.procs.append(subprocess.Popen(
                    [str(VENV_BIN / "salon-sessions"), "worker"], env=worker_env,
                    stdout=log, stderr=subprocess.STDOUT))
        return fleet

    async def link(self, redis: Redis, timeout: float = 300) -> float:
        """Scan every worker's QR until all are connected; returns the seconds it took."""
        t0 = time.monotonic()
        async with asyncio.timeout(timeout):
            await link_all(redis, self.companies, interval=0.5, check=self._check_alive)
        return time.monotonic() - t0

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode}")

    def cpu(self) -> float:
        """User + system CPU seconds of all the workers so far."""
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def system_cpu(self) -> float:
        """The system (kernel) part of `cpu()`."""
        total = 0
        for p in self.procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(") ", 1)[1].split()
            total += int(fields[12])
        return total / CLK_TCK

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def redis_counters(redis: Redis) -> dict[str, float]:
    """Redis' own CPU seconds and command calls so far (`INFO cpu`, `INFO commandstats`)."""
    cpu: Any = await redis.info("cpu")
    stats: Any = await redis.info("commandstats")
    out = {"cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
    for name, value in stats.items():
        out[name.removeprefix("cmdstat_")] = float(value["calls"])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
