"""`helm template` output applied with `kubectl apply --dry-run=server` to the local control
plane: the API server validates every object (strict field validation, admission)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack.stack import StackInfo
from tests.chart import monitoring_crds
from tests.chart.helm import CHART, KUBE_VERSION, helm, template

pytestmark = pytest.mark.slow

EVERYTHING = [
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.podMonitor.enabled=true",
    "--set", "metrics.prometheusRule.enabled=true",
    "--set", "api.ingress.enabled=true",
    "--set", "worker.postConnectSecret=salon-sessions-hook",
]


@pytest.mark.parametrize("scope", ["namespace", "cluster", "namespaces"])
def test_rendered_chart_passes_server_side_dry_run(stack: StackInfo, namespace: str,
                                                   scope: str, tmp_path: Path) -> None:
    monitoring_crds.install(stack)
    scoping = ["--set", f"operator.scope={scope}"]
    if scope == "namespaces":  # the release namespace and one more
        extra = f"{namespace}-x"
        stack.kubectl("create", "namespace", extra)
        scoping = ["--set", f"operator.extraWatchNamespaces={{{extra}}}"]
    rendered = template("--include-crds", *EVERYTHING, *scoping,
                        namespace=namespace, release=f"dry-{scope}").stdout
    kinds = sorted({d["kind"] for d in yaml.safe_load_all(rendered) if d})
    assert {"CustomResourceDefinition", "Deployment", "Job", "NetworkPolicy",
            "PodDisruptionBudget", "PrometheusRule", "ServiceMonitor", "PodMonitor",
            "Ingress", "ConfigMap", "ClusterRole", "Role"} <= set(kinds)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    # every namespaced object names its namespace; with two, kubectl must not force one
    where = [] if scope == "namespaces" else ["-n", namespace]
    out = stack.kubectl("apply", "--dry-run=server", "--validate=strict", *where,
                        "-f", str(manifest), check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines, out.stdout
    assert all(line.endswith("(server dry run)") for line in lines), out.stdout
    assert len(lines) == sum(1 for d in yaml.safe_load_all(rendered) if d)
    if scope == "namespaces":
        stack.kubectl("delete", "namespace", extra, "--wait=false")


def test_install_dry_run_prints_next_steps(stack: StackInfo, namespace: str) -> None:
    """`helm install --dry-run=server` against the cluster: NOTES.txt looks the Secrets up
    and says which ones to create."""
    out = helm("install", "notes", str(CHART), "-n", namespace, "--dry-run=server",
               kubeconfig=stack.kubeconfig)
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "WARNING: these Secrets do not exist" in notes
    for secret in ("salon-sessions-database", "salon-sessions-redis", "salon-sessions-api",
                   "salon-sessions-redis-api", "salon-sessions-operator-credentials"):
        assert f"create secret generic {secret}" in notes
    assert "salon-sessions redis-users" in notes
    assert "kubectl -n " + namespace + " get salonsessions -w" in notes
    assert "Helm never deletes CRDs" in notes
    stack.kubectl("create", "secret", "generic", "salon-sessions-database", "-n", namespace,
                  "--from-literal=url=postgresql://u@db/salon")
    stack.kubectl("create", "secret", "generic", "salon-sessions-redis", "-n", namespace,
                  "--from-literal=url=redis://redis:6379/0")
    stack.kubectl("create", "secret", "generic", "salon-sessions-api", "-n", namespace,
                  "--from-literal=admin-token=a", "--from-literal=token-secret=b")
    stack.kubectl("create", "secret", "generic", "salon-sessions-redis-api", "-n", namespace,
                  "--from-literal=url=redis://salon-api:p@redis:6379/0")
    stack.kubectl("create", "secret", "generic", "salon-sessions-operator-credentials",
                  "-n", namespace, "--from-literal=redis-admin-url=redis://a:p@redis:6379/0",
                  "--from-literal=credentials-key=" + "k" * 32)
    out = helm("install", "notes", str(CHART), "-n", namespace, "--dry-run=server",
               kubeconfig=stack.kubeconfig)
    assert "WARNING" not in out.stdout.split("NOTES:", 1)[1]


def test_kube_version_constraint() -> None:
    out = template(check=False)
    assert out.returncode == 0
    old = helm("template", "x", str(CHART), "--kube-version", "1.26.0", check=False)
    assert old.returncode != 0
    assert "kubeVersion" in old.stderr
    assert KUBE_VERSION.startswith("1.")
