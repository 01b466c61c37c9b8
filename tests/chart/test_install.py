"""`helm install` of the chart with its default values on the stack's real node, end to
end, with one install for the whole module:

1. the chart installs: the migrations hook, two operator replicas (one holds the Lease, one
   stands by), the API (two replicas), RBAC, NetworkPolicies, PDBs, monitoring objects;
2. a SalonSession created through the API (the API Service, from the host) goes to
   `connected` in a real worker container from the project image, and calls its
   post-connect webhook on the host through the workers' NetworkPolicy;
3. a real Prometheus scraping the pods' IPs (operator, API, worker) evaluates every
   dashboard and alert expression: each parses and returns data;
4. the dashboard previews render to PNG;
5. deleting the leader pod: the standby takes the Lease over and statuses keep flowing;
6. `helm upgrade` rolls the operator and the API (new pods) and keeps the session connected;
7. `helm uninstall` leaves nothing of the release behind (the CRD stays, by Helm's rule).

Beyond the defaults the values only add what a user of these features adds: the
Prometheus Operator's objects (stand-in CRDs), the simulator as default driver (there is
no WhatsApp network here), the webhook's Secret and the worker egress rule to reach it.
"""

from __future__ import annotations

import http.server
import json
import math
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import websockets.sync.client
import yaml

from devstack.stack import StackInfo
from salon_sessions.core import channels, redis_acl
from salon_sessions.core.codec import encode
from salon_sessions.core.events import PongData, PongEvent
from tests.chart import monitoring_crds
from tests.chart.conftest import ARTIFACTS, REPO, Release, installed_release, psql
from tests.chart.helm import CHART
from tests.helpers import eventually
from tests.observability.prometheus import Prometheus, ScrapeTarget, start_prometheus
from tests.observability.promql import family, metric_names, split_threshold, substitute
from tools.dashboards import iter_exprs, load_shipped

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PHONE = "79686484488"
COMPANY = f"company_{uuid.uuid4().int % 10**9 + 10**9}"
SESSION = COMPANY.replace("_", "-")
HOOK_SECRET = "salon-sessions-hook"


