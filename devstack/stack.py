"""The local stack: PostgreSQL, Redis, etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and a real node (`devstack.node`: containerd, kubelet, kube-proxy, CoreDNS,
kube-router), in one state directory.

PostgreSQL, Redis and the apiserver listen on the node IP (NODE_IP, a dummy link), on their
standard ports: the pods reach them there (the `kubernetes` Service DNATs to the apiserver's
advertised address; `backing_services` gives PostgreSQL and Redis in-cluster names), and the
host uses the same URLs. The cluster has a CA of its own: the apiserver's serving certificate
names every address pods and the host use, and the apiserver authenticates to the kubelet
with a client certificate (so `kubectl logs/exec` work).

`start()` brings it all up (images built and imported by `devstack.images`) and writes
`state.json` (URLs, paths, the worker image) and a kubeconfig; `stop()` stops everything by
pid and puts the host back. One stack per machine: a second `start()` is refused while one
runs. Used by `python -m devstack` and by the pytest fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devstack import images, node
from devstack.node import NODE_IP, NODE_NAME, POD_CIDR, SERVICE_CIDR
from devstack.procs import (
    StartError,
    free_port,
    http_ok,
    pid_alive,
    pid_dir,
    spawn,
    stop_all,
    stop_named,
    wait_until,
)
from salon_sessions.core.urls import with_credentials

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql")
POSTGRES_PORT = 5432
REDIS_PORT = 6379
APISERVER_PORT = 6443
RUNNING = Path("/run/salon-sessions/stack")
"""The state directory of the stack that runs on this machine (one at a time)."""
STOP_ORDER = (
    "operator", "api", "kube-scheduler", "kube-controller-manager",
    "kube-apiserver", "etcd", "redis", "postgres",
)
ALL_COMPONENTS = ("postgres", "redis", "kubernetes", "node")
"""`node` needs `kubernetes`; without it the control plane has no node (the scale benchmark
brings kwok's fake ones)."""


@dataclass
class StackInfo:
    state_dir: str
    postgres_dsn: str = ""
    redis_url: str = ""
    """Redis' default user: everything (the tests' observer and the phone tools)."""
    redis_operator_url: str = ""
    redis_api_url: str = ""
    redis_admin_url: str = ""
    """The users of `core.redis_acl`: the operator's, the API's, the ACL admin's."""
    credentials_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """The operator's key of the per-session passwords (kept: a new one rolls the pods)."""
    kube_server: str = ""
    kubeconfig: str = ""
    ca_file: str = ""
    admin_token: str = ""
    node_name: str = NODE_NAME
    bin_dir: str = ""
    components: list[str] = field(default_factory=list)
    api_url: str = ""
    api_admin_token: str = ""
    worker_image: str = ""
    """The project image (built from the Dockerfile, imported into the node's containerd)."""

    def save(self) -> None:
        path = Path(self.state_dir) / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, state_dir: Path) -> StackInfo:
        return cls(**json.loads((state_dir / "state.json").read_text()))

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(self.bin_dir) / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True, text=True, check=check, input=input, timeout=timeout,
        )


