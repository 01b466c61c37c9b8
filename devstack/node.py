"""The local stack's real Kubernetes node: containerd, the kubelet, kube-proxy, CoreDNS and
kube-router (NetworkPolicy enforcement only), next to the control plane of `devstack.stack`.

Why a real node and not a stand-in: what a first `helm install` can break (a read-only root
filesystem, uid 10001, probes, resource limits, in-cluster DNS, NetworkPolicies) only shows
on a kubelet running containers. Every setting below was found by a failure on these machines
(cgroup v1 hybrid, no systemd, root without CAP_SYS_RESOURCE); docs: ../shared/REAL_NODE.md.

A node changes the host: a dummy link with the node IP, a bridge, iptables chains, ipsets,
sysctls, mounts, cgroups, directories. `start_*` records what it finds (`host-before.json`
in the node's directory) and `stop_node` puts it back, so `make down` leaves the host as it
was; `host_state` and `host_changes` let a test check that. Only one node runs per machine
(host-wide iptables and the fixed node IP); `devstack.stack` enforces that.

Processes are started and stopped by pid through `devstack.procs`; containers are killed and
removed through containerd (`ctr`), whose shims are not our children.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import StartError, spawn, stop_named, wait_until

NODE_NAME = "salon-dev-node"
NODE_IP = "10.250.0.1"
NODE_LINK = "salon-node0"
BRIDGE = "salon-cni0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
CACHE_DIR = Path(os.environ.get("SALON_CACHE_DIR")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "salon-sessions")
CONTAINERD_ROOT = CACHE_DIR / "containerd"
"""containerd's content and snapshots: kept across `make down`, so images are imported once."""
CONTAINERD_STATE = Path("/run/salon-containerd")
CONTAINERD_SOCKET = CONTAINERD_STATE / "containerd.sock"
CRI_NAMESPACE = "k8s.io"
STOP_ORDER = ("kube-router", "kube-proxy", "kubelet", "containerd")

SYSCTLS = (
    # the kubelet's kernel tunables (protectKernelDefaults: false lets it set them)
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
    # the bridge CNI plugin (isGateway) turns forwarding on; kube-proxy checks these
    "net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.eth0.forwarding", "net.ipv4.conf.lo.forwarding",
    "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
)
"""Host sysctls the node may change, recorded before it starts and restored after it stops."""
CHAIN_PREFIXES = ("KUBE-", "CNI-")
"""kube-proxy's, the kubelet's, kube-router's (KUBE-ROUTER-*, KUBE-NWPLCY-*, KUBE-POD-FW-*)
and the CNI plugins' iptables chains."""
IPSET_PREFIXES = ("KUBE-", "kube-router", "inet6:KUBE-", "inet6:kube-router")
TABLES = ("raw", "mangle", "nat", "filter", "security")
COUNTERS = re.compile(r" ?\[\d+:\d+\]")
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/lib/cni"), Path("/etc/cni"),
             Path("/opt/cni"), Path("/opt/containerd"), Path("/run/containerd"),
             Path("/run/netns"), Path("/var/log/pods"), Path("/var/log/containers"),
             CONTAINERD_STATE)
