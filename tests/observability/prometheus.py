"""A real Prometheus (Debian's /usr/bin/prometheus) on a free loopback port, scraping given
targets every second with the labels the chart's ServiceMonitor/PodMonitor set
(`component`, `namespace`, `pod`, `company_id`), with monitoring/alerts.yaml loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.procs import StartError, free_port, http_ok, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "monitoring" / "alerts.yaml"


def prometheus_bin() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


@dataclass
class ScrapeTarget:
    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


class PrometheusError(Exception):
    pass


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    targets_dir: Path | None = None
    scrape: list[ScrapeTarget] = field(default_factory=list)

    def add_targets(self, *targets: ScrapeTarget) -> None:
        """Scrape more targets from now on (file-based discovery: Prometheus reads the
        changed target files at once)."""
        assert self.targets_dir is not None
        self.scrape.extend(targets)
        _write_targets(self.targets_dir, self.scrape)

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises PrometheusError when Prometheus refuses the expression."""
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query_range", query=expr, start=str(start), end=str(end),
                        step=str(step))
        result: list[dict[str, Any]] = data["result"]
        return result

    def metadata(self) -> dict[str, list[dict[str, str]]]:
        data: dict[str, list[dict[str, str]]] = self.get("/api/v1/metadata")
        return data

    def targets(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get("/api/v1/targets")["activeTargets"]
        return data

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"]
                for rule in group["rules"]]

    def wait_scraped(self, jobs: set[str], timeout: float = 60) -> None:
        """Until every job has a healthy target that was scraped at least twice."""
        deadline = time.monotonic() + timeout
        while True:
            up = {t["labels"]["job"] for t in self.targets() if t["health"] == "up"}
            counts = {job: self.query(f'count_over_time(up{{job="{job}"}}[1m])')
                      for job in jobs & up}
            if all(c and float(c[0]["value"][1]) >= 2 for c in counts.values()) \
                    and jobs <= up:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not scraped: {jobs - up}; "
                                     f"{json.dumps(self.targets())[:2000]}")
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process(self.proc, grace=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _write_targets(tmp: Path, targets: list[ScrapeTarget], empty_jobs: Iterable[str] = ()) -> None:
    jobs: dict[str, list[dict[str, Any]]] = {job: [] for job in empty_jobs}
    for target in targets:
        jobs.setdefault(target.job, []).append(
            {"targets": [target.address], "labels": target.labels})
    for job, static in jobs.items():
        path = tmp / f"targets-{job}.json"
        (tmp / f".{path.name}").write_text(json.dumps(static))
        (tmp / f".{path.name}").replace(path)  # whole files only


def start_prometheus(tmp: Path, targets: list[ScrapeTarget], scrape_interval: str = "1s",
                     later_jobs: Iterable[str] = ()) -> Prometheus:
    """Prometheus scraping `targets`, and the jobs of `later_jobs` once
    `Prometheus.add_targets` gives them targets."""
    binary = prometheus_bin()
    if binary is None:
        raise RuntimeError("prometheus is not installed (scripts/bootstrap.sh installs it)")
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ALERTS, tmp / "alerts.yaml")
    # every job reads its targets from a file (`Prometheus.add_targets` adds more)
    jobs = sorted({t.job for t in targets} | set(later_jobs))
    _write_targets(tmp, targets, jobs)
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                   "evaluation_interval": scrape_interval},
        "rule_files": [str(tmp / "alerts.yaml")],
        "scrape_configs": [{"job_name": job, "file_sd_configs": [
            {"files": [str(tmp / f"targets-{job}.json")], "refresh_interval": "1s"}]}
            for job in jobs],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp / "prometheus.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log_path, tmp, list(targets))
    try:
        wait_until("prometheus", lambda: http_ok(f"{prom.url}/-/ready"), 60, proc, log_path)
    except StartError:
        prom.stop()
        raise
    return prom