def k8s_bin_dir() -> Path:
    """The cached control-plane binaries (built by scripts/build-k8s.sh if missing)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-k8s.sh")], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise StartError(f"building the Kubernetes binaries failed:\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def pg_bin(tool: str) -> str:
    versions = sorted(PG_BIN.glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise StartError("PostgreSQL is not installed (run scripts/bootstrap.sh)")
    return str(versions[-1] / tool)


# --------------------------------------------------------------------------- postgres

def start_postgres(state_dir: Path, info: StackInfo) -> None:
    data = state_dir / "postgres"
    port = POSTGRES_PORT
    password = secrets.token_urlsafe(18)
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    pwfile = data / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        data.chmod(0o700)
    pgdata = data / "data"
    subprocess.run(
        [pg_bin("initdb"), "-D", str(pgdata), "-U", "salon", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True, user=user,
    )
    pwfile.unlink()
    with open(pgdata / "pg_hba.conf", "a") as hba:  # the host (NODE_IP) and the pods
        hba.write(f"host all all {NODE_IP}/32 scram-sha-256\n"
                  f"host all all {POD_CIDR} scram-sha-256\n")
    _run_postgres(state_dir, port)
    env = {**os.environ, "PGPASSWORD": password}
    subprocess.run([pg_bin("createdb"), "-h", NODE_IP, "-p", str(port), "-U", "salon",
                    "salon"], check=True, env=env, capture_output=True)
    info.postgres_dsn = f"postgresql://salon:{password}@{NODE_IP}:{port}/salon"


def _run_postgres(state_dir: Path, port: int) -> None:
    """Start the postmaster on the data directory of `start_postgres` and wait for it."""
    proc = spawn(state_dir, "postgres", [
        pg_bin("postgres"), "-D", str(state_dir / "postgres" / "data"), "-p", str(port),
        "-c", f"listen_addresses={NODE_IP}", "-c", "unix_socket_directories=",
        "-c", "fsync=off", "-c", "max_connections=600",
    ], user="postgres" if os.geteuid() == 0 else None)
    wait_until("PostgreSQL", lambda: subprocess.run(
        [pg_bin("pg_isready"), "-h", NODE_IP, "-p", str(port)], capture_output=True
    ).returncode == 0, 30, proc, state_dir / "logs" / "postgres.log")


def stop_postgres(info: StackInfo) -> None:
    """Stop PostgreSQL as an outage would (fast shutdown: clients are cut off); the data
    stays for `start_postgres_again` (tests of a database that goes away)."""
    from devstack.procs import pid_alive, pid_dir

    path = pid_dir(Path(info.state_dir)) / "postgres.pid"
    pid = int(path.read_text().strip())
    os.kill(pid, signal.SIGINT)  # the postmaster's "fast" shutdown
    wait_until("PostgreSQL to stop", lambda: not pid_alive(pid), 30)
    path.unlink(missing_ok=True)


def start_postgres_again(info: StackInfo) -> None:
    """Start PostgreSQL after `stop_postgres`, on the same port, data and password."""
    port = int(info.postgres_dsn.rsplit(":", 1)[1].split("/")[0])
    _run_postgres(Path(info.state_dir), port)


def migrate(info: StackInfo) -> None:
    """`salon-sessions migrate up` on the stack's database with its administrator's URL, as
    the Helm hook runs it before any worker starts (a worker waits for pending migrations,
    it does not apply them; the operator applies them before it creates a session role).
    For whatever starts workers itself (the benchmarks)."""
    subprocess.run([str(Path(sys.executable).parent / "salon-sessions"), "migrate", "up"],
                   env={**{k: v for k, v in os.environ.items() if not k.startswith("SALON_")},
                        "SALON_DATABASE_URL": info.postgres_dsn},
                   check=True, capture_output=True)


# --------------------------------------------------------------------------- redis

REDIS_DATA = "redis"
"""Redis' directory in the state dir: redis.conf and the append-only files."""


def redis_config(port: int, bind: str, data_dir: Path, users: Iterable[str], *,
                 appendonly: bool = True) -> str:
    """A redis.conf as the project requires its Redis (docs/HELM.md, "Redis must persist"):
    the append-only file on, fsynced every second, no RDB snapshots (the AOF is the
    durable copy). Every write Redis has answered is in the file (Redis writes its AOF
    buffer before it replies), so a Redis killed with SIGKILL and started again on the same
    directory keeps them all; an OS crash could lose the last second. `appendonly=False`
    gives the Redis the project warns about (tests of the readiness check and the gauge).
    `users` are `core.redis_acl.config_line`s: users of the file survive a restart, users
    created later with ACL SETUSER do not (the operator re-creates the session users)."""
    return (
        f"port {port}\nbind {bind}\ndir {data_dir}\nsave \"\"\n"
        f"appendonly {'yes' if appendonly else 'no'}\nappendfsync everysec\n"
        f"appenddirname appendonlydir\nprotected-mode yes\n" + "\n".join(users) + "\n"
    )


