"""The local stack: PostgreSQL, Redis, etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the node agent, on loopback and free ports, in one state directory.

`start()` brings it all up and writes `state.json` (URLs, ports, paths) and a kubeconfig;
`stop()` stops everything by pid. Used by `python -m devstack` and by the pytest fixtures.
"""

from __future__ import annotations

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

from devstack.procs import StartError, free_port, http_ok, spawn, stop_all, wait_until
from salon_sessions.core.urls import with_credentials

REPO = Path(__file__).resolve().parent.parent
NODE_NAME = "salon-dev-node"
PG_BIN = Path("/usr/lib/postgresql")
STOP_ORDER = (
    "nodeagent", "operator", "api", "kube-scheduler", "kube-controller-manager",
    "kube-apiserver", "etcd", "redis", "postgres",
)
ALL_COMPONENTS = ("postgres", "redis", "kubernetes")


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


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- postgres

def start_postgres(state_dir: Path, info: StackInfo) -> None:
    data = state_dir / "postgres"
    port = free_port()
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
    _run_postgres(state_dir, port)
    env = {**os.environ, "PGPASSWORD": password}
    subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "salon",
                    "salon"], check=True, env=env, capture_output=True)
    info.postgres_dsn = f"postgresql://salon:{password}@127.0.0.1:{port}/salon"


def _run_postgres(state_dir: Path, port: int) -> None:
    """Start the postmaster on the data directory of `start_postgres` and wait for it."""
    proc = spawn(state_dir, "postgres", [
        pg_bin("postgres"), "-D", str(state_dir / "postgres" / "data"), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
        "-c", "fsync=off", "-c", "max_connections=600",
    ], user="postgres" if os.geteuid() == 0 else None)
    wait_until("PostgreSQL", lambda: subprocess.run(
        [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
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


# --------------------------------------------------------------------------- redis

def start_redis(state_dir: Path, info: StackInfo) -> None:
    """Redis with the users of `core.redis_acl` in its configuration (so that a restart
    keeps them; the per-session users are the operator's to create and re-create)."""
    from salon_sessions.core import redis_acl

    port = free_port()
    password = secrets.token_urlsafe(18)
    users = {redis_acl.OPERATOR_USER: redis_acl.operator_rules(),
             redis_acl.API_USER: redis_acl.api_rules(),
             redis_acl.ADMIN_USER: redis_acl.admin_rules()}
    passwords = {user: secrets.token_urlsafe(18) for user in users}
    (state_dir / "redis").mkdir(exist_ok=True)
    conf = state_dir / "redis" / "redis.conf"
    lines = [redis_acl.config_line("default", password, ["~*", "&*", "+@all"])]
    lines += [redis_acl.config_line(u, passwords[u], rules) for u, rules in users.items()]
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {state_dir / 'redis'}\nsave \"\"\n"
        f"appendonly no\nprotected-mode yes\n" + "\n".join(lines) + "\n"
    )
    conf.chmod(0o600)
    proc = spawn(state_dir, "redis", ["redis-server", str(conf)])
    wait_until("Redis", lambda: _redis_ping(port, password), 20, proc,
               state_dir / "logs" / "redis.log")
    info.redis_url = f"redis://:{password}@127.0.0.1:{port}/0"
    info.redis_operator_url, info.redis_api_url, info.redis_admin_url = (
        with_credentials(info.redis_url, u, passwords[u]) for u in users)


def _redis_ping(port: int, password: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        return b"PONG" in s.recv(100)


def restart_redis(info: StackInfo) -> None:
    """Stop and start Redis again on the same port and password (tests of reconnects)."""
    state_dir = Path(info.state_dir)
    stop_all_named(state_dir, ["redis"])
    conf = state_dir / "redis" / "redis.conf"
    port = int(info.redis_url.rsplit(":", 1)[1].split("/")[0])
    password = info.redis_url.split(":", 2)[2].split("@")[0]
    proc = spawn(state_dir, "redis", ["redis-server", str(conf)])
    wait_until("Redis", lambda: _redis_ping(port, password), 20, proc,
               state_dir / "logs" / "redis.log")


def stop_all_named(state_dir: Path, names: Iterable[str]) -> None:
    from devstack.procs import pid_alive, pid_dir, stop_pid

    for name in names:
        path = pid_dir(state_dir) / f"{name}.pid"
        if path.exists():
            pid = int(path.read_text().strip())
            if pid_alive(pid):
                stop_pid(pid)
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- kubernetes

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_pki(kdir: Path) -> None:
    kdir.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", str(kdir / "sa.key"), "2048")
    _openssl("rsa", "-in", str(kdir / "sa.key"), "-pubout", "-out", str(kdir / "sa.pub"))
    # The node agent's serving certificate (kube-apiserver -> node for `kubectl logs`).
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
             "-subj", f"/CN={NODE_NAME}", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(kdir / "node.key"), "-out", str(kdir / "node.crt"))
    for f in kdir.iterdir():
        f.chmod(0o600)


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


def start_kubernetes(state_dir: Path, info: StackInfo, bin_dir: Path) -> None:
    kdir = state_dir / "kube"
    if kdir.exists():
        shutil.rmtree(kdir)
    _make_pki(kdir)
    logs = state_dir / "logs"

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

    # kube-apiserver, with static tokens for the admin and the control-plane identities
    tokens = {name: secrets.token_urlsafe(24) for name in ("admin", "cm", "sched", "node")}
    (kdir / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin,"system:masters"\n'
        f'{tokens["cm"]},system:kube-controller-manager,kcm\n'
        f'{tokens["sched"]},system:kube-scheduler,ksched\n'
        f'{tokens["node"]},system:node:{NODE_NAME},node,"system:nodes"\n'
    )
    (kdir / "tokens.csv").chmod(0o600)
    api_port = free_port()
    server = f"https://127.0.0.1:{api_port}"
    certs = kdir / "apiserver-certs"
    proc = spawn(state_dir, "kube-apiserver", [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={api_port}", f"--cert-dir={certs}",
        f"--token-auth-file={kdir / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={kdir / 'sa.pub'}",
        f"--service-account-signing-key-file={kdir / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=false", "--profiling=false", "--v=1",
    ])
    ca = certs / "apiserver.crt"
    wait_until("kube-apiserver", lambda: ca.exists() and _https_ok(
        f"{server}/readyz", ca, tokens["admin"]), 90, proc, logs / "kube-apiserver.log")

    kubeconfig = state_dir / "kubeconfig"
    _kubeconfig(kubeconfig, server, ca, "admin", tokens["admin"])
    _kubeconfig(kdir / "cm.kubeconfig", server, ca, "system:kube-controller-manager", tokens["cm"])
    _kubeconfig(kdir / "sched.kubeconfig", server, ca, "system:kube-scheduler", tokens["sched"])
    _kubeconfig(kdir / "node.kubeconfig", server, ca, f"system:node:{NODE_NAME}", tokens["node"])
    info.kube_server, info.kubeconfig, info.ca_file = server, str(kubeconfig), str(ca)
    info.admin_token, info.bin_dir = tokens["admin"], str(bin_dir)

    spawn(state_dir, "kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kdir / 'cm.kubeconfig'}",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={kdir / 'sa.key'}",
        f"--root-ca-file={ca}", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
        "--v=1",
    ])
    spawn(state_dir, "kube-scheduler", [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kdir / 'sched.kubeconfig'}",
        "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1",
    ])
    start_nodeagent(state_dir, info)


