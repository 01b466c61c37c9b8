"""The Helm chart installed into the local stack's node, as a platform team installs it.

Default values, plus only what a user must supply anyway: the image (the locally built
project image, never pulled), the Secrets the chart references (created here before the
install, with the in-cluster names of PostgreSQL and Redis: the Services `postgresql` and
`redis` of the namespace), and whatever the caller adds (`api.defaultDriver=simulator` for
the demo: there is no WhatsApp network here). Used by `python -m devstack up` and the
chart tests.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devstack.stack import REPO, StackInfo

CHART = REPO / "charts" / "salon-sessions"
RELEASE = "salon-sessions"
POSTGRES_SERVICE = "postgresql"
REDIS_SERVICE = "redis"
"""The Services `stack.backing_services` makes in a namespace."""
DATABASE_SECRET = "salon-sessions-database"
REDIS_SECRET = "salon-sessions-redis"
REDIS_API_SECRET = "salon-sessions-redis-api"
OPERATOR_SECRET = "salon-sessions-operator-credentials"
API_SECRET = "salon-sessions-api"


@dataclass(frozen=True)
class Credentials:
    """What the chart's Secrets hold, as the pods see it (in-cluster host names)."""

    database_url: str
    admin_token: str
    token_secret: str


def in_cluster(url: str, host: str) -> str:
    """`url` with its host replaced by `host` (a Service name), credentials, port and path
    kept: the pods reach PostgreSQL and Redis through the namespace's Services."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host}" if userinfo else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def image_values(image: str, pull_policy: str = "Never") -> dict[str, Any]:
    """The `image` values of a local image reference (`localhost/salon-sessions:<tag>`):
    imported into containerd, there is no registry to pull it from."""
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"not an image reference with a tag: {image}")
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": pull_policy}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Values merged as Helm merges `-f` files: maps key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def run_helm(helm_bin: str, *args: str, kubeconfig: str | None = None,
             namespace: str | None = None, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run helm; with `check`, a failure raises with helm's output."""
    cmd = [helm_bin, *args]
    if kubeconfig:
        cmd += ["--kubeconfig", kubeconfig]
    if namespace:
        cmd += ["-n", namespace]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n"
                           f"{out.stdout}\n{out.stderr}")
    return out


def helm(info: StackInfo, *args: str, namespace: str | None = None, check: bool = True,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """helm with the stack's kubeconfig."""
    return run_helm(str(Path(info.bin_dir) / "helm"), *args, kubeconfig=info.kubeconfig,
                    namespace=namespace, check=check, timeout=timeout)


def apply(info: StackInfo, *objects: dict[str, Any]) -> None:
    info.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def create_namespace(info: StackInfo, namespace: str) -> None:
    apply(info, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # pods are refused until the ServiceAccount controller has made `default`
    info.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace,
                 "--timeout=60s", check=False)


def create_secrets(info: StackInfo, namespace: str, database_url: str) -> Credentials:
    """The Secrets of the chart's default values, pointing at the namespace's Services;
    `database_url` is the host's URL of the release's database."""
    creds = Credentials(database_url=in_cluster(database_url, POSTGRES_SERVICE),
                        admin_token=secrets.token_urlsafe(24),
                        token_secret=secrets.token_urlsafe(32))
    data = {
        DATABASE_SECRET: {"url": creds.database_url},
        REDIS_SECRET: {"url": in_cluster(info.redis_operator_url, REDIS_SERVICE)},
        REDIS_API_SECRET: {"url": in_cluster(info.redis_api_url, REDIS_SERVICE)},
        OPERATOR_SECRET: {"redis-admin-url": in_cluster(info.redis_admin_url, REDIS_SERVICE),
                          "credentials-key": info.credentials_key},
        API_SECRET: {"admin-token": creds.admin_token, "token-secret": creds.token_secret},
    }
    apply(info, *({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": name, "namespace": namespace}, "stringData": values}
                  for name, values in data.items()))
    return creds


def install(info: StackInfo, namespace: str, values: dict[str, Any], *,
            release: str = RELEASE, upgrade: bool = False,
            timeout: str = "5m") -> subprocess.CompletedProcess[str]:
    """`helm install` (or `upgrade`) with `values` in a file, waiting for the Deployments
    to be ready; the pre-install hook migrates the database first."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="salon-values-") as f:
        json.dump(values, f)  # JSON is YAML
        f.flush()
        return helm(info, "upgrade" if upgrade else "install", release, str(CHART),
                    "-f", f.name, "--wait", "--timeout", timeout, namespace=namespace)


def node_port(info: StackInfo, namespace: str, service: str) -> int:
    out = info.kubectl("get", "service", service, "-n", namespace, "-o", "json")
    return int(json.loads(out.stdout)["spec"]["ports"][0]["nodePort"])
