"""Each NetworkPolicy of the chart, both ways, on the node that enforces them (kube-router).

Small probe pods from the project image carry the labels of each component (the chart's
policies select pods by label): they listen on a metrics-like port (9090) and another
(8081), and `kubectl exec` runs a TCP connect to each target from inside them. "open" is a
completed connection; anything else (a timeout, a reset) is refused. Every refused target
is one that another probe reaches, so a refusal is the policy's, not a closed port's.

The release is `release_on_node` (default values, except `networkPolicy.apiFrom`: only pods
labelled `salon-test/api-client=true` may call the API).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.conftest import API_CLIENT_LABEL, PROBE_LABEL, Release, is_ready
from tests.helpers import eventually

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LISTEN = r"""
import signal, socket, sys, threading
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        s.accept()[0].close()
for port in (9090, 8081):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
signal.pause()
"""

PROBE = r"""
import concurrent.futures, json, socket, sys
def probe(target):
    if target.startswith("dns/"):  # a name lookup only (UDP to the cluster DNS)
        try:
            socket.getaddrinfo(target[4:], 53, type=socket.SOCK_DGRAM)
            return "open"
        except OSError:
            return "no-dns"
    host, _, port = target.rpartition(":")
    try:
        addr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4]
    except OSError:
        return "no-dns"
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(addr)
        return "open"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
targets = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
"""

PROBES = ("worker", "operator", "api", "migrations", "plain")


def _labels(rel: Release, kind: str) -> dict[str, str]:
    base = {"app.kubernetes.io/name": "salon-sessions", PROBE_LABEL: kind}
    if kind == "worker":  # the operator's labels of a session worker
        return {**base, "app.kubernetes.io/component": "session-worker",
                "app.kubernetes.io/instance": "probe-worker"}
    if kind == "plain":
        return {PROBE_LABEL: kind}
    return {**base, "app.kubernetes.io/instance": rel.name, "app.kubernetes.io/component": kind}


def _pod(rel: Release, kind: str) -> dict[str, Any]:
    """No named port: the chart's Services (targetPort `http`) never route to a probe, and
    the Deployments' ReplicaSets (selector with pod-template-hash) never adopt one."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"probe-{kind}", "namespace": rel.namespace,
                     "labels": _labels(rel, kind)},
        "spec": {
            "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": rel.stack.worker_image, "imagePullPolicy": "Never",
                "command": ["python", "-c", LISTEN],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"memory": "128Mi"}},
                "securityContext": {"readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


@pytest.fixture(scope="module")
def probes(release_on_node: Release) -> Iterator[dict[str, str]]:
    """The probe pods, all started at once; their IPs by kind."""
    rel = release_on_node
    rel.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [_pod(rel, k) for k in PROBES]}))

    def ips() -> dict[str, str] | None:
        pods = rel.get("pods", "-l", PROBE_LABEL)["items"]
        ready = {p["metadata"]["labels"][PROBE_LABEL]: p["status"]["podIP"]
                 for p in pods if is_ready(p)}
        return ready if len(ready) == len(PROBES) else None

    yield eventually(ips, 120, "the probe pods run")
    rel.kubectl("delete", "pods", "-l", PROBE_LABEL, "--wait=false", check=False)