"""Host-wide directories a node may create even with its own paths configured (the runc shim
keeps its sockets in /run/containerd/s, the kubelet links /var/log/containers)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
MOUNT_MARKS = re.compile(r"/kubelet|containerd|/netns|/cni")
"""Mount points a node makes (pod volumes under the kubelet's root, rootfs and shm under
containerd's state, network namespaces); other tools' mounts (buildah's) are not its own."""


@dataclass(frozen=True)
class NodeCredentials:
    """What the control plane hands the node: kubeconfigs (server https://NODE_IP:6443) and
    the cluster CA; the kubelet's serving certificate, signed by that CA."""

    ca: Path
    kubelet_kubeconfig: Path
    kubelet_cert: Path
    kubelet_key: Path
    kube_proxy_kubeconfig: Path
    kube_router_kubeconfig: Path


def node_dir(state_dir: Path) -> Path:
    return state_dir / "node"


def _run(*argv: str, check: bool = True, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise StartError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{result.stderr.strip()[-2000:]}")
    return result


def _ctr(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run("ctr", "--address", str(CONTAINERD_SOCKET), "--connect-timeout", "2s",
                "-n", CRI_NAMESPACE, *args, check=check, timeout=timeout)


# --------------------------------------------------------------------------- host record

def read_sysctl(key: str) -> str | None:
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / key.replace(".", "/")).write_text(value + "\n")


def record_host(state_dir: Path) -> None:
    """Write what the node may change (sysctls, host directories, ipsets) to
    `node/host-before.json`, unless a record of an unfinished run is there already (then
    that one is the host's original state)."""
    path = node_dir(state_dir) / "host-before.json"
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "sysctls": {k: v for k in SYSCTLS if (v := read_sysctl(k)) is not None},
        "dirs": [str(d) for d in HOST_DIRS if d.exists()],
        "ipsets": _ipsets(),
    }, indent=2))


def recorded(state_dir: Path) -> bool:
    """Whether a node of this state directory changed the host (a record is there)."""
    return (node_dir(state_dir) / "host-before.json").exists()


def add_node_ip() -> None:
    """The link `salon-node0` with NODE_IP/32: the address the apiserver, PostgreSQL
    and Redis listen on and the pods reach them at."""
    # some kernels here lack the dummy driver: a bridge without ports holds an address just
    # as well (its local route does not depend on a carrier)
    if (_run("ip", "link", "show", NODE_LINK, check=False).returncode != 0
            and _run("ip", "link", "add", NODE_LINK, "type", "dummy", check=False).returncode):
        _run("ip", "link", "add", NODE_LINK, "type", "bridge")
    _run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_LINK)
    _run("ip", "link", "set", NODE_LINK, "up")


# --------------------------------------------------------------------------- containerd

def containerd_config(state_dir: Path, pause_image: str) -> str:
    node = node_dir(state_dir)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{CONTAINERD_SOCKET}"
[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{CONTAINERD_ROOT}/opt"

[{cri}]
  sandbox_image = "{pause_image}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot give the sandbox oom_score_adj -998
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{CONTAINERD_STATE}/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node / 'cni' / 'net.d'}"
    max_conf_num = 1
