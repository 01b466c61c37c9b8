"""Operator at scale: N SalonSessions applied at once, then N synthetic `connected` events.

    .venv/bin/python -m benchmarks.operator_scale --sessions 100 --sessions 1000

For each N, on a fresh local stack (PostgreSQL, Redis, etcd, kube-apiserver,
controller-manager, scheduler) whose node agent runs in `--no-run` mode (pods are reported
Running, no worker process starts, so only the operator and the control plane are measured):

1. create N SalonSessions concurrently (32 in flight) and measure the time until every
   StatefulSet exists and every status is `Starting`;
2. publish one `connected` event per session on `whatsapp:events` — once as a burst (all
   at once), once paced (over `--paced-s` seconds) — and measure event -> status lag as a
   client sees it: from the PUBLISH to the watch event showing `connected: true`;
3. the operator's peak RSS (VmHWM) and CPU seconds (utime + stime) at the end.

Prints a JSON report per N and a Markdown table row for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from devstack import stack as devstack
from devstack.procs import free_port, spawn, stop_pid, wait_until
from salon_sessions.core.channels import events_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ConnectedData, EventSource

REPO = Path(__file__).resolve().parent.parent
NS = "bench"
GROUP_PATH = "/apis/wa.salonsessions.io/v1alpha1"


class Api:
    def __init__(self, info: devstack.StackInfo) -> None:
        self.server = info.kube_server
        ctx = ssl.create_default_context(cafile=info.ca_file)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=64),
            headers={"Authorization": f"Bearer {info.admin_token}"})

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str) -> dict[str, Any]:
        async with self.session.get(self.server + path) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def post(self, path: str, body: dict[str, Any]) -> None:
        async with self.session.post(self.server + path, json=body) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"{resp.status}: {await resp.text()}")


def companies(n: int) -> list[str]:
    return [f"company_{700000 + i}" for i in range(n)]


def proc_usage(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines()
               if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def wait_for(what: str, check: Any, timeout: float, interval: float = 0.25) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic()
        await asyncio.sleep(interval)
    raise TimeoutError(what)


async def create_sessions(api: Api, names: list[str]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(company: str) -> None:
        body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
                "metadata": {"name": company.replace("_", "-")},
                "spec": {"companyId": company, "driver": "simulator"}}
        async with gate:
            await api.post(f"{GROUP_PATH}/namespaces/{NS}/salonsessions", body)

    await asyncio.gather(*(one(c) for c in names))


async def connected_lag(api: Api, redis_url: str, names: list[str],
                        paced_s: float) -> list[float]:
    """Publish one `connected` per session; lag until a watch shows connected=true."""
    listing = await api.get(f"{GROUP_PATH}/namespaces/{NS}/salonsessions")
    rv = listing["metadata"]["resourceVersion"]
    published: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        url = (f"{api.server}{GROUP_PATH}/namespaces/{NS}/salonsessions"
               f"?watch=1&resourceVersion={rv}&timeoutSeconds=300")
        async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for line in resp.content:
                event = json.loads(line)
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name not in seen and (obj.get("status") or {}).get("connected") is True:
                    seen[name] = time.monotonic()
                    if len(seen) == len(names):
                        done.set()
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    client = aioredis.Redis.from_url(redis_url)
    try:
        sources = {c: EventSource(c, c.replace("_", "-")) for c in names}
        delay = paced_s / len(names) if paced_s else 0.0
        jid = "79686484488:5@s.whatsapp.net"
        for company, source in sources.items():
            payload = encode(source.event(ConnectedData(jid=jid)))
            published[company.replace("_", "-")] = time.monotonic()
            await client.publish(events_channel(company), payload)
            if delay:
                await asyncio.sleep(delay)
        await asyncio.wait_for(done.wait(), 120)
    finally:
        watcher.cancel()
        await client.aclose()
    return [seen[n] - published[n] for n in published]


def start_stack(state_dir: Path) -> devstack.StackInfo:
    info = devstack.start(state_dir)
    devstack.stop_all_named(state_dir, ["nodeagent"])
    kdir = state_dir / "kube"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = spawn(state_dir, "nodeagent", [
        sys.executable, "-m", "devstack.nodeagent", "--kubeconfig",
        str(kdir / "node.kubeconfig"), "--node-name", devstack.NODE_NAME,
        "--state-dir", str(state_dir / "node"), "--tls-cert", str(kdir / "node.crt"),
        "--tls-key", str(kdir / "node.key"), "--no-run"], env=env, cwd=REPO)
    wait_until("node agent (no-run)", lambda: proc.poll() is None and "5k" in info.kubectl(
        "get", "node", devstack.NODE_NAME, "-o", "jsonpath={.status.allocatable.pods}").stdout,
        60, proc, state_dir / "logs" / "nodeagent.log")
    info.kubectl("apply", "-f", str(REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"))
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/salonsessions.wa.salonsessions.io")
    info.kubectl("create", "namespace", NS)
    return info


def start_operator(info: devstack.StackInfo, log: Path, port: int,
                   extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ["PATH"], "KUBECONFIG": info.kubeconfig,
        "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
        "SALON_NAMESPACE": NS, "SALON_IDENTITY": "bench", "SALON_METRICS_PORT": str(port),
        "SALON_HTTP_HOST": "127.0.0.1", "SALON_LOG_LEVEL": "WARNING",
        # keep the heartbeat expiry (no worker runs here) out of the measured windows
        "SALON_WORKER_HEARTBEAT_TTL_S": "600", "SALON_HEARTBEAT_CHECK_S": "30",
        **extra,
    }
    with open(log, "ab") as out:
        return subprocess.Popen([str(REPO / ".venv" / "bin" / "salon-sessions"), "operator"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


async def run_one(n: int, paced_s: float, extra: dict[str, str]) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"salon-bench-{n}-"))
    try:
        info = start_stack(state_dir)
    except BaseException:
        devstack.stop(state_dir)
        raise
    port = free_port()
    operator = start_operator(info, state_dir / "operator.log", port, extra)
    api = Api(info)
    names = companies(n)
    result: dict[str, Any] = {"sessions": n}
    try:
        async def ready() -> bool:
            try:
                async with api.session.get(f"http://127.0.0.1:{port}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for("operator ready", ready, 60)
        t0 = time.monotonic()
        await create_sessions(api, names)
        result["create_s"] = round(time.monotonic() - t0, 2)

        async def all_statefulsets() -> bool:
            items = (await api.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets"))["items"]
            return len(items) >= n

        async def all_starting() -> bool:
            items = (await api.get(f"{GROUP_PATH}/namespaces/{NS}/salonsessions"))["items"]
            return sum((i.get("status") or {}).get("phase") == "Starting" for i in items) >= n

        result["statefulsets_s"] = round(await wait_for("StatefulSets", all_statefulsets,
                                                        600) - t0, 2)
        result["all_starting_s"] = round(await wait_for("Starting", all_starting, 600) - t0,
                                         2)
        rss, cpu = proc_usage(operator.pid)
        result["reconcile_rss_mib"], result["reconcile_cpu_s"] = round(rss), round(cpu, 1)
        await asyncio.sleep(3)
        burst = await connected_lag(api, info.redis_url, names, 0.0)
        result["burst_lag_p50_s"] = round(statistics.median(burst), 3)
        result["burst_lag_p99_s"] = round(percentile(burst, 0.99), 3)
        # the same sessions again, paced: first make them disconnected (not measured)
        client = aioredis.Redis.from_url(info.redis_url)
        from salon_sessions.core.events import DisconnectedData
        for c in names:
            await client.publish(events_channel(c), encode(EventSource(
                c, c.replace("_", "-")).event(DisconnectedData(reason="bench"))))
        await client.aclose()

        async def all_disconnected() -> bool:
            items = (await api.get(f"{GROUP_PATH}/namespaces/{NS}/salonsessions"))["items"]
            return not any((i.get("status") or {}).get("connected") for i in items)

        await wait_for("disconnected", all_disconnected, 300)
        paced = await connected_lag(api, info.redis_url, names, paced_s)
        result["paced_over_s"] = paced_s
        result["paced_lag_p50_s"] = round(statistics.median(paced), 3)
        result["paced_lag_p99_s"] = round(percentile(paced, 0.99), 3)
        rss, cpu = proc_usage(operator.pid)
        result["peak_rss_mib"], result["cpu_s"] = round(rss), round(cpu, 1)
        async with api.session.get(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = await r.text()
        result["status_patches_ok"] = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith('salon_operator_status_patches_total{result="ok"}'))
        # the level-triggered status must not fight its own writes: expected 0
        result["status_reasserts"] = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("salon_operator_status_reasserts_total{"))
    finally:
        await api.close()
        stop_pid(operator.pid)
        devstack.stop(state_dir)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, action="append", default=None)
    p.add_argument("--paced-s", type=float, default=5.0)
    p.add_argument("--set", action="append", default=[], metavar="SALON_X=value",
                   help="extra operator settings, e.g. SALON_STATUS_CONCURRENCY=32")
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    rows = []
    for n in args.sessions or [100, 1000]:
        result = asyncio.run(run_one(n, args.paced_s, extra))
        result["settings"] = extra
        print(json.dumps(result), flush=True)
        rows.append(result)
    print("| sessions | all StatefulSets | all Starting | burst lag p50 / p99 | "
          f"paced ({args.paced_s:.0f} s) lag p50 / p99 | peak RSS | CPU |")
    for r in rows:
        print(f"| {r['sessions']} | {r['statefulsets_s']} s | {r['all_starting_s']} s | "
              f"{r['burst_lag_p50_s']} / {r['burst_lag_p99_s']} s | "
              f"{r['paced_lag_p50_s']} / {r['paced_lag_p99_s']} s | "
              f"{r['peak_rss_mib']} MiB | {r['cpu_s']} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
