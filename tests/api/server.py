"""Run a real `salon-sessions api` process against the test stack, and talk to it."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack.procs import StartError, free_port, http_ok, stop_process, wait_until
from salon_sessions.api.auth import TokenSigner
from tests.worker.harness import VENV_BIN

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class ApiServer:
    base_url: str
    admin_token: str
    token_secret: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    secrets_seen: set[str] = field(default_factory=set)
    """Tokens, QR payloads and pairing codes handed out; none may appear in the log."""

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def token(self, company: str, ttl_s: int = 3600) -> str:
        token, _ = TokenSigner(self.token_secret.encode()).issue(company, ttl_s)
        self.secrets_seen.add(token)
        return token

    def bearer(self, company: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(company)}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def start_api(tmp: Path, *, database: str, redis_url: str, kubeconfig: str | None,
              namespace: str, env: dict[str, str] | None = None) -> ApiServer:
    port = free_port()
    admin = secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(32)
    log_path = tmp / f"api-{port}.log"
    full_env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp),
        "SALON_DATABASE_URL": database, "SALON_REDIS_URL": redis_url,
        "SALON_NAMESPACE": namespace, "SALON_HOST": "127.0.0.1", "SALON_PORT": str(port),
        "SALON_ADMIN_TOKEN": admin, "SALON_TOKEN_SECRET": secret,
        "SALON_LOG_LEVEL": "DEBUG", **(env or {}),
    }
    if kubeconfig:
        full_env["SALON_KUBECONFIG"] = kubeconfig
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(VENV_BIN / "salon-sessions"), "api"], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    server = ApiServer(f"http://127.0.0.1:{port}", admin, secret, log_path, proc)
    try:
        wait_until("the API", lambda: http_ok(f"{server.base_url}/healthz"), 30, proc, log_path)
    except StartError:
        server.stop()
        raise
    return server
