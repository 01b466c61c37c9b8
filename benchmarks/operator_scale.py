"""Operator at scale: N SalonSessions applied at once, then N synthetic `connected` events.

    .venv/bin/python -m benchmarks.operator_scale --sessions 1000 --sessions 10000

For each N, on a fresh local stack (PostgreSQL, Redis, etcd, kube-apiserver,
controller-manager, scheduler) whose only node is a kwok fake node (`devstack/kwok.py`: the
session pods are scheduled there and kwok reports them Running, no worker process starts, so
only the operator and the control plane are measured):

1. create N SalonSessions concurrently (32 in flight) and measure the time until every
   StatefulSet exists and every status is `Starting` (followed through watches, not LISTs);
2. publish one `connected` event per session on `whatsapp:events` — once as a burst (all
   at once), once paced (over `--paced-s` seconds; by default N / 200, i.e. 200 events/s
   at every N: 5 s at 1,000, 50 s at 10,000) — and measure event -> status lag as a
   client sees it: from the PUBLISH to the watch event showing `connected: true`;
3. the operator's peak RSS (VmHWM) and CPU seconds (utime + stime) at the end;
4. API writes per session: the kube-apiserver's `apiserver_request_total` (by verb and
   resource) before the creates, once every status is `Starting`, and at the end, divided by N.
   The metric has no user label, so it counts every client; the report splits the resources
   (pods are the controller-manager's, the scheduler's and kwok's; SalonSession CREATEs are the
   benchmark's own) and sums the operator's resources separately.

Prints a JSON report per N (with the load average) and a Markdown table row for
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from devstack import kwok
from devstack import stack as devstack
from salon_sessions.core.channels import events_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ConnectedData, DisconnectedData, EventSource

REPO = Path(__file__).resolve().parent.parent
NS = "bench"
GROUP_PATH = "/apis/wa.salonsessions.io/v1alpha1"
WRITE_VERBS = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH", "APPLY": "APPLY",
               "DELETE": "DELETE", "DELETECOLLECTION": "DELETE"}
"""`apiserver_request_total`'s write verbs (it reports a create as POST, an update as PUT)."""
NOT_THE_OPERATORS = ("pods", "pods/", "nodes/", "controllerrevisions", "statefulsets/status",
                     "endpoints", "endpointslices", "serviceaccounts/token", "leases", "events")
