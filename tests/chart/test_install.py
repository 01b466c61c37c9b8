"""`helm install` into the local stack, end to end, with one install for the whole module:

1. the chart installs (migrations hook, operator, API, RBAC, monitoring objects);
2. a SalonSession created through the API (simulator driver) goes to `connected`;
3. a real Prometheus scraping the operator, the API and the worker evaluates every
   dashboard and alert expression: each parses and returns data;
4. the dashboard previews render to PNG;
5. `helm upgrade` rolls the components and keeps the session connected;
6. `helm uninstall` leaves nothing of the release behind (the CRD stays, by Helm's rule).

The node agent runs the chart's containers as local processes on the host network, so the
values give each component a free port, one replica each (two replicas would bind the same
port), `Recreate` updates (a surge pod would too), and a kubeconfig file holding the
chart's own ServiceAccount token (the node agent mounts no token): the operator and the
API run with exactly the RBAC the chart grants.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets.sync.client
import yaml

from devstack import stack as devstack_stack
from devstack.procs import free_port
from devstack.stack import StackInfo
from salon_sessions.core import channels
from salon_sessions.core.codec import encode
from salon_sessions.core.events import PongData, PongEvent
from tests.chart import monitoring_crds
from tests.chart.helm import CHART, REPO, helm
from tests.helpers import eventually
from tests.observability.prometheus import Prometheus, ScrapeTarget, start_prometheus
from tests.observability.promql import family, metric_names, split_threshold, substitute
from tools.dashboards import iter_exprs, load_shipped

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RELEASE = "salon-sessions"
PHONE = "79686484488"
ARTIFACTS = REPO / "test-artifacts"
FAST_WORKER = {"SALON_SIMULATOR_FIRST_QR_S": "3", "SALON_SIMULATOR_QR_PERIOD_S": "3",
               "SALON_LOCK_CHECK_S": "0.5"}
FAST_OPERATOR = {"SALON_HEARTBEAT_CHECK_S": "1", "SALON_PING_INTERVAL_S": "1",
                 "SALON_PING_TIMEOUT_S": "2", "SALON_STATUS_BATCH_S": "0.05",
                 "SALON_STATUS_LAZY_S": "2", "SALON_CLEANUP_RETRY_S": "0.5",
                 "SALON_POD_STOP_TIMEOUT_S": "30"}
RECREATE = {"type": "Recreate", "rollingUpdate": None}


class Hook(http.server.BaseHTTPRequestHandler):
    """The post-connect webhook (the seed system's marketplace activation)."""

    calls: list[str] = []

    def do_POST(self) -> None:
        Hook.calls.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@dataclass
class Release:
    stack: StackInfo
    namespace: str
    tmp: Path
    database: str
    values: dict[str, Any]
    admin_token: str
    ports: dict[str, int]
    company: str = field(default_factory=lambda: f"company_{uuid.uuid4().int % 10**9 + 10**9}")
    notes: str = ""
    prometheus: Prometheus | None = None
    installed: bool = False

    @property
    def name(self) -> str:
        return self.company.replace("_", "-")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def kubectl(self, *args: str, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.stack.kubectl(*args, "-n", self.namespace, check=check, input=input)

    def get(self, *args: str) -> dict[str, Any]:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, "-n", self.namespace, kubeconfig=self.stack.kubeconfig,
                    check=check)

    def values_file(self, extra: dict[str, Any] | None = None) -> Path:
        path = self.tmp / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(_merge(self.values, extra or {})))
        return path

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.admin_token}"})

    def operator_role(self) -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports['operator']}/readyz",
                             timeout=2).text.strip()
        except httpx.HTTPError:
            return "down"

    def api_ready(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get("salonsession", self.name).get("status") or {}
        return status

    def pods(self, component: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            "pods", "-l", f"app.kubernetes.io/component={component}").get("items", [])
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def write_kubeconfigs(self) -> None:
        """A kubeconfig per component with its ServiceAccount's token (the chart's RBAC)."""
        for component, sa in (("operator", f"{RELEASE}-operator"), ("api", f"{RELEASE}-api")):
            token = self.kubectl("create", "token", sa, "--duration=2h").stdout.strip()
            path = self.tmp / f"{component}.kubeconfig"
            path.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "local", "cluster": {
                    "server": self.stack.kube_server,
                    "certificate-authority": self.stack.ca_file}}],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa}}],
                "current-context": "local",
            }))
            path.chmod(0o600)

    def wait_components(self) -> None:
        eventually(lambda: self.operator_role() == "leader", 90, "the operator leads")
        eventually(self.api_ready, 90, "the API is ready")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _psql(stack: StackInfo, sql: str) -> None:
    subprocess.run([devstack_stack.pg_bin("psql"), stack.postgres_dsn, "-v", "ON_ERROR_STOP=1",
                    "-qc", sql], check=True, capture_output=True)