"""


def cni_config(state_dir: Path) -> dict[str, object]:
    """One bridge network for the pods (portmap for hostPorts); containerd adds loopback."""
    return {
        "cniVersion": "1.0.0", "name": "salon-pods",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(node_dir(state_dir) / "cni" / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def start_containerd(state_dir: Path, pause_image: str) -> None:
    """containerd with its own config, root, state and socket; any container left by an
    unfinished run is removed before the kubelet sees it."""
    node = node_dir(state_dir)
    (node / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (node / "cni" / "net.d" / "10-salon.conflist").write_text(
        json.dumps(cni_config(state_dir), indent=2))
    config = node / "containerd.toml"
    config.write_text(containerd_config(state_dir, pause_image))
    CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
    proc = spawn(state_dir, "containerd", ["containerd", "--config", str(config)])
    wait_until("containerd", lambda: CONTAINERD_SOCKET.exists()
               and _ctr("version", check=False).returncode == 0,
               30, proc, state_dir / "logs" / "containerd.log")
    remove_containers()


def remove_containers() -> None:
    """Kill and delete every task and container of the kubelet's namespace (the shims exit
    with their tasks), with their snapshots: nothing of a run survives into the next."""
    if not CONTAINERD_SOCKET.exists() or _ctr("version", check=False).returncode != 0:
        return
    tasks = _ctr("tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        _ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
    for task in tasks:
        deadline = time.monotonic() + 10
        while (_ctr("tasks", "delete", task, check=False).returncode != 0
               and time.monotonic() < deadline
               and task in _ctr("tasks", "ls", "-q", check=False).stdout.split()):
            time.sleep(0.2)
    containers = _ctr("containers", "ls", "-q", check=False).stdout.split()
    if containers:
        _ctr("containers", "delete", *containers, check=False)


def container_pid(container_id: str) -> int:
    """The host pid of a container's main process, from a pod's `containerID`
    (`containerd://<id>`), as containerd reports its task."""
    cid = container_id.removeprefix("containerd://")
    for line in _ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == cid:
            return int(fields[1])
    raise LookupError(f"no running task for container {cid}")


# --------------------------------------------------------------------------- kubelet & co

def kubelet_config(state_dir: Path, creds: NodeCredentials) -> dict[str, object]:
    node = node_dir(state_dir)
    endpoint = f"unix://{CONTAINERD_SOCKET}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # these machines are cgroup v1 (hybrid); 1.35 refuses it else
        "cgroupDriver": "cgroupfs",  # no systemd here
        "failSwapOn": False,
        "containerRuntimeEndpoint": endpoint, "imageServiceEndpoint": endpoint,
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(creds.kubelet_cert), "tlsPrivateKeyFile": str(creds.kubelet_key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(creds.ca)}},
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_IP], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        # imported images have no registry to come back from: never collect them
        "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
        "podLogsDirectory": str(node / "pod-logs"),
        "serializeImagePulls": False,
        "syncFrequency": "10s", "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "5s",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "5%",
                         "imagefs.available": "5%"},
        "rotateCertificates": False, "serverTLSBootstrap": False,
    }


def kube_proxy_config(state_dir: Path, creds: NodeCredentials) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(creds.kube_proxy_kubeconfig)},
        "hostnameOverride": NODE_NAME, "bindAddress": NODE_IP,
        "mode": "iptables", "clusterCIDR": POD_CIDR,
        # localhostNodePorts would set route_localnet=1 on the host
        "iptables": {"localhostNodePorts": False},
        # leave the host's conntrack sysctls alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s",
                      "udpStreamTimeout": "0s"},
        "nodePortAddresses": ["primary"],  # NODE_IP
        "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
    }


def _yaml(path: Path, doc: Mapping[str, object]) -> Path:
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


def start_node(state_dir: Path, bin_dir: Path, creds: NodeCredentials,
               ready: Callable[[], bool]) -> None:
    """The kubelet, kube-proxy and kube-router, once containerd runs with the images
    imported. `ready` says whether the Node object is Ready (the stack asks the apiserver)."""
    node = node_dir(state_dir)
    logs = state_dir / "logs"
    kubelet_root = node / "kubelet"
    kubelet_root.mkdir(parents=True, exist_ok=True)
    proc = spawn(state_dir, "kubelet", [
        str(bin_dir / "kubelet"),
        f"--config={_yaml(node / 'kubelet.yaml', kubelet_config(state_dir, creds))}",
        f"--kubeconfig={creds.kubelet_kubeconfig}", f"--root-dir={kubelet_root}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", "--v=1",
    ])
    wait_until(f"node {NODE_NAME} Ready", ready, 60, proc, logs / "kubelet.log")
    spawn(state_dir, "kube-proxy", [
        str(bin_dir / "kube-proxy"),
        f"--config={_yaml(node / 'kube-proxy.yaml', kube_proxy_config(state_dir, creds))}",
        "--v=1",
    ])
    spawn(state_dir, "kube-router", [
        str(bin_dir / "kube-router"), f"--kubeconfig={creds.kube_router_kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        # NetworkPolicies only: the bridge CNI routes and kube-proxy does Services
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--enable-ipv6=false",
        "--metrics-port=0", "--health-port=0", "--v=1",
    ])


def cluster_role_binding(name: str, role: str,
                         subject: Mapping[str, str]) -> dict[str, object]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [dict(subject)]}


def cluster_role(name: str, rules: list[dict[str, list[str]]],
                 subject: Mapping[str, str]) -> list[dict[str, object]]:
    """A ClusterRole and its binding to one subject, both called `name`."""
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": name}, "rules": rules},
            cluster_role_binding(name, name, subject)]


def coredns_manifests(image: str) -> list[dict[str, object]]:
    """CoreDNS in kube-system: its ServiceAccount and RBAC, the Corefile, a Deployment of the
    local image (never pulled) on an unprivileged port, the Service at DNS_IP."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system", "labels": labels}
    corefile = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
}}
"""
    rules = [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        *cluster_role("salon-dev:coredns", rules,
                      {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "coredns", "dnsPolicy": "Default",
                      "priorityClassName": "system-cluster-critical",
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                          "runAsGroup": 65534, "sysctls": [
                                              {"name": "net.ipv4.ip_unprivileged_port_start",
                                               "value": "53"}]},
                      "containers": [{
                          "name": "coredns", "image": image, "imagePullPolicy": "Never",
                          "args": ["-conf", "/etc/coredns/Corefile"],
                          "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53,
                                     "protocol": "TCP"}],
                          "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                        "limits": {"memory": "128Mi"}},
                          "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                             "periodSeconds": 2},
                          "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                            "periodSeconds": 10},
                          "securityContext": {"readOnlyRootFilesystem": True,
                                              "allowPrivilegeEscalation": False,
                                              "capabilities": {"drop": ["ALL"]}},
                          "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                      }],
                      "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                  }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
         "spec": {"clusterIP": DNS_IP, "selector": labels, "ports": [
             {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}]}},
    ]


# --------------------------------------------------------------------------- stop & restore

def stop_node(state_dir: Path) -> list[str]:
    """Stop the node's processes and its containers (`restore_host` then undoes what they
    changed on the host)."""
    stopped = stop_named(state_dir, STOP_ORDER[:-1])
    remove_containers()
    stopped += stop_named(state_dir, ["containerd"])
    _kill_our_shims()
    return stopped


def _kill_our_shims() -> None:
    """A shim left behind (containerd died before deleting its task) is found by its
    command line naming our socket, and killed by pid."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (argv and argv[0].endswith(b"containerd-shim-runc-v2")
                and str(CONTAINERD_SOCKET).encode() in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), 9)