def start_redis(state_dir: Path, info: StackInfo) -> None:
    """Redis with AOF (`redis_config`) and the users of `core.redis_acl` in its
    configuration (so that a restart keeps them; the per-session users are the operator's
    to create and re-create). A new stack starts with an empty data directory."""
    from salon_sessions.core import redis_acl

    port = REDIS_PORT
    password = secrets.token_urlsafe(18)
    users = {redis_acl.OPERATOR_USER: redis_acl.operator_rules(),
             redis_acl.API_USER: redis_acl.api_rules(),
             redis_acl.ADMIN_USER: redis_acl.admin_rules()}
    passwords = {user: secrets.token_urlsafe(18) for user in users}
    data = state_dir / REDIS_DATA
    shutil.rmtree(data, ignore_errors=True)  # a new stack, new passwords: no old data
    data.mkdir()
    conf = data / "redis.conf"
    lines = [redis_acl.config_line("default", password, ["~*", "&*", "+@all"])]
    lines += [redis_acl.config_line(u, passwords[u], rules) for u, rules in users.items()]
    conf.write_text(redis_config(port, NODE_IP, data, lines))
    conf.chmod(0o600)
    info.redis_url = f"redis://:{password}@{NODE_IP}:{port}/0"
    info.redis_operator_url, info.redis_api_url, info.redis_admin_url = (
        with_credentials(info.redis_url, u, passwords[u]) for u in users)
    _run_redis(state_dir, info)


def _redis_port_password(info: StackInfo) -> tuple[int, str]:
    parts = urlsplit(info.redis_url)
    return int(parts.port or REDIS_PORT), unquote(parts.password or "")


def _run_redis(state_dir: Path, info: StackInfo) -> None:
    """Start redis-server on the configuration of `start_redis` and wait until it answers
    PING (after it has loaded its append-only file: until then it answers LOADING)."""
    port, password = _redis_port_password(info)
    proc = spawn(state_dir, "redis", ["redis-server", str(state_dir / REDIS_DATA / "redis.conf")])
    wait_until("Redis", lambda: _redis_ping(port, password), 30, proc,
               state_dir / "logs" / "redis.log")


def _redis_ping(port: int, password: str) -> bool:
    with socket.create_connection((NODE_IP, port), timeout=1) as s:
        s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        return b"PONG" in s.recv(100)


def kill_redis(info: StackInfo) -> None:
    """SIGKILL the stack's Redis, as a crash would (no shutdown, no final fsync); its
    append-only file stays for `start_redis_again`. Returns once the process is gone."""
    path = pid_dir(Path(info.state_dir)) / "redis.pid"
    pid = int(path.read_text().strip())
    with contextlib.suppress(ProcessLookupError):  # spawn() gave it its own process group
        os.killpg(pid, signal.SIGKILL)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return not pid_alive(pid)

    wait_until("Redis to die", gone, 10)
    path.unlink(missing_ok=True)


def start_redis_again(info: StackInfo) -> None:
    """Start Redis after `kill_redis` (or a stop) on the same port, configuration and data:
    it loads its append-only file, so every write it had answered is back, and the users of
    its configuration (default, operator, API, ACL admin) log in with the same URLs. Users
    created with ACL SETUSER (the session workers') are gone until the operator re-creates
    them (tests: `tests.helpers.restore_session_users`)."""
    _run_redis(Path(info.state_dir), info)


def restart_redis(info: StackInfo) -> None:
    """Stop Redis (SIGTERM: it writes and fsyncs its AOF on the way out) and start it again
    on the same port, password and data (tests of reconnects)."""
    stop_all_named(Path(info.state_dir), ["redis"])
    start_redis_again(info)


stop_all_named = stop_named


# --------------------------------------------------------------------------- kubernetes

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