def start_nodeagent(state_dir: Path, info: StackInfo) -> None:
    kdir = state_dir / "kube"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    proc = spawn(state_dir, "nodeagent", [
        sys.executable, "-m", "devstack.nodeagent",
        "--kubeconfig", str(kdir / "node.kubeconfig"), "--node-name", NODE_NAME,
        "--state-dir", str(state_dir / "node"),
        "--tls-cert", str(kdir / "node.crt"), "--tls-key", str(kdir / "node.key"),
    ], env=env, cwd=REPO)

    def node_ready() -> bool:
        out = info.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        node = json.loads(out.stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in node["status"].get("conditions", []))
        return ready and not node["spec"].get("taints")

    wait_until(f"node {NODE_NAME}", node_ready, 90, proc, state_dir / "logs" / "nodeagent.log")


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
        # the dev node agent shares one network namespace and reports little memory
        "SALON_WORKER_METRICS_PORT": "-1", "SALON_WORKER_MEMORY_REQUEST": "1Mi",
        "SALON_WORKER_CPU_REQUEST": "10m",
        **(env or {}),
    }
    proc = spawn(state_dir, "operator", [str(Path(sys.executable).parent / "salon-sessions"),
                                         "operator"], env=proc_env, cwd=REPO)
    wait_until("operator", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, proc,
        state_dir / "logs" / "operator.log")
    return proc


def start_api(state_dir: Path, info: StackInfo, namespace: str = "default",
              env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run `salon-sessions api` (pid file `api`, log logs/api.log) on a free port; returns
    its base URL and admin token (kept in state.json, never printed)."""
    port = free_port()
    admin = secrets.token_urlsafe(24)
    proc_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_api_url,
        "SALON_NAMESPACE": namespace, "SALON_KUBECONFIG": info.kubeconfig,
        "SALON_HOST": "127.0.0.1", "SALON_PORT": str(port),
        "SALON_ADMIN_TOKEN": admin, "SALON_TOKEN_SECRET": secrets.token_urlsafe(32),
        "SALON_DEFAULT_DRIVER": "simulator",
        **(env or {}),
    }
    proc = spawn(state_dir, "api", [str(Path(sys.executable).parent / "salon-sessions"), "api"],
                 env=proc_env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_until("onboarding API", lambda: http_ok(f"{base}/healthz"), 60, proc,
               state_dir / "logs" / "api.log")
    return base, admin


# --------------------------------------------------------------------------- whole stack

def start(state_dir: Path, components: Iterable[str] = ALL_COMPONENTS,
          bin_dir: Path | None = None) -> StackInfo:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    stop(state_dir)
    info = StackInfo(state_dir=str(state_dir), components=list(components))
    try:
        if "postgres" in info.components:
            start_postgres(state_dir, info)
        if "redis" in info.components:
            start_redis(state_dir, info)
        if "kubernetes" in info.components:
            start_kubernetes(state_dir, info, bin_dir or k8s_bin_dir())
    except BaseException:
        stop(state_dir)
        raise
    info.save()
    return info


def stop(state_dir: Path) -> list[str]:
    return stop_all(state_dir, STOP_ORDER)