def restore_host(state_dir: Path) -> None:
    """Put the host back as `record_host` found it: iptables chains and ipsets (by prefix,
    whatever the record says), links, mounts, cgroups, sysctls, host directories. Safe to
    call when nothing ran."""
    record_path = node_dir(state_dir) / "host-before.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    _clean_iptables()
    before_sets = record.get("ipsets")
    _destroy_ipsets(before_sets if isinstance(before_sets, list) else None)
    for link in (BRIDGE, NODE_LINK):
        _run("ip", "link", "delete", link, check=False)
    _unmount_under([node_dir(state_dir), CONTAINERD_STATE, CONTAINERD_ROOT, Path("/run/netns")])
    _remove_cgroups()
    sysctls = record.get("sysctls")
    if isinstance(sysctls, dict):
        for key, value in sysctls.items():
            if read_sysctl(key) != value:
                write_sysctl(key, str(value))
    kept = record.get("dirs")
    if isinstance(kept, list):
        for d in HOST_DIRS:
            if str(d) not in kept:
                _remove_dir(d)
    else:  # no record: only empty leftovers are ours for sure
        for d in HOST_DIRS:
            _remove_empty_dirs(d)
    record_path.unlink(missing_ok=True)


def _remove_dir(d: Path) -> None:
    """A host directory the node created: removed, unless something else listens on a
    socket in it (another containerd's shims share /run/containerd/s)."""
    _remove_empty_dirs(d)
    if d.exists() and not any(_listening(p) for p in d.rglob("*") if p.is_socket()):
        shutil.rmtree(d, ignore_errors=True)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        return s.connect_ex(str(path)) == 0


def _remove_empty_dirs(d: Path) -> None:
    if not d.is_dir() or d.is_symlink():
        return
    for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            with contextlib.suppress(OSError):
                sub.rmdir()
    with contextlib.suppress(OSError):
        d.rmdir()


def _iptables_tools() -> list[tuple[str, str]]:
    return [("iptables", "iptables-save"), ("ip6tables", "ip6tables-save")]


