"""What a salon costs the shared services, measured with real session workers (issue 16).

    flock /tmp/salon-stack.flock .venv/bin/python -m benchmarks.capacity \
        --sizes 10,100,300 --driver simulator
    flock /tmp/salon-stack.flock .venv/bin/python -m benchmarks.capacity \
        --sizes 10,100 --driver neonize

Starts its own PostgreSQL and Redis (devstack, as `make demo` runs them), then for each size N
starts N `salon-sessions worker` processes with the default settings and reads, per phase:

- PostgreSQL client backends by `application_name` (what each connection is for), their
  private memory (USS from `/proc/<pid>/smaps_rollup`) and the whole server's PSS;
- Redis clients by `CLIENT SETNAME` name, their memory (`CLIENT LIST` tot-mem) and Redis'
  `used_memory`;
- worker RSS (mean and max), and for the idle phase the worker CPU and the Redis commands per
  session and second (`INFO commandstats`).

Phases, simulator driver: `linking` (the peak while every worker shows its QR and is scanned),
`idle` (linked and connected, `--idle-wait` seconds later: the pools have shrunk), `sending`
(the peak while every worker sends `--sends` unpaced messages), `idle again`.
neonize driver: `starting` (the peak of the first `--idle-wait` seconds) and `idle` (in its
network-retry loop: WhatsApp is unreachable from this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from benchmarks.measure import rss_mib
from benchmarks.messages import send_command, wait_lengths
from benchmarks.messages_fleet import UNPACED, Fleet, delta, redis_counters
from devstack import stack
from salon_sessions.core import channels

POD_MEMORY_LIMIT = str(512 * 2**20)
ADMIN_COMMANDS = ("client|list", "info", "client", "ping", "hello", "select")
"""Commands of this benchmark itself (and of connection set-up), not the workers' load."""


def purpose(name: str) -> str:
    """`salon-lock:company_1` → `salon-lock`; unnamed connections are `(unnamed)`."""
    return name.split(":", 1)[0] or "(unnamed)"