APISERVER_SANS = (f"IP:{NODE_IP}", "IP:127.0.0.1", "IP:10.96.0.1", "DNS:kubernetes",
                  "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                  "DNS:kubernetes.default.svc.cluster.local")
"""Every name the apiserver is reached by: the host (NODE_IP), pods (the `kubernetes`
Service, the first address of SERVICE_CIDR, and its DNS names)."""
KUBELET_CLIENT = "kube-apiserver-kubelet-client"


def _certificate(kdir: Path, name: str, subject: str, sans: Iterable[str] = (),
                 usage: str = "clientAuth") -> None:
    """`<name>.key` and `<name>.crt` signed by the cluster CA (`ca.crt`)."""
    ext = kdir / f"{name}.ext"
    lines = [f"extendedKeyUsage={usage}", "keyUsage=digitalSignature,keyEncipherment"]
    if sans:
        lines.append(f"subjectAltName={','.join(sans)}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", str(kdir / f"{name}.key"), "-out", str(kdir / f"{name}.csr"))
    _openssl("x509", "-req", "-in", str(kdir / f"{name}.csr"), "-CA", str(kdir / "ca.crt"),
             "-CAkey", str(kdir / "ca.key"), "-CAcreateserial", "-days", "365",
             "-extfile", str(ext), "-out", str(kdir / f"{name}.crt"))
    (kdir / f"{name}.csr").unlink()
    ext.unlink()


def _make_pki(kdir: Path) -> None:
    """The cluster CA; the apiserver's serving certificate, its client certificate for the
    kubelet and the kubelet's serving certificate; the ServiceAccount signing key."""
    kdir.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", str(kdir / "sa.key"), "2048")
    _openssl("rsa", "-in", str(kdir / "sa.key"), "-pubout", "-out", str(kdir / "sa.pub"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
             "-subj", "/CN=salon-dev-ca", "-keyout", str(kdir / "ca.key"),
             "-out", str(kdir / "ca.crt"))
    _certificate(kdir, "apiserver", "/CN=kube-apiserver", APISERVER_SANS, "serverAuth")
    _certificate(kdir, "kubelet-client", f"/CN={KUBELET_CLIENT}")
    _certificate(kdir, "kubelet", f"/CN={NODE_NAME}", (f"IP:{NODE_IP}", f"DNS:{NODE_NAME}"),
                 "serverAuth")
    for f in kdir.iterdir():
        if f.is_file():
            f.chmod(0o600)
    (kdir / "ca.crt").chmod(0o644)


def _kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "salon-dev", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "salon-dev", "context": {"cluster": "salon-dev", "user": user}}],
        "current-context": "salon-dev",
    }, indent=2))
    path.chmod(0o600)


