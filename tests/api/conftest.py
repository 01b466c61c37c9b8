"""Fixtures of the API tests: the CRD, one API process, namespace and database per module,
and session workers started directly (the operator is not needed for these)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from devstack.stack import StackInfo
from salon_sessions.core import resource
from tests.api.browser import CHROMIUM, CHROMIUM_ARGS
from tests.api.server import ApiServer, start_api
from tests.conftest import fresh_database
from tests.crd.crd_files import CRD_FILE
from tests.helpers import session_redis_user
from tests.worker.harness import WorkerProc, new_company

WorkerFactory = Callable[..., WorkerProc]


@pytest.fixture(scope="session")
def crd(stack: StackInfo) -> StackInfo:
    stack.kubectl("apply", "-f", str(CRD_FILE))
    stack.kubectl("wait", "--for=condition=Established", f"crd/{resource.CRD_NAME}",
                  "--timeout=60s")
    return stack


@pytest.fixture(scope="module")
def api_namespace(crd: StackInfo) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:8]}"
    crd.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api_database(stack: StackInfo) -> Iterator[str]:
    with fresh_database(stack, prefix="api") as dsn:
        yield dsn


API_ENV = {
    "SALON_WS_HEARTBEAT_S": "1",
    "SALON_PAIRING_CODES_PER_MINUTE": "30",
    "SALON_PONG_TIMEOUT_S": "2",
    "SALON_CONTROL_TIMEOUT_S": "5",
}


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        stack: StackInfo, crd: StackInfo, api_namespace: str,
        api_database: str) -> Iterator[ApiServer]:
    """One API process per test module; a module may set `API_EXTRA_ENV`."""
    tmp = tmp_path_factory.mktemp("api")
    env = API_ENV | getattr(request.module, "API_EXTRA_ENV", {})
    server = start_api(tmp, database=api_database, redis_url=stack.redis_api_url,
                       kubeconfig=stack.kubeconfig, namespace=api_namespace, env=env)
    try:
        yield server
    finally:
        server.stop()
        keep = Path(__file__).resolve().parents[2] / "test-artifacts" / "api-logs"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / server.log_path.name).write_text(server.log())


@pytest.fixture
def company() -> str:
    return new_company()


@pytest.fixture
async def workers(tmp_path: Path, api_database: str, redis_url: str,
                  company: str) -> AsyncIterator[WorkerFactory]:
    """Start session workers (simulator driver, fast timings) for this test's company, each
    with its company's own Redis user (the API runs with the API's)."""
    started: list[WorkerProc] = []
    with contextlib.ExitStack() as users:

        def start(name: str = "w0", company_id: str | None = None,
                  **kwargs: object) -> WorkerProc:
            target = company_id or company
            user = users.enter_context(session_redis_user(redis_url, target, f"api-{name}"))
            w = WorkerProc(tmp_path, api_database, user.url, target, name=name,
                           **kwargs)  # type: ignore[arg-type]
            started.append(w.start())
            return w

        yield start
        for w in started:
            await w.stop()


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium per module; each page gets a context of its own (device, language)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
