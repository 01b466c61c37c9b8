"""The dashboards and alerts against a real Prometheus holding 1,000 sessions' series.

    .venv/bin/python -m benchmarks.prometheus_series --sessions 1000 --duration 300

No cluster, no Redis: one aiohttp server serves 1,000 synthetic worker /metrics targets (the
exposition of the real metric classes, benchmarks/series_shapes.py: 90 % an ordinary
connected session, 10 % with every label value set; counters grow between scrapes), the
operator's /metrics (the real OperatorMetrics with 1,000 pinged sessions) and the API's.
Debian's Prometheus (tests/observability/prometheus.py, monitoring/alerts.yaml loaded and
evaluated) scrapes them with the labels the chart's PodMonitor/ServiceMonitor set
(`component`, `namespace`, `pod`, `company_id`).

Time is compressed 6x: scrapes every 5 s instead of the chart's 30 s, so `--duration 600`
holds as many samples per series as an hour of a real cluster (the boards' default range,
a 30 s step: 120 steps). Every expression of every
dashboard panel is then run as Grafana runs it (a range query over the whole run, step 5 s,
`$__rate_interval` 20 s, every variable at All = the worst case), every alert expression as
the rule evaluator does (instant), and each template variable's `label_values` query; each
three times (the median reported), with Prometheus's own statistics (samples read, series
returned). Reports Prometheus's resident memory and TSDB head series.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks import series_shapes as shapes
from benchmarks.measure import rss_mib
from devstack.procs import free_port
from salon_sessions.api.metrics import ApiMetrics
from tests.observability.prometheus import Prometheus, ScrapeTarget, start_prometheus
from tools import dashboards

REPO = Path(__file__).resolve().parents[1]
SCRAPE_S = 5
RATE_INTERVAL = f"{4 * SCRAPE_S}s"  # Grafana: max(step + scrape, 4 x scrape)
NAMESPACE = "salons"
GROWING = re.compile(r"(_total|_bucket|_count|_sum)(\{|\s)")
TROUBLE = re.compile(r"dropped|failures|retries|rejected|restarts|reconnects|not_stored|ignored"
                     r"|gap_seconds")
"""Counters of trouble stay still (the alerts would fire for every session otherwise)."""


class Exposition:
    """A worker's /metrics text whose counters grow by one per scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines: list[tuple[str, float, bool]] = []
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("#") or not line:
                self.lines.append((line, 0.0, False))
                continue
            name, _, value = line.rpartition(" ")
            grows = bool(GROWING.search(line)) and not TROUBLE.search(name)
            self.lines.append((name, float(value), grows))

    def render(self, scrapes: int) -> bytes:
        out = []
        for name, value, grows in self.lines:
            if not name or name.startswith("#"):
                out.append(name)
            else:
                out.append(f"{name} {value + scrapes if grows else value}")
        return ("\n".join(out) + "\n").encode()


def api_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    m = ApiMetrics(registry)
    for route in ("/sessions", "/sessions/{company_id}", "/sessions/{company_id}/qr",
                  "/onboarding/{company_id}", "/health/pubsub", "/metrics"):
        for status in ("200", "404"):
            m.requests.labels("GET", route, status).observe(0.01)
    m.ws_clients.set(20)
    m.ws_connections.labels("accepted").inc()
    m.events_routed.labels("qr").inc()
    m.fanned_out.labels("qr").inc()
    m.health_rtt.labels("pubsub").observe(0.002)
    m.health_rtt.labels("simple").observe(0.001)
    m.consumer.consumed.labels("api", "qr").inc()
    m.subscriber.connected.labels("api").set(1)
    return registry


class Targets:
    def __init__(self, sessions: int, seed: int = 16) -> None:
        rng = random.Random(seed)
        typical = Exposition(shapes.worker_registry(everything=False))
        full = Exposition(shapes.worker_registry())
        self.workers = [full if rng.random() < 0.1 else typical for _ in range(sessions)]
        self.scrapes = [0] * sessions
        self.sessions = sessions
        self.rng = rng
        self.api = api_registry()
        self.operator = shapes.operator_registry(sessions)

    async def worker(self, request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        self.scrapes[i] += 1
        return web.Response(body=self.workers[i].render(self.scrapes[i]),
                            content_type="text/plain")

    async def op(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.operator), content_type="text/plain")

    async def api_metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.api), content_type="text/plain")


def serve(targets: Targets, port: int) -> None:
    app = web.Application()
    app.router.add_get("/w/{i}/metrics", targets.worker)
    app.router.add_get("/operator/metrics", targets.op)
    app.router.add_get("/api/metrics", targets.api_metrics)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    loop.run_forever()


def scrape_targets(sessions: int, port: int) -> list[ScrapeTarget]:
    address = f"127.0.0.1:{port}"
    out = [ScrapeTarget("operator", address, {"__metrics_path__": "/operator/metrics",
                                              "component": "operator", "namespace": NAMESPACE,
                                              "pod": "salon-sessions-operator-0"}),
           ScrapeTarget("api", address, {"__metrics_path__": "/api/metrics",
                                         "component": "api", "namespace": NAMESPACE,
                                         "pod": "salon-sessions-api-0"})]
    for i in range(sessions):
        out.append(ScrapeTarget("session-workers", address, {
            "__metrics_path__": f"/w/{i}/metrics", "component": "session-worker",
            "namespace": NAMESPACE, "pod": f"salon-company-{i}-0", "company_id": f"company_{i}",
            "instance": f"10.244.{i // 250}.{i % 250}:9090"}))
    return out