def _save_logs(rel: Release) -> None:
    keep = ARTIFACTS / "helm-install-logs"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    pods = rel.get("pods").get("items", [])
    for pod in pods:
        name = pod["metadata"]["name"]
        out = rel.kubectl("logs", name, "--tail=300", check=False)
        (keep / f"{name}.log").write_text(out.stdout + out.stderr)
    if rel.prometheus is not None:
        (keep / "prometheus.log").write_text(rel.prometheus.log())


@pytest.fixture(scope="module")
def release(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    tmp = tmp_path_factory.mktemp("helm")
    namespace = f"helm-{uuid.uuid4().hex[:8]}"
    db_name = f"helm_{uuid.uuid4().hex[:10]}"
    base, _, _ = stack.postgres_dsn.rpartition("/")
    stack.kubectl("create", "namespace", namespace)
    stack.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace,
                  "--timeout=60s", check=False)
    _psql(stack, f'CREATE DATABASE "{db_name}"')
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    ports = {"operator": free_port(), "api": free_port(), "worker": free_port()}
    admin = secrets.token_urlsafe(24)
    values = {
        "logLevel": "DEBUG",
        "operator": {
            "replicas": 1, "strategy": RECREATE, "port": ports["operator"],
            "listenAddress": "127.0.0.1", "kopfLogLevel": "INFO",
            "leaderElection": {"leaseDurationSeconds": 3, "renewSeconds": 1},
            "env": FAST_OPERATOR,
            "extraEnv": [{"name": "KUBECONFIG", "value": str(tmp / "operator.kubeconfig")}],
            "terminationGracePeriodSeconds": 10,
        },
        "worker": {
            "metricsPort": ports["worker"], "heartbeatTtlSeconds": 6,
            "terminationGracePeriodSeconds": 5, "postConnectSecret": "salon-sessions-hook",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "env": FAST_WORKER,
        },
        "api": {
            "replicas": 1, "strategy": RECREATE, "port": ports["api"],
            "listenAddress": "127.0.0.1", "defaultDriver": "simulator",
            "env": {"SALON_WS_HEARTBEAT_S": "1", "SALON_PONG_TIMEOUT_S": "2",
                    "SALON_PAIRING_CODES_PER_MINUTE": "30"},
            "extraEnv": [{"name": "SALON_KUBECONFIG", "value": str(tmp / "api.kubeconfig")}],
            "terminationGracePeriodSeconds": 10,
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                    "prometheusRule": {"enabled": True}},
    }
    rel = Release(stack, namespace, tmp, f"{base}/{db_name}", values, admin, ports)
    try:
        monitoring_crds.install(stack)
        for secret, literals in (
                ("salon-sessions-database", {"url": rel.database}),
                ("salon-sessions-redis", {"url": stack.redis_operator_url}),
                ("salon-sessions-redis-api", {"url": stack.redis_api_url}),
                ("salon-sessions-operator-credentials", {
                    "redis-admin-url": stack.redis_admin_url,
                    "credentials-key": stack.credentials_key}),
                ("salon-sessions-api", {"admin-token": admin,
                                        "token-secret": secrets.token_urlsafe(32)}),
                ("salon-sessions-hook", {"url": f"http://127.0.0.1:{hook.server_port}/hook"})):
            rel.kubectl("create", "secret", "generic", secret,
                        *(f"--from-literal={k}={v}" for k, v in literals.items()))
        out = rel.helm("install", RELEASE, str(CHART), "-f", str(rel.values_file()),
                       "--timeout", "5m")
        rel.installed = True
        rel.notes = out.stdout.split("NOTES:", 1)[-1]
        rel.write_kubeconfigs()
        rel.wait_components()
        yield rel
    finally:
        _save_logs(rel)
        if rel.prometheus is not None:
            rel.prometheus.stop()
        if rel.installed:  # a test failed before the uninstall test: clean up anyway
            rel.kubectl("delete", "salonsessions", "--all", "--timeout=60s", check=False)
            rel.helm("uninstall", RELEASE, "--wait", "--timeout", "2m", check=False)
        rel.kubectl("patch", "salonsessions", "--all", "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hook.shutdown()
        with contextlib.suppress(subprocess.CalledProcessError):
            _psql(stack, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def prometheus(release: Release) -> Prometheus:
    """Started before the session exists, so that every counter moves inside its window."""
    labels = {"namespace": release.namespace}
    operator_pod = release.pods("operator")[0]["metadata"]["name"]
    api_pod = release.pods("api")[0]["metadata"]["name"]
    prom = start_prometheus(release.tmp / "prometheus", [
        ScrapeTarget("salon-sessions-operator", f"127.0.0.1:{release.ports['operator']}",
                     {**labels, "component": "operator", "pod": operator_pod}),
        ScrapeTarget("salon-sessions-api", f"127.0.0.1:{release.ports['api']}",
                     {**labels, "component": "api", "pod": api_pod}),
        ScrapeTarget("salon-sessions-session-workers", f"127.0.0.1:{release.ports['worker']}",
                     {**labels, "component": "session-worker", "pod": f"{release.name}-0",
                      "company_id": release.company}),
    ])
    release.prometheus = prom
    prom.wait_scraped({"salon-sessions-operator", "salon-sessions-api"})
    return prom


# ---- 1. install -----------------------------------------------------------------------------

def test_install_creates_the_release(release: Release) -> None:
    status = json.loads(release.helm("status", RELEASE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "WARNING" not in release.notes  # the Secrets exist
    assert f"kubectl -n {release.namespace} get salonsessions -w" in release.notes
    deployments = {d["metadata"]["name"] for d in release.get("deployments")["items"]}
    assert deployments == {f"{RELEASE}-operator", f"{RELEASE}-api"}
    maps = [c for c in release.get("configmaps", "-l", "grafana_dashboard=1")["items"]]
    assert len(maps) == len(list((CHART / "dashboards").glob("*.json")))
    assert len(release.get("prometheusrules")["items"]) == 1
    assert len(release.get("servicemonitors")["items"]) == 2
    assert len(release.get("podmonitors")["items"]) == 1
    # the migrations hook ran and was deleted after it succeeded
    assert not release.get("jobs")["items"]
    tables = subprocess.run([devstack_stack.pg_bin("psql"), release.database, "-tAc",
                             "SELECT count(*) FROM salon_schema_migrations"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert int(tables) >= 1
    # the operator and the API run the chart's commands with the chart's ServiceAccounts
    assert release.operator_role() == "leader"
    for component in ("operator", "api"):
        pod = release.pods(component)[0]
        assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-{component}"
        assert pod["spec"]["containers"][0]["command"] == ["salon-sessions", component]
        assert pod["status"]["phase"] == "Running"


# ---- 2. a session goes to connected ---------------------------------------------------------

def test_session_created_through_the_api_connects(release: Release,
                                                  prometheus: Prometheus) -> None:
    with release.http() as api:
        created = api.post("/v1/sessions", json={"company_id": release.company,
                                                 "display_name": "Helm salon"})
        assert created.status_code == 201, created.text
    phone = redis.Redis.from_url(release.stack.redis_url)
    try:
        eventually(lambda: release.status().get("phase") == "AwaitingLink", 90,
                   "the worker shows a QR")

        def scanned() -> bool:
            qr = phone.get(channels.latest_qr_key(release.company))
            if qr is None:
                return False
            phone.publish(channels.simulator_channel(release.company), json.dumps(
                {"action": "scan", "qr": qr.decode(), "phone": PHONE}))
            time.sleep(1)
            return phone.hget(channels.session_state_key(release.company),
                              "linked") == b"true"

        eventually(scanned, 60, "a QR scan")
        status = eventually(lambda: (s := release.status()).get("phase") == "Connected"
                            and s.get("connected") is True and s, 60, "connected")
        assert status["linked"] is True
        assert status["phone"] == PHONE
    finally:
        phone.close()
    sts = release.get("statefulset", release.name)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == "salon-sessions:0.1.0"  # the chart's image for the workers
    assert env["SALON_METRICS_PORT"]["value"] == str(release.ports["worker"])
    assert env["SALON_POST_CONNECT_URL"]["valueFrom"]["secretKeyRef"]["name"] == \
        "salon-sessions-hook"
    eventually(lambda: Hook.calls, 30, "the post-connect hook was called")
    with release.http() as api:
        view = api.get(f"/v1/sessions/{release.company}")
        assert view.status_code == 200, view.text


# ---- 3. Prometheus evaluates every expression -----------------------------------------------

def generate_traffic(release: Release) -> None:
    """Exercise what the dashboards show: API calls (ok and failing), a live page, events,
    messages both ways, a disconnect and reconnect, a malformed event, an unknown pong."""
    company = release.company
    r = redis.Redis.from_url(release.stack.redis_url)
    ws_url = release.api_url.replace("http://", "ws://") + f"/v1/sessions/{company}/ws"
    headers = {"Authorization": f"Bearer {release.admin_token}"}
    with websockets.sync.client.connect(ws_url, additional_headers=headers) as ws, \
            release.http() as api:
        assert json.loads(ws.recv(timeout=10))["kind"] == "snapshot"
        # a labelled series' first sample is invisible to rate(): call each endpoint in
        # rounds, with scrapes (1 s) in between
        for _ in range(3):
            for path in ("/healthz", "/readyz", f"/v1/sessions/{company}",
                         f"/health/pubsub?company_id={company}", "/health/pubsub/simple"):
                response = api.get(path)
                assert response.status_code == 200, (path, response.text)
            time.sleep(1.5)
        assert api.get("/health/pubsub?company_id=company_1").status_code == 503
        assert api.post(f"/v1/sessions/{company}/pairing-code",
                        json={"phone": PHONE}).status_code == 409  # already linked
        r.publish(channels.simulator_channel(company), json.dumps(
            {"action": "inbound", "from": "79001234567@s.whatsapp.net", "text": "hello",
             "id": uuid.uuid4().hex}))
        r.xadd(channels.outbound_stream(company), {"payload": json.dumps(
            {"v": 1, "type": "send_text", "company_id": company,
             "idempotency_key": uuid.uuid4().hex, "to": "79001234567", "text": "hi"})})
        r.publish(channels.events_channel(company), b"{not json")
        r.publish(channels.health_pong_channel(company), encode(PongEvent(
            company_id=company, session=release.name, seq=1,
            data=PongData(correlation_id=uuid.uuid4().hex))))
        # network loss: the worker publishes disconnected, then reconnects by itself (the
        # operator tests check the status sequence; here only the events matter)
        assert r.publish(channels.simulator_channel(company),
                         json.dumps({"action": "disconnect"})) == 1
        time.sleep(2)
        eventually(lambda: release.status().get("connected") is True, 60, "reconnected")
        ws.recv(timeout=10)
    r.close()


def evaluate(prom: Prometheus, expr: str) -> tuple[str, int]:
    """('ok' | error, number of samples with a finite value) of an instant query (a
    quantile without observations in its window is NaN: that is no data)."""
    try:
        result = prom.query(expr)
    except Exception as exc:
        return str(exc), 0
    return "ok", sum(1 for r in result if math.isfinite(float(r["value"][1])))


def test_prometheus_evaluates_every_dashboard_and_alert_expression(
        release: Release, prometheus: Prometheus) -> None:
    """Each expression must parse and return data. For a dashboard target: the instant
    query (Grafana's variables as All, `$__rate_interval` as 5m, which covers the whole
    test) returns at least one sample with a finite value.
    For an alert: the whole expression evaluates, and its expression without the threshold
    comparison returns at least one sample (in a healthy system the alert itself is empty).
    And every metric an expression reads is exported by a scraped component (Prometheus
    has its metadata), so a renamed metric cannot hide behind a `* 0` fallback."""
    generate_traffic(release)
    time.sleep(4)  # a few more scrapes after the last action
    metadata = prometheus.metadata()
    failures: list[str] = []
    checked = 0

    def check_names(where: str, expr: str) -> None:
        for name in metric_names(expr):
            if name != "up" and family(name) not in metadata and name not in metadata:
                failures.append(f"{where}: {name} is not exported by any target")

    for uid, dashboard in load_shipped().items():
        for title, raw in iter_exprs(dashboard):
            expr = substitute(raw, "5m")
            where = f"{uid} / {title}: {expr}"
            status, samples = evaluate(prometheus, expr)
            checked += 1
            if status != "ok":
                failures.append(f"{where}: {status}")
            elif samples == 0:
                failures.append(f"{where}: no data")
            check_names(where, expr)
    alerts = [rule for group in yaml.safe_load((REPO / "monitoring" / "alerts.yaml")
                                               .read_text())["groups"]
              for rule in group["rules"]]
    for rule in alerts:
        where = f"alert {rule['alert']}"
        status, _ = evaluate(prometheus, rule["expr"])
        if status != "ok":
            failures.append(f"{where}: {status}")
        threshold = split_threshold(rule["expr"])
        if threshold is None:
            failures.append(f"{where}: not `<expression> <comparison> <number>`")
            continue
        status, samples = evaluate(prometheus, threshold.lhs)
        checked += 1
        if status != "ok" or samples == 0:
            failures.append(f"{where}: {threshold.lhs}: {status if status != 'ok' else 'no data'}")
        check_names(where, threshold.lhs)
    # Prometheus loaded the same rule file: every rule evaluates without error
    rules = {r["name"]: r for r in prometheus.rules()}
    assert set(rules) == {r["alert"] for r in alerts}
    failures += [f"rule {name}: {r['lastError']}" for name, r in rules.items()
                 if r["health"] != "ok"]
    firing = [name for name, r in rules.items() if r["state"] == "firing"]
    assert not failures, f"{len(failures)} of {checked} checks failed:\n" + "\n".join(failures)
    assert not firing, f"alerts firing on a healthy stack: {firing}"
    assert checked > 60


def test_round_trip_and_sessions_panels_show_the_session(release: Release,
                                                         prometheus: Prometheus) -> None:
    connected = prometheus.query(f'sum(salon_operator_sessions_connected'
                                 f'{{namespace="{release.namespace}"}})')
    assert float(connected[0]["value"][1]) == 1
    p99 = prometheus.query(substitute(
        'histogram_quantile(0.99, sum by (le) (rate(salon_operator_pubsub_roundtrip_seconds_'
        'bucket{component="operator"}[$__rate_interval])))'))
    assert 0 < float(p99[0]["value"][1]) < 10
    worker = prometheus.query(f'salon_worker_connected{{company_id="{release.company}"}}')
    assert float(worker[0]["value"][1]) == 1


# ---- 4. previews ------------------------------------------------------------------------

def test_dashboard_previews_render_to_png(release: Release, prometheus: Prometheus) -> None:
    out = ARTIFACTS / "dashboards"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "render_dashboards.py"),
         "--prometheus", prometheus.url, "--since", "3m", "--step", "2s",
         "--rate-interval", "1m", "--var", f"namespace={release.namespace}",
         "--out", str(out)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == sorted(load_shipped())
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000, f"{png.name} looks empty"


# ---- 5. upgrade ---------------------------------------------------------------------------

def test_helm_upgrade_rolls_the_components_and_keeps_the_session(release: Release) -> None:
    before = {c: release.pods(c)[0]["metadata"]["name"] for c in ("operator", "api")}
    worker_before = release.pods("session-worker")[0]["metadata"]["uid"]
    values = release.values_file({"api": {"env": {"SALON_WS_HEARTBEAT_S": "2"}},
                                  "operator": {"env": {"SALON_PING_INTERVAL_S": "2"}}})
    release.helm("upgrade", RELEASE, str(CHART), "-f", str(values), "--timeout", "5m")
    history = json.loads(release.helm("history", RELEASE, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]
    eventually(lambda: all(p["metadata"]["name"] != before[c]
                           for c in before for p in release.pods(c)) and
               all(len(release.pods(c)) == 1 for c in before), 90, "new pods")
    release.wait_components()
    env = {e["name"]: e.get("value") for e in
           release.pods("api")[0]["spec"]["containers"][0]["env"]}
    assert env["SALON_WS_HEARTBEAT_S"] == "2"
    assert not release.get("jobs")["items"]  # the pre-upgrade migration ran and went
    # the worker was not touched (its settings did not change) and is still connected
    assert release.pods("session-worker")[0]["metadata"]["uid"] == worker_before
    eventually(lambda: release.status().get("connected") is True, 30, "still connected")
    with release.http() as api:
        assert api.get(f"/v1/sessions/{release.company}").json()["live"]["connected"] is True


# ---- 6. uninstall -------------------------------------------------------------------------

RELEASE_KINDS = ("deployments", "replicasets", "statefulsets", "pods", "services",
                 "configmaps", "secrets", "serviceaccounts", "roles", "rolebindings",
                 "networkpolicies", "poddisruptionbudgets", "jobs", "servicemonitors",
                 "podmonitors", "prometheusrules", "leases")


def test_uninstall_leaves_no_orphans(release: Release) -> None:
    # sessions first, while the operator runs (its finalizer stops the worker, deletes the
    # credentials); the API deletes it with its own RBAC
    with release.http() as api:
        assert api.delete(f"/v1/sessions/{release.company}").status_code == 204
    eventually(lambda: not release.get("salonsession", release.name), 60, "session deleted")
    eventually(lambda: not release.get("statefulsets")["items"], 60, "StatefulSet deleted")
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "2m")
    release.installed = False

    def leftovers() -> list[str]:
        found = []
        for kind in RELEASE_KINDS:
            for item in release.get(kind).get("items", []):
                name = item["metadata"]["name"]
                if (kind, name) in (("configmaps", "kube-root-ca.crt"),
                                    ("serviceaccounts", "default")):
                    continue
                if kind == "secrets" and name.startswith("salon-sessions-"):
                    continue  # ours, created before the install
                found.append(f"{kind}/{name}")
        return found

    eventually(lambda: not leftovers(), 90, "nothing left in the namespace")
    cluster = release.stack.kubectl("get", "clusterroles,clusterrolebindings", "-o", "json",
                                    "-l", f"app.kubernetes.io/instance={RELEASE}")
    names = [i["metadata"]["name"] for i in json.loads(cluster.stdout)["items"]]
    assert not [n for n in names if n.startswith(release.namespace)]
    # Helm never deletes CRDs (the SalonSessions of other releases live in them)
    crd = release.stack.kubectl("get", "crd", "salonsessions.wa.salonsessions.io",
                                check=False)
    assert crd.returncode == 0
    # the processes are gone too: nothing answers on the components' ports
    for component in ("operator", "api", "worker"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{release.ports[component]}/metrics", timeout=2)
