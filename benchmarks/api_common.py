"""Shared parts of the API benchmarks: a local PostgreSQL + Redis (devstack), an API
process, percentiles and /proc readings."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import VENV_BIN, cpu_seconds, pct, rss_mib
from devstack import stack
from devstack.procs import StartError, free_port, http_ok, stop_process, wait_until

__all__ = ["VENV_BIN", "Api", "cpu_seconds", "local_stack", "pct", "rss_mib", "start_api"]

@contextmanager
def local_stack(state_dir: str | None) -> Iterator[stack.StackInfo]:
    """A running stack (--state-dir), or PostgreSQL + Redis started here and stopped after."""
    if state_dir:
        info = stack.StackInfo.load(Path(state_dir))
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        yield info
        return
    path = Path(f"/tmp/salon-bench-{os.getpid()}")
    info = stack.start(path, components=("postgres", "redis"))
    try:
        stack.migrate(info)
        yield info
    finally:
        stack.stop(path)


@dataclass
class Api:
    base_url: str
    admin_token: str
    token_secret: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def start_api(info: stack.StackInfo, log: Path, **env: str) -> Api:
    port = free_port()
    admin, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "SALON_DATABASE_URL": info.postgres_dsn, "SALON_REDIS_URL": info.redis_url,
            "SALON_HOST": "127.0.0.1", "SALON_PORT": str(port), "SALON_ADMIN_TOKEN": admin,
            "SALON_TOKEN_SECRET": secret, "SALON_LOG_LEVEL": "WARNING", **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(VENV_BIN / "salon-sessions"), "api"], env=full,
                                stdout=out, stderr=subprocess.STDOUT)
    api = Api(f"http://127.0.0.1:{port}", admin, secret, proc)
    try:
        wait_until("the API", lambda: http_ok(f"{api.base_url}/healthz"), 30, proc, log)
    except StartError:
        api.stop()
        raise
    return api
