"""End to end, with the operator: the API creates the SalonSession, the operator runs its
worker pod (a container on the stack's real node), the page in Chromium shows the worker's QR, the
simulated phone scans it and the page reaches "done"; then the API deletes the session.

Runs once the operator exists (`salon_sessions.operator.main`), with the operator tests'
fixture (their RBAC, Secrets and fast timings)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

if importlib.util.find_spec("salon_sessions.operator.main") is None:
    pytest.skip("the operator (salon_sessions.operator.main) is not built yet",
                allow_module_level=True)

from playwright.async_api import async_playwright

from devstack.stack import StackInfo
from tests.api.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEVICES,
    Shots,
    done_only_after_connected,
    trace,
    wait_step,
    wait_trace,
)
from tests.api.server import ApiServer, start_api
from tests.api.zbar import decode
from tests.helpers import eventually
from tests.operator.conftest import (  # noqa: F401 - the fixtures
    OperatorEnv,
    operator_env,
    salon_crd,
)
from tests.worker.harness import new_company, observing

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
async def e2e_api(operator_env: OperatorEnv, stack: StackInfo,  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[ApiServer]:
    server = await asyncio.to_thread(
        start_api, tmp_path, database=operator_env.database, redis_url=stack.redis_url,
        kubeconfig=stack.kubeconfig, namespace=operator_env.namespace,
        env={"SALON_DEFAULT_DRIVER": "simulator"})
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_onboarding_through_the_operator(operator_env: OperatorEnv,  # noqa: F811
                                               e2e_api: ApiServer, redis_url: str) -> None:
    env, api = operator_env, e2e_api
    shots = Shots("e2e-operator")
    await asyncio.to_thread(env.wait_role, env.start_operator(), "leader")
    company = new_company()
    name = company.replace("_", "-")
    async with api.client(headers=api.admin()) as http:
        created = await http.post("/v1/sessions",
                                  json={"company_id": company.removeprefix("company_")})
        assert created.status_code == 201, created.text
        link = (await http.post(f"/v1/sessions/{company}/tokens")).json()["onboarding_url"]

    async with observing(redis_url, company) as obs, async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(shots.dir / "profile"), executable_path=CHROMIUM, headless=True,
            # a desktop: its page leads with the QR the phone scans (a phone leads with the code)
            args=CHROMIUM_ARGS, **DEVICES["desktop"])
        try:
            page = await context.new_page()
            await page.goto(link)
            await wait_trace(page, "qr:shown", timeout_s=120)  # pod scheduled and started
            await shots.take(page, "qr")
            for attempt in range(10):
                path = shots.dir / f"qr-{attempt}.png"
                await page.locator("#qr").screenshot(path=str(path))
                [payload] = decode(path)
                await obs.wait_published_qr(payload)
                await obs.act({"action": "scan", "qr": payload, "phone": "79686484488"})
                try:
                    await obs.wait_event("linked", timeout=3)
                    break
                except AssertionError:
                    continue
            await wait_step(page, "done", timeout_s=60)
            await shots.take(page, "done")
            assert done_only_after_connected(await trace(page))
        finally:
            await context.close()

    env.wait_status(name, "connected through the operator", timeout=60, connected=True)
    async with api.client(headers=api.admin()) as http:
        status = (await http.get(f"/v1/sessions/{company}")).json()
        assert status["status"]["connected"] is True
        assert status["connected"] is True
        assert (await http.delete(f"/v1/sessions/{company}")).status_code == 204
    await asyncio.to_thread(eventually, lambda: not env.exists("salonsession", name), 60,
                            "the SalonSession deleted")
