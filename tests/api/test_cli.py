"""`salon-sessions qr <company>` and `salon-sessions api` as commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.api.conftest import WorkerFactory
from tests.api.zbar import decode, terminal_to_png
from tests.worker.harness import VENV_BIN, new_company, observing

pytestmark = pytest.mark.slow
SLOW_QR = {"SALON_SIMULATOR_FIRST_QR_S": "30", "SALON_SIMULATOR_QR_PERIOD_S": "30"}


def _run(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "salon-sessions"), *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"], **env})


async def test_terminal_qr_scans_to_the_published_payload(
        workers: WorkerFactory, redis_url: str, company: str, tmp_path: Path) -> None:
    env = {"SALON_REDIS_URL": redis_url}
    none = await asyncio.to_thread(_run, "qr", company, env=env)
    assert none.returncode == 4
    assert "no QR" in none.stderr
    async with observing(redis_url, company) as obs:
        workers(env=SLOW_QR)
        published = (await obs.wait_event("qr"))["data"]["code"]
        shown = await asyncio.to_thread(_run, "qr", company.removeprefix("company_"), env=env)
        assert shown.returncode == 0, shown.stderr
        assert "Linked devices" in shown.stderr
        assert published not in shown.stdout + shown.stderr  # drawn, never printed as text
        assert decode(terminal_to_png(shown.stdout, tmp_path / "terminal.png")) == [published]

        await obs.act({"action": "scan", "qr": published, "phone": "79686484488"})
        await obs.wait_state(lambda s: s["connected"] == "true")
        linked = await asyncio.to_thread(_run, "qr", company, env=env)
        assert linked.returncode == 3
        assert "already linked" in linked.stderr
        watched = await asyncio.to_thread(_run, "qr", company, "--watch", "--timeout", "10",
                                          env=env)
        assert watched.returncode == 0  # connected already: nothing to wait for


def test_qr_command_input_errors(redis_url: str) -> None:
    bad = _run("qr", "0123", env={"SALON_REDIS_URL": redis_url})
    assert bad.returncode == 2
    assert "leading zeros" in bad.stderr
    assert _run("qr", new_company(), env={}).returncode == 2


def test_api_command_refuses_to_start_without_its_secrets(redis_url: str,
                                                          postgres_dsn: str) -> None:
    env = {"SALON_REDIS_URL": redis_url, "SALON_DATABASE_URL": postgres_dsn}
    out = _run("api", env=env)
    assert out.returncode == 2
    assert "SALON_ADMIN_TOKEN and SALON_TOKEN_SECRET must be set" in out.stderr
    short = _run("api", env=env | {"SALON_ADMIN_TOKEN": "a" * 20, "SALON_TOKEN_SECRET": "x"})
    assert short.returncode == 2
    assert "at least 32 characters" in short.stderr
