"""Run helm and kubectl on the chart: render, lint, install into the local stack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devstack.chart import CHART, run_helm
from devstack.stack import k8s_bin_dir

REPO = Path(__file__).resolve().parents[2]
KUBE_VERSION = "1.35.4"  # scripts/versions.env; `helm template` defaults to an old one
MONITORING_CRDS = Path(__file__).resolve().parent / "monitoring-crds.yaml"


def helm_bin() -> str:
    return str(k8s_bin_dir() / "helm")


def helm(*args: str, kubeconfig: str | None = None, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_helm(helm_bin(), *args, kubeconfig=kubeconfig, check=check, timeout=timeout)


def set_args(values: dict[str, Any] | None, tmp: Path | None) -> list[str]:
    if not values:
        return []
    assert tmp is not None
    path = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def template(*extra: str, values: dict[str, Any] | None = None, tmp: Path | None = None,
             namespace: str = "salon", release: str = "salon-sessions",
             check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", release, str(CHART), "--namespace", namespace,
                "--kube-version", KUBE_VERSION, *set_args(values, tmp), *extra, check=check)


def render(*extra: str, values: dict[str, Any] | None = None, tmp: Path | None = None,
           namespace: str = "salon", release: str = "salon-sessions") -> list[dict[str, Any]]:
    out = template(*extra, values=values, tmp=tmp, namespace=namespace, release=release)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind
               and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}
