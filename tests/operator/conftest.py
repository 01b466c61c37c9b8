"""Fixtures of the operator tests: a real `salon-sessions operator` process scoped to the
test's namespace, authenticated as its ServiceAccount with the RBAC of deploy/rbac/ (so a
missing verb fails the tests), with its own Redis user and the ACL admin's (it writes each
session worker's Redis user and credentials Secret), the test's own database, and fast
simulator timings. `redis_url` is Redis' default user: the tests' observer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.procs import free_port, stop_process
from devstack.stack import StackInfo
from tests.helpers import eventually, get_json, metric_sample

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
RBAC = REPO / "deploy" / "rbac"
SA = "salon-sessions-operator"
FAST_WORKER = {
    "SALON_SIMULATOR_FIRST_QR_S": "4",
    "SALON_SIMULATOR_QR_PERIOD_S": "3",
    "SALON_LOCK_CHECK_S": "0.5",
}
FAST_OPERATOR = {
    "SALON_WORKER_HEARTBEAT_TTL_S": "6",
    "SALON_WORKER_TERMINATION_GRACE_S": "5",
    "SALON_WORKER_ENV": json.dumps(FAST_WORKER),
    "SALON_HEARTBEAT_CHECK_S": "1",
    "SALON_PING_INTERVAL_S": "1",
    "SALON_PING_TIMEOUT_S": "2",
    "SALON_STATUS_BATCH_S": "0.05",
    "SALON_STATUS_LAZY_S": "2",
    "SALON_LEASE_DURATION_S": "3",
    "SALON_LEASE_RENEW_S": "1",
    "SALON_CLEANUP_ATTEMPTS": "3",
    "SALON_CLEANUP_RETRY_S": "0.5",
    "SALON_POD_STOP_TIMEOUT_S": "30",
    "SALON_KOPF_LOG_LEVEL": "INFO",
}


def rbac_documents(namespace: str) -> list[dict[str, Any]]:
    """deploy/rbac/ for one namespace: the namespaced binding instead of the cluster one."""
    docs: list[dict[str, Any]] = []
    for path in sorted(RBAC.glob("*.yaml")):
        if path.name == "clusterrolebinding.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if "namespace" in doc["metadata"]:
                doc["metadata"]["namespace"] = namespace
            for subject in doc.get("subjects", []):
                subject["namespace"] = namespace
            docs.append(doc)
    return docs


def service_account_kubeconfig(stack: StackInfo, namespace: str, path: Path) -> Path:
    stack.kubectl("apply", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List",
                                    "items": rbac_documents(namespace)}))
    token = stack.kubectl("create", "token", SA, "-n", namespace,
                          "--duration=2h").stdout.strip()
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": stack.kube_server,
                                                  "certificate-authority": stack.ca_file}}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": SA}}],
        "current-context": "test",
    }))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProc:
    identity: str
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(VENV_BIN / "salon-sessions"), "operator"],
                                         env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def role(self) -> str:
        try:
            return self.get("/readyz")[1].strip()
        except OSError:
            return "down"

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        value = metric_sample(text, name, **labels)
        return 0.0 if value is None else value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class OperatorEnv:
    stack: StackInfo
    namespace: str
    database: str
    redis_url: str
    tmp: Path
    kubeconfig: Path
    procs: list[OperatorProc] = field(default_factory=list)

    def start_operator(self, identity: str = "op-a", **overrides: str) -> OperatorProc:
        port = free_port()
        env = {
            "PATH": os.environ["PATH"], "HOME": str(self.tmp),
            "KUBECONFIG": str(self.kubeconfig),
            "SALON_DATABASE_URL": self.database,
            "SALON_REDIS_URL": self.stack.redis_operator_url,
            "SALON_REDIS_ADMIN_URL": self.stack.redis_admin_url,
            "SALON_CREDENTIALS_KEY": self.stack.credentials_key,
            "SALON_NAMESPACE": self.namespace, "SALON_IDENTITY": identity,
            "SALON_METRICS_PORT": str(port), "SALON_HTTP_HOST": "127.0.0.1",
            # the workers: real containers from the project image imported into the node
            "SALON_WORKER_IMAGE": self.stack.worker_image,
            "SALON_WORKER_IMAGE_PULL_POLICY": "Never",
            **FAST_OPERATOR, **overrides,
        }
        proc = OperatorProc(identity, env, self.tmp / f"operator-{identity}.log", port)
        self.procs.append(proc.start())
        return proc

    def wait_role(self, proc: OperatorProc, role: str, timeout: float = 30) -> None:
        eventually(lambda: proc.role() == role, timeout, f"{proc.identity} is {role}")

    def kubectl(self, *args: str, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.stack.kubectl(*args, "-n", self.namespace, check=check, input=input)

    def apply_session(self, company: str, name: str | None = None, **spec: Any) -> str:
        name = name or company.replace("_", "-")
        body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
                "metadata": {"name": name},
                "spec": {"companyId": company, "driver": "simulator", **spec}}
        self.kubectl("apply", "-f", "-", input=json.dumps(body))
        return name

    def session(self, name: str) -> dict[str, Any]:
        return get_json(self.stack, "salonsession", name, "-n", self.namespace)

    def status(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "salonsession", name, "-o", "json", check=False)
        if out.returncode != 0:
            return {}
        status: dict[str, Any] = json.loads(out.stdout).get("status") or {}
        return status

    def wait_status(self, name: str, what: str, timeout: float = 60,
                    **expected: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(name)
            ok = all(status.get(k) == v for k, v in expected.items())
            return status if ok else None

        return eventually(check, timeout, f"{name}: {what} {expected}")

    def exists(self, kind: str, name: str) -> bool:
        return self.kubectl("get", kind, name, check=False).returncode == 0

    def statefulsets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = get_json(self.stack, "statefulsets", "-n",
                                               self.namespace)["items"]
        return items

    def pod(self, name: str) -> dict[str, Any] | None:
        out = self.kubectl("get", "pod", name, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def events(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = get_json(
            self.stack, "events", "-n", self.namespace,
            "--field-selector", f"involvedObject.name={name},involvedObject.kind=SalonSession",
        )["items"]
        return items


@pytest.fixture
def salon_crd(stack: StackInfo) -> StackInfo:
    """The SalonSession CRD applied from this checkout and established."""
    crd = REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"
    stack.kubectl("apply", "-f", str(crd))
    stack.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                  "crd/salonsessions.wa.salonsessions.io")
    return stack


@pytest.fixture
def operator_env(salon_crd: StackInfo, namespace: str, database: str, redis_url: str,
                 tmp_path: Path) -> Iterator[OperatorEnv]:
    stack = salon_crd
    kubeconfig = service_account_kubeconfig(stack, namespace, tmp_path / "operator.kubeconfig")
    env = OperatorEnv(stack, namespace, database, redis_url, tmp_path, kubeconfig)
    try:
        yield env
    finally:
        # remove the sessions while an operator still runs (finalizers), then stop them
        running = [p for p in env.procs if p.alive()]
        if running:
            stack.kubectl("delete", "salonsessions", "--all", "-n", namespace,
                          "--timeout=40s", check=False)
        for proc in env.procs:
            proc.stop()
            print(f"---- operator {proc.identity} log (tail) ----")
            print("\n".join(proc.log().splitlines()[-60:]))
        stack.kubectl("patch", "salonsessions", "--all", "-n", namespace, "--type=merge",
                      "-p", '{"metadata":{"finalizers":null}}', check=False)