@dataclass
class Result:
    kind: str
    where: str
    expr: str
    ms: float
    samples: int
    series: int
    error: str = ""


def timed(prom: Prometheus, path: str, params: dict[str, str]) -> tuple[float, Any]:
    query = urllib.parse.urlencode(params)
    started = time.perf_counter()
    with urllib.request.urlopen(f"{prom.url}{path}?{query}", timeout=120) as resp:
        body = json.loads(resp.read())
    return (time.perf_counter() - started) * 1000, body


def run_query(prom: Prometheus, kind: str, where: str, expr: str, path: str,
              params: dict[str, str], repeat: int = 3) -> Result:
    times, body = [], {}
    for _ in range(repeat):
        try:
            ms, body = timed(prom, path, params | {"stats": "all"})
        except urllib.error.HTTPError as exc:
            return Result(kind, where, expr, 0, 0, 0, exc.read().decode()[:200])
        times.append(ms)
    data = body.get("data", {})
    stats = data.get("stats", {}) if isinstance(data, dict) else {}
    result = data.get("result", data) if isinstance(data, dict) else data
    return Result(kind, where, expr, statistics.median(times),
                  int(stats.get("samples", {}).get("totalQueryableSamples", 0)),
                  len(result) if isinstance(result, list) else 0)


def all_queries(prom: Prometheus, start: float, end: float) -> list[Result]:
    results = []
    rng = {"start": str(start), "end": str(end), "step": str(SCRAPE_S)}
    for uid, board in dashboards.load_shipped().items():
        for title, expr in dashboards.iter_exprs(board):
            q = dashboards.substitute(expr, RATE_INTERVAL)
            results.append(run_query(prom, "panel", f"{uid} / {title}", q,
                                     "/api/v1/query_range", rng | {"query": q}))
        for var in board["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", str(var.get("query", "")))
            if m:
                match = dashboards.substitute(m.group(1))
                results.append(run_query(
                    prom, "variable", f"{uid} / ${var['name']}", var["query"],
                    f"/api/v1/label/{m.group(2)}/values",
                    {"match[]": match, "start": str(start), "end": str(end)}))
    rules = yaml.safe_load((REPO / "monitoring" / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            results.append(run_query(prom, "alert", rule.get("alert") or rule.get("record"),
                                     rule["expr"], "/api/v1/query",
                                     {"query": rule["expr"], "time": str(end)}))
    return results


def scalar(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600,
                        help="seconds of scraping before the queries (5 s scrapes)")
    parser.add_argument("--budget-ms", type=float, default=500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    targets = Targets(args.sessions)
    port = free_port()
    threading.Thread(target=serve, args=(targets, port), daemon=True).start()
    print(f"[series] one worker: {shapes.count(shapes.worker_registry(everything=False))} "
          f"series (ordinary), {shapes.count(shapes.worker_registry())} (every label value); "
          f"operator: {shapes.count(targets.operator)} series for {args.sessions} sessions")
    with tempfile.TemporaryDirectory(prefix="salon-series-") as tmp:
        prom = start_prometheus(Path(tmp), scrape_targets(args.sessions, port),
                                scrape_interval=f"{SCRAPE_S}s")
        try:
            prom.wait_scraped({"operator", "api", "session-workers"}, timeout=120)
            start = time.time()
            while (up := scalar(prom, 'count(up{job="session-workers"} == 1)')) \
                    < args.sessions and time.time() - start < 120:
                time.sleep(2)
            print(f"[series] {up:.0f} worker targets up; scraping for {args.duration:.0f} s")
            time.sleep(args.duration)
            end = time.time()
            head = prom.get("/api/v1/status/tsdb")["headStats"]
            memory = rss_mib(prom.proc.pid)
            per_target = scalar(prom, 'avg(scrape_samples_scraped{job="session-workers"})')
            op_series = scalar(prom, 'scrape_samples_scraped{job="operator"}')
            results = all_queries(prom, start, end)
            memory_after = rss_mib(prom.proc.pid)
            durations = max(g["evaluationTime"] for g in prom.get("/api/v1/rules")["groups"])
        finally:
            prom.stop()
    report(args, head, memory, memory_after, per_target, op_series, durations, results)


def report(args: argparse.Namespace, head: dict[str, Any], memory: float, memory_after: float,
           per_target: float, op_series: float, rule_s: float, results: list[Result]) -> None:
    print(f"[series] TSDB head series {head['numSeries']}, Prometheus RSS {memory:.0f} MiB "
          f"(after the queries {memory_after:.0f} MiB); worker targets "
          f"{per_target:.1f} samples per scrape, operator {op_series:.0f}; slowest alert "
          f"group evaluation {rule_s * 1000:.1f} ms")
    print("| kind | where | ms (median of 3) | samples read | series returned |")
    print("|---|---|---:|---:|---:|")
    for r in sorted(results, key=lambda r: -r.ms):
        flag = f" ERROR {r.error}" if r.error else ""
        print(f"| {r.kind} | {r.where} | {r.ms:.1f} | {r.samples} | {r.series}{flag} |")
    worst = max(results, key=lambda r: r.ms)
    over = [r for r in results if r.ms > args.budget_ms or r.error]
    print(f"[series] {len(results)} queries; slowest {worst.ms:.0f} ms ({worst.where}); "
          f"budget {args.budget_ms:.0f} ms per query: "
          f"{'holds' if not over else f'{len(over)} over'}")
    if args.json:
        args.json.write_text(json.dumps({
            "head": head, "rss_mib": memory, "rss_after_mib": memory_after,
            "results": [r.__dict__ for r in results]}, indent=1))


if __name__ == "__main__":
    main()