class Hook(http.server.BaseHTTPRequestHandler):
    """The post-connect webhook (the seed system's marketplace activation)."""

    calls: list[str] = []

    def do_POST(self) -> None:
        Hook.calls.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def release(stack: StackInfo) -> Iterator[Release]:
    node_ip = urlsplit(stack.kube_server).hostname or ""
    hook = http.server.ThreadingHTTPServer((node_ip, 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    extra = {
        "api": {"defaultDriver": "simulator"},
        "worker": {"postConnectSecret": HOOK_SECRET},
        "networkPolicy": {"extraWorkerEgress": [{
            "to": [{"ipBlock": {"cidr": f"{node_ip}/32"}}],
            "ports": [{"protocol": "TCP", "port": hook.server_port}]}]},
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                    "prometheusRule": {"enabled": True}},
    }
    monitoring_crds.install(stack)
    try:
        with installed_release(stack, "helm-install", extra) as rel:
            rel.kubectl("create", "secret", "generic", HOOK_SECRET,
                        f"--from-literal=url=http://{node_ip}:{hook.server_port}/hook")
            yield rel
    finally:
        hook.shutdown()


WORKERS_JOB = "salon-sessions-session-workers"


@pytest.fixture(scope="module")
def prometheus(release: Release, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    """Scrapes the pods' IPs (the host reaches the pod bridge; the chart's metrics
    NetworkPolicy lets anyone scrape by default); started before the session exists, so
    that every counter moves inside its window. The worker's target is added once its pod
    has an IP."""
    labels = {"namespace": release.namespace}
    targets = [ScrapeTarget(f"salon-sessions-{component}", f"{pod['status']['podIP']}:{port}",
                            {**labels, "component": component, "pod": pod["metadata"]["name"]})
               for component, port in (("operator", 9090), ("api", 8080))  # chart defaults
               for pod in release.pods(component)]
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), targets,
                            later_jobs=[WORKERS_JOB])
    try:
        prom.wait_scraped({"salon-sessions-operator", "salon-sessions-api"})
        yield prom
    finally:
        (ARTIFACTS / "helm-install-logs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(prom.log_path, ARTIFACTS / "helm-install-logs" / "prometheus.log")
        prom.stop()


# ---- 1. install -----------------------------------------------------------------------------

def test_install_creates_the_release(release: Release) -> None:
    status = json.loads(release.helm("status", release.name, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "WARNING" not in release.notes  # the Secrets exist
    assert f"kubectl -n {release.namespace} get salonsessions -w" in release.notes
    deployments = {d["metadata"]["name"]: d for d in release.get("deployments")["items"]}
    assert set(deployments) == {f"{release.name}-operator", f"{release.name}-api"}
    for deployment in deployments.values():  # the chart's defaults, not bent
        assert deployment["spec"]["replicas"] == 2
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert deployment["status"].get("readyReplicas") == 2
    maps = release.get("configmaps", "-l", "grafana_dashboard=1")["items"]
    assert len(maps) == len(list((CHART / "dashboards").glob("*.json")))
    assert len(release.get("prometheusrules")["items"]) == 1
    assert len(release.get("servicemonitors")["items"]) == 2
    assert len(release.get("podmonitors")["items"]) == 1
    assert len(release.get("networkpolicies")["items"]) == 4
    assert len(release.get("poddisruptionbudgets")["items"]) == 2
    # the migrations hook ran and was deleted after it succeeded
    assert not release.get("jobs")["items"]
    assert int(psql(release.stack, "SELECT count(*) FROM salon_schema_migrations",
                    release.database)) >= 1
    # one operator leads (the Lease holder), the other stands by; both are ready
    operators = release.pods("operator", ready=True)
    roles = {p["metadata"]["name"]: release.operator_role(p) for p in operators}
    assert sorted(roles.values()) == ["leader", "standby"], roles
    assert roles[release.leader()] == "leader"
    # the chart's commands with the chart's ServiceAccounts, the project image, on the node
    for component in ("operator", "api"):
        for pod in release.pods(component):
            assert pod["spec"]["serviceAccountName"] == f"{release.name}-{component}"
            container = pod["spec"]["containers"][0]
            assert container["command"] == ["salon-sessions", component]
            assert container["image"] == release.stack.worker_image
            assert pod["spec"]["nodeName"] == release.stack.node_name
            assert pod["status"]["phase"] == "Running"


# ---- 2. a session goes to connected ---------------------------------------------------------

def test_session_created_through_the_api_connects(release: Release,
                                                  prometheus: Prometheus) -> None:
    with release.http() as api:
        created = api.post("/v1/sessions", json={"company_id": COMPANY,
                                                 "display_name": "Helm salon"})
        assert created.status_code == 201, created.text
    pod = eventually(lambda: (p := release.worker_pod(SESSION)) and
                     p.get("status", {}).get("podIP") and p, 120, "the worker pod has an IP")
    prometheus.add_targets(ScrapeTarget(
        WORKERS_JOB, f"{pod['status']['podIP']}:9090",
        {"namespace": release.namespace, "component": "session-worker",
         "pod": f"{SESSION}-0", "company_id": COMPANY}))
    phone = redis.Redis.from_url(release.stack.redis_url)
    try:
        eventually(lambda: release.status(SESSION).get("phase") == "AwaitingLink", 120,
                   "the worker shows a QR")

        def scanned() -> bool:
            qr = phone.get(channels.latest_qr_key(COMPANY))
            if qr is None:
                return False
            phone.publish(channels.simulator_channel(COMPANY), json.dumps(
                {"action": "scan", "qr": qr.decode(), "phone": PHONE}))
            time.sleep(1)
            return phone.hget(channels.session_state_key(COMPANY), "linked") == b"true"

        eventually(scanned, 60, "a QR scan")
        status = eventually(lambda: (s := release.status(SESSION)).get("phase") == "Connected"
                            and s.get("connected") is True and s, 60, "connected")
        assert status["linked"] is True
        assert status["phone"] == PHONE
    finally:
        phone.close()
    sts = release.get("statefulset", SESSION)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == release.stack.worker_image  # the chart's image for the workers
    assert env["SALON_METRICS_PORT"]["value"] == "9090"
    assert env["SALON_POST_CONNECT_URL"]["valueFrom"]["secretKeyRef"]["name"] == HOOK_SECRET
    # a real container of the project image on the node, not a process of the test
    pod = release.worker_pod(SESSION)
    assert pod["status"]["containerStatuses"][0]["imageID"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    eventually(lambda: Hook.calls, 30, "the post-connect hook was called")
    with release.http() as api:
        view = api.get(f"/v1/sessions/{COMPANY}")
        assert view.status_code == 200, view.text


# ---- 3. Prometheus evaluates every expression -----------------------------------------------

def generate_traffic(release: Release) -> None:
    """Exercise what the dashboards show: a Redis refusal, API calls (ok and failing), a live
    page, events, messages both ways, a disconnect and reconnect, a malformed event, an
    unknown pong."""
    company = COMPANY
    # a refusal: the API's Redis user may not read the configuration; the operator's leader
    # counts Redis's ACL LOG into salon_redis_acl_denials_total
    api_user = redis.Redis.from_url(release.stack.redis_api_url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        api_user.config_get("maxmemory")
    api_user.close()
    r = redis.Redis.from_url(release.stack.redis_url)
    ws_url = release.api_url.replace("http://", "ws://") + f"/v1/sessions/{company}/ws"
    headers = {"Authorization": f"Bearer {release.creds.admin_token}"}
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
            company_id=company, session=SESSION, seq=1,
            data=PongData(correlation_id=uuid.uuid4().hex))))
        # network loss: the worker publishes disconnected, then reconnects by itself (the
        # operator tests check the status sequence; here only the events matter)
        assert r.publish(channels.simulator_channel(company),
                         json.dumps({"action": "disconnect"})) == 1
        time.sleep(2)
        eventually(lambda: release.status(SESSION).get("connected") is True, 60, "reconnected")
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
    eventually(lambda: prometheus.query(
        f'salon_redis_acl_denials_total{{user="{redis_acl.API_USER}"}}'), 60,
        "the leader counted the refusal")
    # the operator pings each session every 15 s (the default): wait until the window holds
    # round trips after the first one (a series' first sample is invisible to rate())
    eventually(lambda: prometheus.query(
        'sum(increase(salon_operator_pubsub_roundtrip_seconds_count[5m])) > 0'), 60,
        "health pings' round trips in the window", interval=1)
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
            # a panel that lists only the sessions past a threshold (`bottomk(…) < 1`) is
            # empty while all are well: its expression before the comparison must have data
            threshold = split_threshold(expr)
            status, samples = evaluate(prometheus, threshold.lhs if threshold else expr)
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
    assert not failures, f"{len(failures)} of {checked} checks failed:\n" + "\n".join(failures)
    # on a healthy stack no alert fires but the one of the refusal generate_traffic provoked
    # (which does not fire either: the first sample of a new counter series is invisible to
    # increase(), so the first refusal of a user and reason does not count)
    firing = {r["name"] for r in prometheus.rules() if r["state"] == "firing"}
    assert firing <= {"SalonRedisAccessRefused"}, f"alerts firing on a healthy stack: {firing}"
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
    worker = prometheus.query(f'salon_worker_connected{{company_id="{COMPANY}"}}')
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


# ---- 5. the leader goes away ------------------------------------------------------------

def _connected_condition(release: Release) -> tuple[str, str]:
    """(status, lastTransitionTime) of the session's Connected condition."""
    conditions = release.status(SESSION).get("conditions") or []
    cond = next((c for c in conditions if c["type"] == "Connected"), {})
    return str(cond.get("status")), str(cond.get("lastTransitionTime"))


def test_deleting_the_leader_pod_hands_the_lease_over(release: Release) -> None:
    """The leader releases the Lease on SIGTERM; another replica takes it: the standby, or
    the Deployment's replacement pod when it starts and asks first."""
    leader = release.leader()
    release.kubectl("delete", "pod", leader, "--wait=false")
    new = eventually(lambda: (h := release.leader()) not in ("", leader) and h, 60,
                     "another replica holds the Lease")
    pod = eventually(lambda: next((p for p in release.pods("operator")
                                   if p["metadata"]["name"] == new), None), 30, "its pod")
    eventually(lambda: release.operator_role(pod) == "leader", 30, "it leads")
    # statuses keep flowing: a network loss (the simulator reconnects a second later)
    # moves the Connected condition twice; the new leader writes both
    before = _connected_condition(release)
    assert before[0] == "True"
    r = redis.Redis.from_url(release.stack.redis_url)
    try:
        assert r.publish(channels.simulator_channel(COMPANY),
                         json.dumps({"action": "disconnect"})) == 1
    finally:
        r.close()
    eventually(lambda: (c := _connected_condition(release))[0] == "True" and c != before, 60,
               "the new leader writes the disconnect and the reconnect")
    # the Deployment replaced the deleted pod: a standby again
    release.wait_ready("operator", 2)
    roles = sorted(release.operator_role(p) for p in release.pods("operator"))
    assert roles == ["leader", "standby"]


# ---- 6. upgrade ---------------------------------------------------------------------------

def test_helm_upgrade_rolls_the_components_and_keeps_the_session(release: Release) -> None:
    before = {c: {p["metadata"]["name"] for p in release.pods(c)} for c in ("operator", "api")}
    worker_before = release.worker_pod(SESSION)["metadata"]["uid"]
    release.upgrade({"api": {"env": {"SALON_WS_HEARTBEAT_S": "20"}},
                     "operator": {"env": {"SALON_PING_INTERVAL_S": "20"}}})
    history = json.loads(release.helm("history", release.name, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]
    for component in before:  # helm --wait: the new ReplicaSets are ready
        names = set(release.wait_ready(component, 2))
        assert not names & before[component], (component, names, before[component])
    env = {e["name"]: e.get("value") for e in
           release.pods("api")[0]["spec"]["containers"][0]["env"]}
    assert env["SALON_WS_HEARTBEAT_S"] == "20"
    assert not release.get("jobs")["items"]  # the pre-upgrade migration ran and went
    eventually(lambda: sorted(release.operator_role(p) for p in release.pods("operator"))
               == ["leader", "standby"], 60, "a leader and a standby")
    # the worker was not touched (its settings did not change) and is still connected
    assert release.worker_pod(SESSION)["metadata"]["uid"] == worker_before
    eventually(lambda: release.status(SESSION).get("connected") is True, 30, "still connected")
    with release.http() as api:
        assert api.get(f"/v1/sessions/{COMPANY}").json()["live"]["connected"] is True


# ---- 7. uninstall -------------------------------------------------------------------------

RELEASE_KINDS = ("deployments", "replicasets", "statefulsets", "pods", "services",
                 "configmaps", "secrets", "serviceaccounts", "roles", "rolebindings",
                 "networkpolicies", "poddisruptionbudgets", "jobs", "servicemonitors",
                 "podmonitors", "prometheusrules", "leases")
OURS = {"services": {"postgresql", "redis"}, "configmaps": {"kube-root-ca.crt"},
        "serviceaccounts": {"default"}}
"""What the test created itself before the install (and the namespace's own)."""


def test_uninstall_leaves_no_orphans(release: Release) -> None:
    # sessions first, while the operator runs (its finalizer stops the worker, deletes the
    # credentials); the API deletes it with its own RBAC
    with release.http() as api:
        assert api.delete(f"/v1/sessions/{COMPANY}").status_code == 204
    eventually(lambda: not release.get("salonsession", SESSION), 60, "session deleted")
    eventually(lambda: not release.get("statefulsets")["items"], 60, "StatefulSet deleted")
    release.helm("uninstall", release.name, "--wait", "--timeout", "2m")
    release.installed = False

    def leftovers() -> list[str]:
        found = []
        for kind in RELEASE_KINDS:
            for item in release.get(kind).get("items", []):
                name = item["metadata"]["name"]
                if name in OURS.get(kind, ()):
                    continue
                if kind == "secrets" and name.startswith("salon-sessions-"):
                    continue  # ours, created before the install
                found.append(f"{kind}/{name}")
        return found

    eventually(lambda: not leftovers(), 90, "nothing left in the namespace")
    cluster = release.stack.kubectl("get", "clusterroles,clusterrolebindings", "-o", "json",
                                    "-l", f"app.kubernetes.io/instance={release.name}")
    names = [i["metadata"]["name"] for i in json.loads(cluster.stdout)["items"]]
    assert not [n for n in names if n.startswith(release.namespace)]
    # Helm never deletes CRDs (the SalonSessions of other releases live in them)
    crd = release.stack.kubectl("get", "crd", "salonsessions.wa.salonsessions.io",
                                check=False)
    assert crd.returncode == 0