"""Resources (prefixes) written by others: the controller-manager (pods, revisions, StatefulSet
status, Endpoints, its controllers' tokens), the scheduler (pods/binding), kwok (pods/status,
nodes/status, its node Lease). Leases and events are shared (the operator's leader Lease; kopf's
and the operator's events): the events are counted by their source at the end instead."""


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

    async def writes(self) -> Counter[str]:
        """The kube-apiserver's write requests so far, by "VERB resource[/subresource]"."""
        async with self.session.get(self.server + "/metrics") as resp:
            resp.raise_for_status()
            text = await resp.text()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if labels.get("verb") not in WRITE_VERBS or labels.get("dry_run"):
                continue
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            verb = WRITE_VERBS[labels["verb"]]
            counts[f"{verb} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
        return counts


class Follow:
    """One collection followed through a LIST and then a watch (polling LISTs of 10,000
    objects four times a second would load the API server more than the operator does)."""

    def __init__(self, api: Api, path: str) -> None:
        self.api, self.path = api, path
        self.objects: dict[str, dict[str, Any]] = {}
        self.connected_at: dict[str, float] = {}
        """When each object's status.connected turned true (cleared between rounds)."""
        self.task = asyncio.create_task(self._run())

    def _seen(self, obj: dict[str, Any], deleted: bool = False) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        before = (self.objects.get(name, {}).get("status") or {}).get("connected") is True
        if deleted:
            self.objects.pop(name, None)
            return
        self.objects[name] = {"status": {"phase": status.get("phase"),
                                         "connected": status.get("connected")}}
        if status.get("connected") is True and not before:
            self.connected_at.setdefault(name, time.monotonic())

    async def _run(self) -> None:
        rv = ""
        while True:
            if not rv:
                listing = await self.api.get(self.path)
                self.objects.clear()
                for obj in listing["items"]:
                    self._seen(obj)
                rv = listing["metadata"]["resourceVersion"]
            url = (f"{self.api.server}{self.path}?watch=1&allowWatchBookmarks=true"
                   f"&resourceVersion={rv}&timeoutSeconds=1800")
            try:
                async with self.api.session.get(
                        url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    async for line in resp.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            rv = ""  # expired: list again
                            break
                        rv = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self._seen(event["object"], event["type"] == "DELETED")
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(1)

    def count(self, phase: str | None = None, connected: bool | None = None) -> int:
        return sum(1 for o in self.objects.values()
                   if (phase is None or o["status"]["phase"] == phase)
                   and (connected is None or bool(o["status"]["connected"]) == connected))


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


def load() -> str:
    """The load average (1, 5, 15 min): the machine is shared with other work."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def wait_for(what: str, progress: Any, target: int, timeout: float,
                   interval: float = 0.25) -> float:
    """Until progress() reaches target; prints progress every 30 s; raises with how far."""
    started = last = time.monotonic()
    while time.monotonic() - started < timeout:
        if progress() >= target:
            return time.monotonic()
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            print(f"  {what}: {progress()}/{target} after {last - started:.0f} s "
                  f"(load {load()})", file=sys.stderr, flush=True)
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what}: {progress()}/{target} after {timeout:.0f} s (load {load()})")


async def create_sessions(api: Api, names: list[str]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(company: str) -> None:
        body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
                "metadata": {"name": company.replace("_", "-")},
                "spec": {"companyId": company, "driver": "simulator"}}
        async with gate:
            await api.post(f"{GROUP_PATH}/namespaces/{NS}/salonsessions", body)

    await asyncio.gather(*(one(c) for c in names))


async def connected_lag(sessions: Follow, redis_url: str, names: list[str],
                        paced_s: float, timeout: float) -> list[float]:
    """Publish one `connected` per session; lag until a watch shows connected=true."""
    published: dict[str, float] = {}
    sessions.connected_at.clear()
    client = aioredis.Redis.from_url(redis_url)
    try:
        delay = paced_s / len(names) if paced_s else 0.0
        jid = "79686484488:5@s.whatsapp.net"
        for company in names:
            name = company.replace("_", "-")
            payload = encode(EventSource(company, name).event(ConnectedData(jid=jid)))
            published[name] = time.monotonic()
            await client.publish(events_channel(company), payload)
            if delay:
                await asyncio.sleep(delay)
        await wait_for("connected", lambda: len(sessions.connected_at), len(names), timeout)
    finally:
        await client.aclose()
    return [sessions.connected_at[n] - published[n] for n in published]


def per_session(after: Counter[str], before: Counter[str], n: int,
                created: int = 0) -> dict[str, Any]:
    """Writes between two snapshots, per session: by verb (the operator's resources), and
    every resource for the record. `created`: the benchmark's own SalonSession creates."""
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    diff["CREATE salonsessions"] = diff.get("CREATE salonsessions", 0) - created
    ours = {k: v for k, v in diff.items()
            if not k.split(" ", 1)[1].startswith(NOT_THE_OPERATORS)}
    by_verb = Counter[str]()
    for key, value in ours.items():
        by_verb[key.split(" ", 1)[0]] += value
    return {"operator_by_verb": {v: round(c / n, 2) for v, c in sorted(by_verb.items())},
            "operator_total": round(sum(by_verb.values()) / n, 2),
            "all_by_resource": {k: round(v / n, 2) for k, v in sorted(diff.items()) if v}}


async def events_by_source(api: Api, n: int) -> dict[str, float]:
    """The namespace's Events per session by the component that wrote them (the metric
    cannot tell the operator's event writes from the controller-manager's)."""
    counts: Counter[str] = Counter()
    path, cont = f"/api/v1/namespaces/{NS}/events?limit=2000", ""
    while True:
        page = await api.get(path + (f"&continue={cont}" if cont else ""))
        for event in page["items"]:
            source = (event.get("reportingComponent")
                      or (event.get("source") or {}).get("component") or "?")
            counts[source] += event.get("count") or 1
        cont = page["metadata"].get("continue", "")
        if not cont:
            return {k: round(v / n, 2) for k, v in sorted(counts.items())}


def start_stack(state_dir: Path, bin_dir: Path | None) -> tuple[devstack.StackInfo, Any]:
    info = devstack.start(state_dir, components=("postgres", "redis", "kubernetes"),
                          bin_dir=bin_dir)
    proc = kwok.start(info)
    # No kwok taint: it is the cluster's only node, and the operator's pod template has no
    # toleration for it (nothing real can land anywhere here).
    kwok.add_node(info, proc, taint=False)
    info.kubectl("apply", "-f", str(REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"))
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/salonsessions.wa.salonsessions.io")
    info.kubectl("create", "namespace", NS)
    return info, proc


def start_operator(info: devstack.StackInfo, extra: dict[str, str]) -> tuple[int, int]:
    """devstack's operator for the namespace; (its pid, its /metrics port)."""
    env = {
        "SALON_IDENTITY": "bench", "SALON_LOG_LEVEL": "WARNING",
        # keep the heartbeat expiry (no worker runs here) out of the measured windows
        "SALON_WORKER_HEARTBEAT_TTL_S": "600", "SALON_HEARTBEAT_CHECK_S": "30",
        **extra,
    }
    pid = devstack.start_operator(Path(info.state_dir), info, NS, env).pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    port = next(int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"SALON_METRICS_PORT="))
    return pid, port


async def run_one(n: int, paced_s: float | None, extra: dict[str, str],
                  bin_dir: Path | None) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"salon-bench-{n}-"))
    result: dict[str, Any] = {"sessions": n, "load_start": load()}
    try:
        info, _ = start_stack(state_dir, bin_dir)
        operator, port = start_operator(info, extra)
    except BaseException:
        devstack.stop(state_dir)
        raise
    api = Api(info)
    names = companies(n)
    # the 100/1,000-session windows of the node-agent era, scaled for 10,000
    reconcile_timeout, event_timeout = max(600.0, 0.15 * n), max(120.0, 0.05 * n)
    sessions = Follow(api, f"{GROUP_PATH}/namespaces/{NS}/salonsessions")
    statefulsets = Follow(api, f"/apis/apps/v1/namespaces/{NS}/statefulsets")
    try:
        before = await api.writes()
        t0 = time.monotonic()
        await create_sessions(api, names)
        result["create_s"] = round(time.monotonic() - t0, 2)
        try:
            result["statefulsets_s"] = round(await wait_for(
                "StatefulSets", lambda: len(statefulsets.objects), n, reconcile_timeout) - t0, 2)
            result["all_starting_s"] = round(await wait_for(
                "Starting", lambda: sessions.count("Starting"), n, reconcile_timeout) - t0, 2)
        finally:
            result["load_reconciled"] = load()
            reconciled = await api.writes()
            result["writes_reconcile"] = per_session(reconciled, before, n, created=n)
            rss, cpu = proc_usage(operator)
            result["reconcile_rss_mib"], result["reconcile_cpu_s"] = round(rss), round(cpu, 1)
        await asyncio.sleep(3)
        burst = await connected_lag(sessions, info.redis_url, names, 0.0, event_timeout)
        result["burst_lag_p50_s"] = round(statistics.median(burst), 3)
        result["burst_lag_p99_s"] = round(percentile(burst, 0.99), 3)
        result["load_burst"] = load()
        # the same sessions again, paced: first make them disconnected (not measured)
        client = aioredis.Redis.from_url(info.redis_url)
        for c in names:
            await client.publish(events_channel(c), encode(EventSource(
                c, c.replace("_", "-")).event(DisconnectedData(reason="bench"))))
        await client.aclose()
        await wait_for("disconnected", lambda: sessions.count(connected=False), n,
                       max(300.0, 0.05 * n))
        paced_s = n / 200 if paced_s is None else paced_s
        paced = await connected_lag(sessions, info.redis_url, names, paced_s, event_timeout)
        result["paced_over_s"] = paced_s
        result["paced_lag_p50_s"] = round(statistics.median(paced), 3)
        result["paced_lag_p99_s"] = round(percentile(paced, 0.99), 3)
        result["load_end"] = load()
        rss, cpu = proc_usage(operator)
        result["peak_rss_mib"], result["cpu_s"] = round(rss), round(cpu, 1)
        result["writes_events"] = per_session(await api.writes(), reconciled, n)
        async with api.session.get(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = await r.text()
        result["status_patches_ok"] = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith('salon_operator_status_patches_total{result="ok"}'))
        # the level-triggered status must not fight its own writes: expected 0
        result["status_reasserts"] = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("salon_operator_status_reasserts_total{"))
        # the operator posts its Events from a bounded queue in the background
        result["operator_events"] = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("salon_operator_kube_events_total{")}
        result["events_by_source"] = await events_by_source(api, n)
        pods = await api.get(f"/api/v1/namespaces/{NS}/pods?resourceVersion=0")
        result["pods_running_at_end"] = sum(
            p["status"].get("phase") == "Running" for p in pods["items"])
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(result), flush=True)
        raise
    finally:
        for follow in (sessions, statefulsets):
            follow.task.cancel()
        await api.close()
        devstack.stop(state_dir)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, action="append", default=None)
    p.add_argument("--paced-s", type=float, default=None,
                   help="seconds the paced round spreads its N events over (default N / 200)")
    p.add_argument("--set", action="append", default=[], metavar="SALON_X=value",
                   help="extra operator settings, e.g. SALON_STATUS_CONCURRENCY=32")
    p.add_argument("--bin-dir", type=Path, default=None,
                   help="the Kubernetes binaries (default: scripts/build-k8s.sh's cache)")
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    rows = []
    for n in args.sessions or [1000, 10000]:
        result = asyncio.run(run_one(n, args.paced_s, extra, args.bin_dir))
        result["settings"] = extra
        print(json.dumps(result), flush=True)
        rows.append(result)
    print("| sessions | all StatefulSets | all Starting | burst lag p50 / p99 | "
          "paced lag p50 / p99 (over) | peak RSS | CPU | "
          "operator API writes / session (reconcile + event rounds + Events) | load |")
    for r in rows:
        print(f"| {r['sessions']} | {r['statefulsets_s']} s | {r['all_starting_s']} s | "
              f"{r['burst_lag_p50_s']} / {r['burst_lag_p99_s']} s | "
              f"{r['paced_lag_p50_s']} / {r['paced_lag_p99_s']} s ({r['paced_over_s']} s) | "
              f"{r['peak_rss_mib']} MiB | {r['cpu_s']} s | "
              f"{r['writes_reconcile']['operator_total']} + "
              f"{r['writes_events']['operator_total']} + "
              f"{r['events_by_source'].get('salon-sessions-operator', 0)} | "
              f"{r['load_reconciled']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