def _probe(rel: Release, kind: str, targets: list[str]) -> dict[str, str]:
    out = rel.kubectl("exec", f"probe-{kind}", "--", "python", "-c", PROBE,
                      json.dumps(targets), timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError(f"kubectl exec probe-{kind}: {out.stderr}")
    result: dict[str, str] = json.loads(out.stdout)
    return result


def check(rel: Release, kind: str, allowed: list[str], refused: list[str]) -> None:
    """From the probe `kind`: every `allowed` target opens, every `refused` one does not.
    Retried for a while: kube-router programs a new pod's rules a moment after it starts."""
    last: dict[str, str] = {}

    def matches() -> bool:
        nonlocal last
        last = _probe(rel, kind, allowed + refused)
        return all(last[t] == "open" for t in allowed) and \
            all(last[t] != "open" for t in refused)

    try:
        eventually(matches, 40, f"{kind}'s connections", interval=1)
    except AssertionError:
        if not last:
            raise  # no probe ran: eventually's message says why
        wrong = {t: v for t, v in last.items()
                 if (v == "open") != (t in allowed)}
        raise AssertionError(f"from probe-{kind}: {wrong} (allowed {allowed}, "
                             f"refused {refused}; all: {last})") from None


@pytest.fixture(scope="module")
def targets(release_on_node: Release, probes: dict[str, str]) -> dict[str, str]:
    rel = release_on_node
    operator = rel.pods("operator")[0]["status"]["podIP"]
    api = rel.pods("api")[0]["status"]["podIP"]
    node = rel.stack.kube_server.split("//", 1)[1]  # NODE_IP:6443, the apiserver itself
    return {
        "dns": "dns/postgresql",
        "postgres": "postgresql:5432",
        "redis": "redis:6379",
        "kube-api-service": "kubernetes.default.svc:443",
        "kube-api": node,
        "api-service": f"{rel.name}-api:80",
        "api-pod": f"{api}:8080",
        "operator-metrics": f"{operator}:9090",
        **{f"{k}-9090": f"{ip}:9090" for k, ip in probes.items()},
        **{f"{k}-8081": f"{ip}:8081" for k, ip in probes.items()},
    }


def test_the_release_has_a_policy_per_component(release_on_node: Release) -> None:
    names = {p["metadata"]["name"] for p in release_on_node.get("networkpolicies")["items"]}
    assert names == {f"salon-sessions-{c}" for c in
                     ("session-workers", "operator", "api", "migrate")}


EGRESS = {
    # the workers: DNS, PostgreSQL, Redis (and WhatsApp outside the private ranges) only
    "worker": (["dns", "postgres", "redis"],
               ["kube-api-service", "kube-api", "api-service", "api-pod", "operator-metrics",
                "plain-9090"]),
    # the operator and the API: also the Kubernetes API server, nothing else in the cluster
    "operator": (["dns", "postgres", "redis", "kube-api-service", "kube-api"],
                 ["api-service", "api-pod", "plain-9090"]),
    "api": (["dns", "postgres", "redis", "kube-api-service", "kube-api"],
            ["worker-9090", "operator-metrics", "plain-9090"]),
    # the migrations Job: DNS and PostgreSQL only
    "migrations": (["dns", "postgres"], ["redis", "kube-api-service", "kube-api",
                                         "api-service"]),
}


@pytest.mark.parametrize("kind", list(EGRESS))
def test_egress(release_on_node: Release, targets: dict[str, str], kind: str) -> None:
    allowed, refused = EGRESS[kind]
    check(release_on_node, kind, allowed=[targets[t] for t in allowed],
          refused=[targets[t] for t in refused])


def test_ingress_metrics_from_anyone_nothing_else(release_on_node: Release,
                                                  targets: dict[str, str]) -> None:
    """From a pod no policy selects (its egress is free): the operator's and the workers'
    metrics port is open to anyone (`metricsFrom` empty), their other ports are not; the
    migrations Job takes no connection at all; the API (which serves its metrics on its
    one port) only its allowed clients (`apiFrom`)."""
    t = targets
    check(release_on_node, "plain",
          allowed=[t["operator-metrics"], t["worker-9090"], t["operator-9090"]],
          refused=[t["worker-8081"], t["operator-8081"], t["migrations-9090"],
                   t["migrations-8081"], t["api-service"], t["api-pod"], t["api-9090"]])


def test_api_from_lets_the_labelled_clients_in(release_on_node: Release,
                                               targets: dict[str, str]) -> None:
    rel = release_on_node
    rel.kubectl("label", "pod", "probe-plain", f"{API_CLIENT_LABEL}=true")
    try:
        check(rel, "plain", allowed=[targets["api-service"], targets["api-pod"]], refused=[])
    finally:
        rel.kubectl("label", "pod", "probe-plain", f"{API_CLIENT_LABEL}-")