def uss_kib(pid: int) -> tuple[int, int]:
    """(USS, PSS) of a process in KiB; (0, 0) when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    fields = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Pss"]


@dataclass
class Sample:
    pg: Counter[str] = field(default_factory=Counter)
    pg_uss_kib: int = 0
    pg_server_pss_kib: int = 0
    redis: Counter[str] = field(default_factory=Counter)
    redis_client_kib: int = 0
    redis_used_kib: int = 0
    rss: list[float] = field(default_factory=list)

    def peak(self, other: Sample) -> Sample:
        """The larger of each reading (for a phase's peak)."""
        return Sample(
            pg=other.pg if sum(other.pg.values()) > sum(self.pg.values()) else self.pg,
            pg_uss_kib=max(self.pg_uss_kib, other.pg_uss_kib),
            pg_server_pss_kib=max(self.pg_server_pss_kib, other.pg_server_pss_kib),
            redis=(other.redis if sum(other.redis.values()) > sum(self.redis.values())
                   else self.redis),
            redis_client_kib=max(self.redis_client_kib, other.redis_client_kib),
            redis_used_kib=max(self.redis_used_kib, other.redis_used_kib),
            rss=other.rss if sum(other.rss) > sum(self.rss) else self.rss)


class Probe:
    """Reads PostgreSQL, Redis and the workers' /proc."""

    def __init__(self, pg: asyncpg.Connection, redis: Redis, postmaster: int) -> None:
        self._pg = pg
        self._redis = redis
        self._postmaster = postmaster

    def _server_pids(self) -> list[int]:
        pids = [self._postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self._postmaster:
                pids.append(int(stat.parent.name))
        return pids

    async def sample(self, fleet: Fleet) -> Sample:
        s = Sample()
        rows = await self._pg.fetch(
            "SELECT pid, application_name FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        for row in rows:
            s.pg[purpose(row["application_name"])] += 1
            s.pg_uss_kib += uss_kib(row["pid"])[0]
        s.pg_server_pss_kib = sum(uss_kib(pid)[1] for pid in self._server_pids())
        clients: Any = await self._redis.client_list()
        for c in clients:
            if c.get("name") == "salon-bench":
                continue
            s.redis[purpose(c.get("name", ""))] += 1
            s.redis_client_kib += int(c.get("tot-mem", 0)) // 1024
        memory: Any = await self._redis.info("memory")
        s.redis_used_kib = int(memory["used_memory"]) // 1024
        s.rss = [rss_mib(p.pid) for p in fleet.procs if p.poll() is None]
        return s


def report(label: str, n: int, s: Sample, extra: str = "") -> str:
    pg_total = sum(s.pg.values())
    redis_total = sum(s.redis.values())
    pg_by = ", ".join(f"{k} {v}" for k, v in sorted(s.pg.items()))
    redis_by = ", ".join(f"{k} {v}" for k, v in sorted(s.redis.items()))
    rss = (f"worker RSS mean {statistics.fmean(s.rss):.1f} MiB, max {max(s.rss):.1f} MiB"
           if s.rss else "no workers")
    per_backend = s.pg_uss_kib / pg_total / 1024 if pg_total else 0.0
    return (f"  {label:<11} PostgreSQL {pg_total} backends ({pg_total / n:.2f}/session: "
            f"{pg_by}); backend USS {per_backend:.2f} MiB each, server PSS "
            f"{s.pg_server_pss_kib / 1024:.0f} MiB\n"
            f"  {'':<11} Redis {redis_total} clients ({redis_total / n:.2f}/session: "
            f"{redis_by}); client memory {s.redis_client_kib / max(redis_total, 1):.0f} KiB "
            f"each, used_memory {s.redis_used_kib / 1024:.1f} MiB\n"
            f"  {'':<11} {rss}{extra}")


async def watch_peak(probe: Probe, fleet: Fleet, until: asyncio.Future[Any]) -> Sample:
    peak = Sample()
    while not until.done():
        peak = peak.peak(await probe.sample(fleet))
        await asyncio.wait([until], timeout=2)
    return peak.peak(await probe.sample(fleet))


async def idle_window(probe: Probe, redis: Redis, fleet: Fleet, seconds: float) -> str:
    """Worker CPU and Redis commands per session over `seconds` of idling."""
    n = len(fleet.companies)
    cpu0, r0, t0 = fleet.cpu(), await redis_counters(redis), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, r1, t1 = fleet.cpu(), await redis_counters(redis), time.monotonic()
    elapsed = t1 - t0
    calls = delta(r1, r0)
    redis_cpu = calls.pop("cpu", 0.0)
    ops = sum(v for k, v in calls.items() if k not in ADMIN_COMMANDS)
    top = sorted(((v, k) for k, v in calls.items() if k not in ADMIN_COMMANDS), reverse=True)
    top_s = ", ".join(f"{k} {v / n / elapsed:.2f}" for v, k in top[:6])
    return (f"\n  {'':<11} idle over {elapsed:.0f} s: worker CPU "
            f"{(cpu1 - cpu0) / n / elapsed * 1000:.2f} ms/s per session; Redis "
            f"{ops / n / elapsed:.2f} commands/s per session ({top_s}), Redis CPU "
            f"{redis_cpu / elapsed * 1000:.1f} ms/s in all")


async def send_all(redis: Redis, fleet: Fleet, per: int) -> None:
    tag = f"cap{int(time.time())}"
    pipe = redis.pipeline(transaction=False)
    for j in range(per):
        for n, c in enumerate(fleet.companies):
            pipe.xadd(channels.outbound_stream(c), send_command(
                c, f"{tag}:{j}", f"7900{(n * 7 + j) % 10**7:07d}", f"hello {j}"))
    await pipe.execute()
    await wait_lengths(redis, [channels.results_stream(c) for c in fleet.companies], per,
                       timeout=900)


async def until_holding(redis: Redis, fleet: Fleet, timeout: float) -> None:
    pending = set(fleet.companies)
    async with asyncio.timeout(timeout):
        while pending:
            for c in list(pending):
                if await redis.hget(channels.session_state_key(c), "lock") == \
                        b"holding the session lock":
                    pending.discard(c)
            await asyncio.sleep(1)


async def one_size(args: argparse.Namespace, info: stack.StackInfo, log_dir: Path,
                   n: int, base: int, probe: Probe, redis: Redis) -> None:
    env = dict(UNPACED) if args.driver == "simulator" else {
        "SALON_DRIVER": "neonize", "SALON_MEMORY_LIMIT_BYTES": POD_MEMORY_LIMIT}
    fleet = Fleet.start(info, log_dir, n, base, env)
    print(f"{n} {args.driver} workers", flush=True)
    try:
        t0 = time.monotonic()
        if args.driver == "simulator":
            linking = asyncio.ensure_future(fleet.link(redis, timeout=1800))
            peak = await watch_peak(probe, fleet, linking)
            await linking
            print(report("linking", n, peak,
                         f" (all linked {time.monotonic() - t0:.0f} s after start)"), flush=True)
        else:
            holding = asyncio.ensure_future(until_holding(redis, fleet, 1800))
            await holding
            window = asyncio.ensure_future(asyncio.sleep(args.idle_wait))
            peak = await watch_peak(probe, fleet, window)
            print(report("starting", n, peak,
                         f" (all holding their lock {time.monotonic() - t0:.0f} s after "
                         "start)"), flush=True)
        await asyncio.sleep(args.idle_wait)
        idle = await probe.sample(fleet)
        print(report("idle", n, idle, await idle_window(probe, redis, fleet, args.window)),
              flush=True)
        if args.driver == "simulator" and args.sends:
            t0 = time.monotonic()
            sending = asyncio.ensure_future(send_all(redis, fleet, args.sends))
            peak = await watch_peak(probe, fleet, sending)
            await sending
            print(report("sending", n, peak, f" ({args.sends} sends per session in "
                                             f"{time.monotonic() - t0:.0f} s)"), flush=True)
            await asyncio.sleep(args.idle_wait)
            print(report("idle again", n, await probe.sample(fleet)), flush=True)
    finally:
        t0 = time.monotonic()
        fleet.stop()
        print(f"  stopped in {time.monotonic() - t0:.1f} s", flush=True)


async def run(args: argparse.Namespace, info: stack.StackInfo, log_dir: Path) -> None:
    redis = Redis.from_url(info.redis_url, client_name="salon-bench")
    pg = await asyncpg.connect(info.postgres_dsn)
    postmaster = int((Path(info.state_dir) / "postgres" / "data" / "postmaster.pid")
                     .read_text().split()[0])
    probe = Probe(pg, redis, postmaster)
    try:
        for i, n in enumerate(args.sizes):
            await one_size(args, info, log_dir, n, 940_000_000 + i * 10_000, probe, redis)
    finally:
        await pg.close()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                        default=[10, 100, 300])
    parser.add_argument("--driver", choices=("simulator", "neonize"), default="simulator")
    parser.add_argument("--idle-wait", type=float, default=40.0,
                        help="seconds after linking before the idle reading (> the pool's "
                             "30 s idle timeout)")
    parser.add_argument("--window", type=float, default=30.0, help="idle CPU window (s)")
    parser.add_argument("--sends", type=int, default=20, help="sends per session")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    state_dir = Path(tempfile.mkdtemp(prefix="salon-capacity-"))
    info = stack.start(state_dir, components=["postgres", "redis"])
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average "
          f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    try:
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        asyncio.run(run(args, info, state_dir))
    finally:
        stack.stop(state_dir)


if __name__ == "__main__":
    main()