def _clean_iptables() -> None:
    """Remove the rules that jump to our chains from every other chain, then flush and
    delete our chains, in every table of both families."""
    for tool, save in _iptables_tools():
        for table in TABLES:
            dump = _run(save, "-t", table, check=False).stdout
            ours = [line[1:].split()[0] for line in dump.splitlines()
                    if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)]
            for line in dump.splitlines():
                if not line.startswith("-A "):
                    continue
                chain = line.split()[1]
                if chain in ours:
                    continue
                if any(f"-j {c}" in line or f"-g {c}" in line for c in ours) or (
                        "kube-router" in line or "KUBE-" in line or "CNI-" in line):
                    _run(tool, "-t", table, "-D", *shlex.split(line[3:]), check=False)
            for chain in ours:
                _run(tool, "-t", table, "-F", chain, check=False)
            for chain in ours:
                _run(tool, "-t", table, "-X", chain, check=False)


def _ipsets() -> list[str]:
    out = _run("ipset", "list", "-n", check=False)
    return sorted(out.stdout.split()) if out.returncode == 0 else []


def _destroy_ipsets(before: list[str] | None) -> None:
    """kube-router's `--cleanup-config` panics: its sets (named by prefix, or new since the
    record) are destroyed here, lists of sets last."""
    keep = set(before or [])
    for _ in range(3):  # a set still referenced by a list set goes in the next round
        doomed = [s for s in _ipsets()
                  if s.startswith(IPSET_PREFIXES) or (before is not None and s not in keep)]
        if not doomed:
            return
        for name in doomed:
            _run("ipset", "destroy", name, check=False)


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(point)
    return points


def _unmount_under(roots: Iterable[Path]) -> None:
    prefixes = [str(r.resolve() if r.exists() else r) for r in roots]
    for _ in range(3):
        mine = [p for p in _mount_points()
                if any(p == r or p.startswith(r + "/") for r in prefixes)]
        if not mine:
            return
        for point in sorted(mine, key=len, reverse=True):
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)


def kubepods_cgroups() -> list[Path]:
    """The kubelet's `kubepods` cgroup in each hierarchy (cgroup v1: one per controller)."""
    return sorted(p for p in CGROUP_ROOT.glob("*/kubepods*") if p.is_dir())


def _remove_cgroups() -> None:
    for top in kubepods_cgroups():
        for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


# --------------------------------------------------------------------------- host check

def host_state() -> dict[str, list[str]]:
    """What a node changes on the host, comparable before start and after stop: iptables
    rules and chains of both families (empty tables left out: iptables-nft cannot delete a
    table, and an empty one filters nothing), ipsets, the sysctls of SYSCTLS, the node's
    kind of mount points (MOUNT_MARKS), links, kubepods cgroups, the host directories of
    HOST_DIRS."""
    rules = []
    for _tool, save in _iptables_tools():
        for table in TABLES:
            for line in _run(save, "-t", table, check=False).stdout.splitlines():
                if not line or line.startswith(("#", "*", "COMMIT")):
                    continue
                if line.startswith(":"):
                    name, policy = line[1:].split()[:2]
                    if name in BUILTIN_CHAINS and policy == "ACCEPT":
                        continue
                rules.append(f"{save} -t {table} {COUNTERS.sub('', line)}")
    links = _run("ip", "-o", "link", "show").stdout.splitlines()
    return {
        "iptables": rules,
        "ipsets": _ipsets(),
        "sysctls": [f"{k}={read_sysctl(k)}" for k in SYSCTLS],
        "mounts": sorted({p for p in _mount_points() if MOUNT_MARKS.search(p)}),
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links),
        "cgroups": [str(p) for p in kubepods_cgroups()],
        "dirs": [str(d) for d in HOST_DIRS if d.exists()],
    }


def host_changes(before: Mapping[str, list[str]], after: Mapping[str, list[str]]) -> list[str]:
    """Lines of `host_state` that differ: `+` new since `before`, `-` gone."""
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = set(before.get(key, [])), set(after.get(key, []))
        out += [f"{key}: + {v}" for v in sorted(new - old)]
        out += [f"{key}: - {v}" for v in sorted(old - new)]
    return out
