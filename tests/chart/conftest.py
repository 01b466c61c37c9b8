"""The chart installed with Helm on the stack's real node (containerd, kubelet, kube-proxy,
CoreDNS, kube-router), as a platform team installs it: the chart's default values plus
what a user must supply anyway (the image, the Secrets, the PostgreSQL and Redis Services).

`installed_release` installs one release in a fresh namespace and database and removes
everything afterwards; `release_on_node` is one such release shared by the modules that
check the running pods (pod security, network policies). `tests/chart/test_install.py`
installs its own: it deletes pods, upgrades and uninstalls.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import chart
from devstack import stack as devstack_stack
from devstack.stack import StackInfo
from tests.helpers import eventually

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CONTAINERD = "/run/salon-containerd/containerd.sock"
SESSION_API = "wa.salonsessions.io/v1alpha1"
PROBE_LABEL = "salon-test/probe"
"""The tests' probe pods (tests/chart/test_network_policies.py) carry a component's labels
too; this one tells them apart."""


@dataclass
class Release:
    stack: StackInfo
    namespace: str
    database: str
    """The release database's URL from the host (the pods get `postgresql:5432`)."""
    creds: chart.Credentials
    values: dict[str, Any]
    name: str = chart.RELEASE
    installed: bool = False
    notes: str = ""
    sessions: list[str] = field(default_factory=list)

    # ---- kubectl and helm in the release namespace
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # the namespace first: after `exec POD --` it would be the command's argument
        return self.stack.kubectl("-n", self.namespace, *args, check=check, input=input,
                                  timeout=timeout)

    def get(self, *args: str) -> dict[str, Any]:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return chart.helm(self.stack, *args, namespace=self.namespace, check=check)

    def upgrade(self, extra: dict[str, Any]) -> None:
        self.values = chart.merge(self.values, extra)
        chart.install(self.stack, self.namespace, self.values, release=self.name,
                      upgrade=True)

    # ---- pods
    def pods(self, component: str, ready: bool = False) -> list[dict[str, Any]]:
        """The pods of a component that are not being deleted (and Ready, if asked), the
        tests' probe pods left out."""
        items: list[dict[str, Any]] = self.get(
            "pods", "-l", f"app.kubernetes.io/component={component},!{PROBE_LABEL}"
        ).get("items", [])
        return [p for p in items if not p["metadata"].get("deletionTimestamp")
                and (not ready or is_ready(p))]

    def pod(self, name: str) -> dict[str, Any]:
        return self.get("pod", name)

    def worker_pod(self, session: str) -> dict[str, Any]:
        return self.pod(f"{session}-0")

    def wait_ready(self, component: str, count: int, timeout: float = 180) -> list[str]:
        pods = eventually(lambda: (p := self.pods(component, ready=True)) and
                          len(p) == count and p, timeout, f"{count} ready {component} pods")
        return [p["metadata"]["name"] for p in pods]

    # ---- the operator and the API
    def leader(self) -> str:
        lease = self.get("lease", f"{self.name}-operator")
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def operator_role(self, pod: dict[str, Any]) -> str:
        try:
            return httpx.get(f"http://{pod['status']['podIP']}:9090/readyz",
                             timeout=2).text.strip()
        except (httpx.HTTPError, KeyError):
            return "down"

    @property
    def api_url(self) -> str:
        """The API Service's ClusterIP, reached from the host through kube-proxy."""
        svc = self.get("service", f"{self.name}-api")
        return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.creds.admin_token}"})

    # ---- sessions
    def create_session(self, company: str, driver: str = "simulator") -> str:
        """A SalonSession applied as a user would (`kubectl apply`); its name."""
        name = company.replace("_", "-")
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": SESSION_API, "kind": "SalonSession",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"companyId": company, "displayName": f"Salon {company}",
                     "driver": driver}}))
        self.sessions.append(name)
        return name

    def status(self, session: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get("salonsession", session).get("status") or {}
        return status

    def save_logs(self, keep: Path) -> None:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for pod in self.get("pods").get("items", []):
            name = pod["metadata"]["name"]
            for previous in ("", "--previous"):
                out = self.kubectl("logs", name, "--tail=400", *filter(None, [previous]),
                                   check=False)
                if out.returncode == 0:
                    (keep / f"{name}{previous.replace('--', '.')}.log").write_text(out.stdout)
            (keep / f"{name}.json").write_text(json.dumps(pod, indent=1))


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions", []))


def container_id(pod: dict[str, Any], container: str | None = None) -> str:
    """The containerd id of a pod's (only, or named) running container."""
    statuses = pod["status"]["containerStatuses"]
    status = next(s for s in statuses if container in (None, s["name"]))
    return str(status["containerID"]).split("://", 1)[1]


def container_pid(cid: str) -> int:
    """The host pid of a container's first process (containerd's task list)."""
    out = subprocess.run(["ctr", "--address", CONTAINERD, "-n", "k8s.io", "task", "ls"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines()[1:]:
        task, pid, status = line.split()[:3]
        if task == cid and status == "RUNNING":
            return int(pid)
    raise AssertionError(f"container {cid} runs no task:\n{out}")


def pod_pid(pod: dict[str, Any], container: str | None = None) -> int:
    return container_pid(container_id(pod, container))


def psql(stack: StackInfo, sql: str, dsn: str | None = None) -> str:
    return subprocess.run([devstack_stack.pg_bin("psql"), dsn or stack.postgres_dsn,
                           "-v", "ON_ERROR_STOP=1", "-tAqc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def installed_release(stack: StackInfo, label: str,
                      extra: dict[str, Any] | None = None) -> Iterator[Release]:
    """`helm install` with the default values and `extra` into a fresh namespace with its
    own database, the Secrets and the PostgreSQL/Redis Services created first; waits for
    the Deployments. Afterwards: the sessions deleted while the operator runs, `helm
    uninstall`, the namespace and the database dropped, the pods' logs kept in
    test-artifacts/<label>-logs."""
    namespace = f"{label}-{uuid.uuid4().hex[:6]}"
    db_name = f"{label}_{uuid.uuid4().hex[:10]}".replace("-", "_")
    base, _, _ = stack.postgres_dsn.rpartition("/")
    database = f"{base}/{db_name}"
    psql(stack, f'CREATE DATABASE "{db_name}"')
    chart.create_namespace(stack, namespace)
    devstack_stack.backing_services(stack, namespace)
    creds = chart.create_secrets(stack, namespace, database)
    values = chart.merge(chart.image_values(stack.worker_image), extra or {})
    rel = Release(stack, namespace, database, creds, values)
    try:
        out = chart.install(stack, namespace, values)
        rel.installed = True
        rel.notes = out.stdout.split("NOTES:", 1)[-1]
        yield rel
    finally:
        rel.save_logs(ARTIFACTS / f"{label}-logs")
        if rel.installed:  # the sessions first: the operator's finalizer cleans them up
            rel.kubectl("delete", "salonsessions", "--all", "--timeout=60s", check=False,
                        timeout=90)
            rel.helm("uninstall", rel.name, "--wait", "--timeout", "2m", check=False)
        rel.kubectl("patch", "salonsessions", "--all", "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        with contextlib.suppress(subprocess.CalledProcessError):
            psql(stack, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


API_CLIENT_LABEL = "salon-test/api-client"


@pytest.fixture(scope="package")
def release_on_node(stack: StackInfo) -> Iterator[Release]:
    """One release for the modules that check the running pods; its only value beyond the
    defaults restricts who may call the API (`networkPolicy.apiFrom`), so that the
    NetworkPolicy test sees that restriction both ways."""
    extra = {"networkPolicy": {"apiFrom": [
        {"podSelector": {"matchLabels": {API_CLIENT_LABEL: "true"}}}]}}
    with installed_release(stack, "chart-pods", extra) as rel:
        rel.wait_ready("operator", 2)
        rel.wait_ready("api", 2)
        yield rel