def _https_ok(url: str, ca: Path, token: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
        return bool(resp.status == 200)


CONTROL_PLANE_RBAC = [
    # the apiserver's identity towards the kubelet (logs, exec, port-forward)
    node.cluster_role_binding("salon-dev:kubelet-api-admin", "system:kubelet-api-admin",
                              {"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                               "name": KUBELET_CLIENT}),
    # kube-router's firewall: what it watches to write the NetworkPolicies' rules
    *node.cluster_role("salon-dev:kube-router", [
        {"apiGroups": [""], "verbs": ["get", "list", "watch"],
         "resources": ["namespaces", "pods", "services", "nodes", "endpoints"]},
        {"apiGroups": ["networking.k8s.io"], "verbs": ["get", "list", "watch"],
         "resources": ["networkpolicies"]},
        {"apiGroups": ["discovery.k8s.io"], "verbs": ["get", "list", "watch"],
         "resources": ["endpointslices"]}],
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-router"}),
]
"""kube-proxy needs nothing here: `system:kube-proxy` is bound to system:node-proxier by
default."""


def start_kubernetes(state_dir: Path, info: StackInfo, bin_dir: Path) -> None:
    kdir = state_dir / "kube"
    if kdir.exists():
        shutil.rmtree(kdir)
    _make_pki(kdir)
    logs = state_dir / "logs"
    ca = kdir / "ca.crt"

    # etcd
    etcd_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    proc = spawn(state_dir, "etcd", [
        str(bin_dir / "etcd"), "--name", "default", "--data-dir", str(kdir / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
        "--unsafe-no-fsync", "--log-level", "warn",
    ])
    wait_until("etcd", lambda: http_ok(f"{etcd_url}/health"), 30, proc, logs / "etcd.log")

    # kube-apiserver, with static tokens for the admin and the other components
    identities = {
        "admin": ("admin", '"system:masters"'),
        "cm": ("system:kube-controller-manager", ""),
        "sched": ("system:kube-scheduler", ""),
        "node": (f"system:node:{NODE_NAME}", '"system:nodes"'),
        "proxy": ("system:kube-proxy", ""),
        "router": ("system:kube-router", ""),
    }
    tokens = {name: secrets.token_urlsafe(24) for name in identities}
    (kdir / "tokens.csv").write_text("".join(
        f"{tokens[key]},{user},{key}" + (f",{groups}" if groups else "") + "\n"
        for key, (user, groups) in identities.items()))
    (kdir / "tokens.csv").chmod(0o600)
    server = f"https://{NODE_IP}:{APISERVER_PORT}"
    proc = spawn(state_dir, "kube-apiserver", [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
        f"--secure-port={APISERVER_PORT}",
        f"--tls-cert-file={kdir / 'apiserver.crt'}",
        f"--tls-private-key-file={kdir / 'apiserver.key'}",
        f"--client-ca-file={ca}",
        f"--kubelet-client-certificate={kdir / 'kubelet-client.crt'}",
        f"--kubelet-client-key={kdir / 'kubelet-client.key'}",
        f"--kubelet-certificate-authority={ca}",
        f"--token-auth-file={kdir / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={kdir / 'sa.pub'}",
        f"--service-account-signing-key-file={kdir / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=false", "--profiling=false", "--v=1",
    ])
    wait_until("kube-apiserver", lambda: _https_ok(f"{server}/readyz", ca, tokens["admin"]),
               90, proc, logs / "kube-apiserver.log")

    kubeconfig = state_dir / "kubeconfig"
    _kubeconfig(kubeconfig, server, ca, "admin", tokens["admin"])
    for key, (user, _groups) in identities.items():
        if key != "admin":
            _kubeconfig(kdir / f"{key}.kubeconfig", server, ca, user, tokens[key])
    info.kube_server, info.kubeconfig, info.ca_file = server, str(kubeconfig), str(ca)
    info.admin_token, info.bin_dir = tokens["admin"], str(bin_dir)
    info.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": CONTROL_PLANE_RBAC}))

    spawn(state_dir, "kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kdir / 'cm.kubeconfig'}",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={kdir / 'sa.key'}",
        f"--root-ca-file={ca}", "--controllers=*,-cloud-node-lifecycle",
        "--allocate-node-cidrs=true", f"--cluster-cidr={POD_CIDR}", "--node-cidr-mask-size=24",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--v=1",
    ])
    spawn(state_dir, "kube-scheduler", [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kdir / 'sched.kubeconfig'}",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1",
    ])


def start_node(state_dir: Path, info: StackInfo, bin_dir: Path) -> None:
    """containerd with the images imported, then the kubelet, kube-proxy, kube-router and
    CoreDNS (`devstack.node`); returns once the node is Ready and CoreDNS answers."""
    kdir = state_dir / "kube"
    built = images.ensure_images(bin_dir)
    node.start_containerd(state_dir, built.pause.tag)
    images.import_images(node.CONTAINERD_SOCKET, built.for_node())
    info.worker_image = built.project.tag
    creds = node.NodeCredentials(
        ca=kdir / "ca.crt", kubelet_kubeconfig=kdir / "node.kubeconfig",
        kubelet_cert=kdir / "kubelet.crt", kubelet_key=kdir / "kubelet.key",
        kube_proxy_kubeconfig=kdir / "proxy.kubeconfig",
        kube_router_kubeconfig=kdir / "router.kubeconfig")

    def node_ready() -> bool:
        out = info.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        got = json.loads(out.stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in got["status"].get("conditions", []))
        return ready and not got["spec"].get("taints")

    node.start_node(state_dir, bin_dir, creds, node_ready)
    info.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": node.coredns_manifests(built.coredns.tag)}))
    out = info.kubectl("rollout", "status", "deployment/coredns", "-n", "kube-system",
                       "--timeout=90s", check=False)
    if out.returncode != 0:
        raise StartError(f"CoreDNS did not become ready: {out.stderr or out.stdout}; see "
                         f"{state_dir / 'logs' / 'kubelet.log'}")


def backing_services(info: StackInfo, namespace: str) -> None:
    """In-cluster names for the stack's PostgreSQL and Redis in `namespace`: selector-less
    Services `postgresql` (5432) and `redis` (6379) with an EndpointSlice each to NODE_IP."""
    items: list[dict[str, object]] = []
    for name, port in (("postgresql", POSTGRES_PORT), ("redis", REDIS_PORT)):
        ports = [{"name": name, "port": port, "protocol": "TCP"}]
        items.append({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": name, "namespace": namespace},
                      "spec": {"ports": [{**ports[0], "targetPort": port}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": f"{name}-stack", "namespace": namespace,
                                   "labels": {"kubernetes.io/service-name": name,
                                              "endpointslice.kubernetes.io/managed-by":
                                                  "devstack"}},
                      "addressType": "IPv4", "ports": ports,
                      "endpoints": [{"addresses": [NODE_IP],
                                     "conditions": {"ready": True}}]})
    info.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": items}))


# --------------------------------------------------------------------------- operator

def start_operator(state_dir: Path, info: StackInfo, namespace: str = "default",
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Run `salon-sessions operator` for `namespace` (pid file `operator`, log
    logs/operator.log) with its own Redis user and the ACL admin's (it writes each session
    worker's credentials Secret itself). `env` adds or overrides SALON_* settings
    (docs/OPERATOR.md)."""
    port = free_port()
    proc_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "KUBECONFIG": info.kubeconfig,
        "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_operator_url,
        "SALON_REDIS_ADMIN_URL": info.redis_admin_url,
        "SALON_CREDENTIALS_KEY": info.credentials_key,
        "SALON_NAMESPACE": namespace, "SALON_IDENTITY": "devstack-operator",
        "SALON_METRICS_PORT": str(port), "SALON_HTTP_HOST": "127.0.0.1",
        # the workers run from the project image imported into the node (no registry); a
        # stack without its node (the kwok benchmark) has none and keeps the default
        **({"SALON_WORKER_IMAGE": info.worker_image, "SALON_WORKER_IMAGE_PULL_POLICY": "Never"}
           if info.worker_image else {}),
        **(env or {}),
    }
    proc = spawn(state_dir, "operator", [str(Path(sys.executable).parent / "salon-sessions"),
                                         "operator"], env=proc_env, cwd=REPO)
    wait_until("operator", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, proc,
        state_dir / "logs" / "operator.log")
    return proc



# --------------------------------------------------------------------------- whole stack

def _running_elsewhere(state_dir: Path) -> Path | None:
    """The state directory of another stack running on this machine, if any."""
    if not RUNNING.exists():
        return None
    other = Path(RUNNING.read_text().strip())
    if other == state_dir or not other.is_dir():
        return None
    alive = any(pid_alive(int(f.read_text().strip() or 0))
                for f in pid_dir(other).glob("*.pid") if f.read_text().strip().isdigit())
    if alive:
        return other
    stop(other)  # a stack that died: its host changes are undone before ours begin
    return None


def start(state_dir: Path, components: Iterable[str] = ALL_COMPONENTS,
          bin_dir: Path | None = None) -> StackInfo:
    state_dir = state_dir.resolve()
    other = _running_elsewhere(state_dir)
    if other is not None:
        raise StartError(f"a local stack already runs on this machine (state dir {other}); "
                         f"one per machine (its node changes the host's network): stop it "
                         f"with `python -m devstack down --state-dir {other}`")
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    stop(state_dir)
    RUNNING.parent.mkdir(parents=True, exist_ok=True)
    RUNNING.write_text(f"{state_dir}\n")
    info = StackInfo(state_dir=str(state_dir), components=list(components))
    try:
        node.record_host(state_dir)
        node.add_node_ip()
        if "postgres" in info.components:
            start_postgres(state_dir, info)
        if "redis" in info.components:
            start_redis(state_dir, info)
        if "kubernetes" in info.components:
            bin_dir = bin_dir or k8s_bin_dir()
            start_kubernetes(state_dir, info, bin_dir)
            if "node" in info.components:
                start_node(state_dir, info, bin_dir)
    except BaseException:
        stop(state_dir)
        raise
    info.save()
    return info


def stop(state_dir: Path) -> list[str]:
    """Stop everything of this state directory by pid (the workloads and the node first)
    and put the host back as the node found it."""
    state_dir = state_dir.resolve()
    owner = Path(RUNNING.read_text().strip()) if RUNNING.exists() else None
    # the host is this state dir's to restore only if its node ran and no other owns it now
    ran_node = node.recorded(state_dir) and owner in (None, state_dir)
    stopped = stop_named(state_dir, ("operator", "api"))
    if ran_node:
        stopped += node.stop_node(state_dir)
    stopped += stop_all(state_dir, STOP_ORDER)
    if ran_node:
        node.restore_host(state_dir)
    if owner == state_dir:
        RUNNING.unlink()
        with contextlib.suppress(OSError):
            RUNNING.parent.rmdir()
    return stopped
