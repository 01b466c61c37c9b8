"""Fake nodes with kwok, for what only needs pods to exist (the operator scale benchmark).

A real kubelet runs ~110 pods per node and each one costs a container; the scale benchmark
wants 10,000 session pods and measures only the operator and the control plane. kwok
(`sigs.k8s.io/kwok`, pinned as KWOK_VERSION in scripts/versions.env, built by
scripts/build-k8s.sh) is a controller, not a kubelet: it runs here as a host process against
the stack's kube-apiserver, takes over the Nodes annotated `kwok.x-k8s.io/node: fake`, and plays
kwok's own default stages on them and on their pods (the `fast` set kwokctl uses:
node-initialize and node-heartbeat-with-lease; pod-ready, pod-complete, pod-delete), read from
kwok's module source of that version: the Node turns Ready and keeps its Lease, a pod bound to
it turns Running and Ready with no process behind it, a deleted pod goes away.

Identity: the ServiceAccount `kube-system/kwok-controller` with kwok's own RBAC (ClusterRole,
binding and the FlowSchema that exempts it from API Priority and Fairness, from the module's
`kustomize/rbac`), and a token from the TokenRequest API. The stack's static token file is read
once when the kube-apiserver starts, so an identity cannot be added there afterwards.

`start()` runs it under `procs.spawn` (pid file `kwok`), so `stack.stop()` / `make down`
stops it with the rest; `add_node()` registers a fake Node and waits until kwok made it Ready.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from devstack.procs import StartError, spawn, wait_until
from devstack.stack import REPO, StackInfo, _kubeconfig

ANNOTATION = "kwok.x-k8s.io/node"
"""kwok manages the Nodes with `kwok.x-k8s.io/node: fake` (and the pods bound to them)."""
TAINT = {"key": ANNOTATION, "value": "fake", "effect": "NoSchedule"}
"""The taint kwok's docs put on a fake Node so that nothing expecting a real one lands there."""
STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
LEASE_S = 40  # kwokctl's default node lease duration, with the heartbeat-with-lease stage


def version() -> str:
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        if line.startswith("KWOK_VERSION="):
            return line.split("=", 1)[1].strip()
    raise StartError("KWOK_VERSION is missing from scripts/versions.env")


def module_dir() -> Path:
    """kwok's module source of the pinned version (in Go's module cache since the build)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{version()}"],
                         capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        raise StartError(f"go mod download sigs.k8s.io/kwok failed:\n{out.stdout}{out.stderr}")
    return Path(json.loads(out.stdout)["Dir"])


def start(info: StackInfo) -> subprocess.Popen[bytes]:
    """Run kwok against the stack's kube-apiserver under its own ServiceAccount."""
    state_dir = Path(info.state_dir)
    binary = Path(info.bin_dir) / "kwok"
    if not binary.exists():  # not part of the default build: only the benchmark needs it
        out = subprocess.run(["bash", str(REPO / "scripts" / "build-k8s.sh"), "kwok"],
                             capture_output=True, text=True)
        if out.returncode != 0 or not binary.exists():
            raise StartError(f"building kwok failed (scripts/build-k8s.sh kwok):\n{out.stderr}")
    source = module_dir()
    info.kubectl("apply", "-k", str(source / "kustomize" / "rbac"))
    token = info.kubectl("-n", "kube-system", "create", "token", "kwok-controller",
                         "--duration=24h").stdout.strip()
    kubeconfig = state_dir / "kube" / "kwok.kubeconfig"
    _kubeconfig(kubeconfig, info.kube_server, Path(info.ca_file),
                "system:serviceaccount:kube-system:kwok-controller", token)
    argv = [str(binary), f"--kubeconfig={kubeconfig}",
            f"--manage-nodes-with-annotation-selector={ANNOTATION}=fake",
            f"--node-lease-duration-seconds={LEASE_S}"]
    argv += [f"--config={source / stage}" for stage in STAGES]
    return spawn(state_dir, "kwok", argv)


def add_node(info: StackInfo, proc: subprocess.Popen[bytes], name: str = "kwok-node-0",
             pods: int = 11_000, pod_cidr: str = "10.128.0.0/17", taint: bool = True) -> None:
    """Register a fake Node with room for `pods` pods and wait until kwok made it Ready.

    `pod_cidr` is where kwok takes the pods' IPs from (a /17 holds 32,766). CPU and memory
    are large enough for `pods` pods with the operator's default requests (50m, 128Mi).
    `taint=False` leaves out kwok's recommended taint: for a cluster whose only node is fake,
    so that pod templates without a toleration for it are scheduled there.
    """
    room = {"cpu": str(pods // 10 + 100), "memory": f"{pods * 256 // 1024 + 64}Gi",
            "pods": str(pods)}
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr],
                 "taints": [TAINT] if taint else []},
        "status": {"allocatable": room, "capacity": room},
    }
    info.kubectl("apply", "-f", "-", input=json.dumps(node))

    def ready() -> bool:
        got = json.loads(info.kubectl("get", "node", name, "-o", "json").stdout)
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in got["status"].get("conditions", []))

    wait_until(f"kwok node {name}", ready, 60, proc, Path(info.state_dir) / "logs" / "kwok.log")
