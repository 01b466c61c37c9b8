"""The admin console (`/admin`) in real Chromium (Debian's, through Playwright) against the
API process, the kube-apiserver and simulator workers. English and Russian, desktop and
320 px; screenshots in test-artifacts/admin/<test>/."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize
from redis.asyncio import Redis

from salon_sessions.core.channels import events_channel, session_state_key
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ErrorData, EventSource
from salon_sessions.core.resource import Phase
from tests.api.browser import Shots
from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.api.test_admin import create
from tests.worker.harness import new_company, observing

pytestmark = pytest.mark.slow
ADMIN_SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 320, "height": 640}


def admin_shots(name: str) -> Shots:
    """Numbered screenshots in test-artifacts/admin/<test>/."""
    return Shots(name, root=ADMIN_SHOTS)


async def open_console(chromium: Browser, api: ApiServer, *, viewport: ViewportSize = DESKTOP,
                       lang: str = "en") -> Page:
    context = await chromium.new_context(viewport=viewport,
                                         locale="en-US" if lang == "en" else "ru-RU")
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=api.base_url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    setattr(page, "_errors", errors)  # noqa: B010 - checked by close_console
    await page.goto(f"{api.base_url}/admin?lang={lang}")
    return page


async def close_console(page: Page) -> None:
    errors: list[str] = getattr(page, "_errors", [])
    await page.context.close()
    assert not errors, f"JavaScript errors on the console: {errors}"


async def until(page: Page, expression: str, timeout_s: float = 30) -> None:
    """Poll a JavaScript expression until it is true (the page's CSP forbids eval, which
    `wait_for_function` with a string needs)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await page.evaluate(expression):
                await asyncio.sleep(0.05)
    except TimeoutError:
        seen = await page.evaluate("window.__admin && window.__admin.trace.slice(-30)")
        raise AssertionError(f"timed out waiting for {expression}; trace: {seen}") from None


def row(company: str, cls: str) -> str:
    """The text of one cell of a company's row, in JavaScript."""
    return (f"(document.querySelector('tr[data-company=\"{company}\"] td.{cls}') || "
            f"{{textContent: null}}).textContent")


async def sign_in(page: Page, token: str) -> None:
    await until(page, "document.getElementById('admin').dataset.view === 'login'")
    await page.fill("#token", token)
    await page.click("#login")


async def search(page: Page, text: str) -> None:
    await page.fill("#search", text)


async def test_token_form_company_token_refused_and_kept_in_session(
        chromium: Browser, api: ApiServer) -> None:
    shots = admin_shots("token")
    company = new_company()
    page = await open_console(chromium, api)
    try:
        await until(page, "document.getElementById('admin').dataset.view === 'login'")
        assert await page.is_visible("#token")
        await shots.take(page, "token-form")
        # a salon's onboarding token does not open the console
        await sign_in(page, api.token(company))
        await until(page, "!document.getElementById('login-error').hidden")
        assert "not the admin token" in await page.inner_text("#login-error")
        await shots.take(page, "company-token-refused")
        await sign_in(page, "wrong")
        await until(page, "document.getElementById('login-error').textContent"
                          ".includes('not valid')")
        assert await page.evaluate("sessionStorage.getItem('salon.admin.token')") is None

        await sign_in(page, api.admin_token)
        await until(page, "document.getElementById('admin').dataset.conn === 'live'")
        assert await page.evaluate("sessionStorage.getItem('salon.admin.token')") == \
            api.admin_token
        assert api.admin_token not in page.url
        # a reload keeps the tab's token: straight to the console
        await page.reload()
        await until(page, "document.getElementById('admin').dataset.conn === 'live'")
        assert await page.evaluate("window.__admin.trace.includes('view:login')") is False
        await page.click("#signout")
        await until(page, "document.getElementById('admin').dataset.view === 'login'")
        assert await page.evaluate("sessionStorage.getItem('salon.admin.token')") is None
    finally:
        await close_console(page)
    assert api.admin_token not in api.log()


async def test_live_changes_and_confirmed_actions(chromium: Browser, api: ApiServer,
                                                  workers: WorkerFactory, redis_url: str,
                                                  company: str) -> None:
    shots = admin_shots("live-and-actions")
    async with api.client(headers=api.admin()) as http:
        await create(http, company, "Salon Aurora")
        doomed = new_company()
        await create(http, doomed, "Salon Closing")
    page = await open_console(chromium, api)
    try:
        await sign_in(page, api.admin_token)
        await until(page, f"{row(company, 'company')} !== null")
        await search(page, "salon ")
        assert await page.evaluate(row(company, "phase-col")) == "Pending"
        await shots.take(page, "pending")

        async with observing(redis_url, company) as obs:
            workers()
            # the worker's state shows up without a reload
            await until(page, f"{row(company, 'phase-col')} === 'AwaitingLink'")
            await obs.scan(phone="79686484488")
            await until(page, f"{row(company, 'phase-col')} === 'Connected'")
            assert await page.evaluate(row(company, "phone")) == "•••••••4488"
            assert await page.evaluate(row(company, "connected")) == "yes"
            assert await page.evaluate(
                "window.__admin.trace.filter(e => e === 'snapshot').length") == 1
            await shots.take(page, "connected-live")

            # restart: asks first; cancelling does nothing
            restart = f"tr[data-company='{company}'] button[data-action='restart']"
            await page.click(restart)
            await until(page, "document.getElementById('confirm').open")
            assert "Restart Salon Aurora" in await page.inner_text("#confirm-title")
            await shots.take(page, "restart-confirm")
            await page.click("#confirm-cancel")
            assert not await page.evaluate("document.getElementById('confirm').open")
            assert not await page.evaluate(
                "window.__admin.trace.some(e => e.startsWith('action:'))")
            connects = len(obs.of("connected"))
            await page.click(restart)
            await page.click("#confirm-ok")
            await until(page, f"window.__admin.trace.includes('action:restart:{company}:200')")
            await obs.wait_event("connected", count=connects + 1)

            # an onboarding link, copied
            await page.click(f"tr[data-company='{company}'] button[data-action='link']")
            await until(page, "document.getElementById('confirm').open")
            await page.click("#confirm-ok")
            await until(page, "!document.getElementById('link-box').hidden")
            url = await page.input_value("#link-url")
            assert url.startswith(f"{api.base_url}/onboarding/{company}#token=v1.")
            api.secrets_seen.add(url.split("#token=")[1])
            await shots.take(page, "link-issued")
            await page.click("#copy")
            await until(page, "window.__admin.trace.includes('copied')")
            assert await page.evaluate("navigator.clipboard.readText()") == url
            await page.click("#confirm-cancel")
            assert await page.input_value("#link-url") == ""

            # logout: the phone is unlinked, the row says so live
            await page.click(f"tr[data-company='{company}'] button[data-action='logout']")
            assert "Log Salon Aurora" in await page.inner_text("#confirm-title")
            await page.click("#confirm-ok")
            await obs.wait_event("logged_out")
            await until(page, f"{row(company, 'linked')} === 'no'")
            await shots.take(page, "logged-out")

        # delete: asks, then the row goes
        await page.click(f"tr[data-company='{doomed}'] button[data-action='delete']")
        assert "Delete Salon Closing" in await page.inner_text("#confirm-title")
        await page.click("#confirm-ok")
        await until(page, f"{row(doomed, 'company')} === null")
        async with api.client(headers=api.admin()) as http:
            assert (await http.get(f"/v1/sessions/{doomed}")).status_code == 404
        await shots.take(page, "deleted")
    finally:
        await close_console(page)


async def _many(api: ApiServer, base: int, count: int, names: dict[int, str]) -> list[str]:
    companies = [f"company_{base + i}" for i in range(count)]
    async with api.client(headers=api.admin()) as http:
        for i in range(0, count, 20):
            await asyncio.gather(*(create(http, c, names.get(j)) for j, c in
                                   enumerate(companies[i:i + 20], start=i)))
    return companies


@pytest.mark.parametrize(("lang", "viewport"), [("en", DESKTOP), ("ru", NARROW),
                                                ("en", NARROW), ("ru", DESKTOP)])
async def test_filters_search_and_pages(chromium: Browser, api: ApiServer, redis_url: str,
                                        lang: str, viewport: ViewportSize) -> None:
    width = viewport["width"]
    shots = admin_shots(f"list-{lang}-{width}")
    base = 720_000_000 + width * 1000 + (0 if lang == "en" else 500)
    tag = f"{lang}{width}"
    companies = await _many(api, base, 120, {5: f"Salon Borealis {tag}",
                                             77: f"Барбершоп Тверская {tag}"})
    page = await open_console(chromium, api, viewport=viewport, lang=lang)
    try:
        await sign_in(page, api.admin_token)
        await until(page, "document.getElementById('admin').dataset.conn === 'live'")
        await search(page, str(base)[:6])
        await until(page, "document.querySelectorAll('#rows tr').length === 50")
        summary = await page.inner_text("#summary")
        assert ("1\u201350 of" if lang == "en" else "1\u201350 из") in summary
        await shots.take(page, "first-page")
        await page.click("#next")
        await until(page, f"document.querySelector('#rows tr').dataset.company === "
                          f"{json.dumps(companies[50])}")
        # search by display name, in either language
        await search(page, f"тверская {tag}")
        await until(page, "document.querySelectorAll('#rows tr').length === 1")
        assert await page.evaluate("document.querySelector('#rows tr').dataset.company") == \
            companies[77]
        await search(page, "")
        # a phase filter (every one of these is Pending: no operator runs here)
        await page.click("#phases button[data-phase='Pending']")
        await until(page, "document.querySelector(\"#phases button[data-phase='Pending']\")"
                          ".getAttribute('aria-pressed') === 'true'")
        await page.click("#phases button[data-phase='']")
        if lang == "ru":
            assert await page.inner_text("#signout") == "Выйти"
        overflow = await page.evaluate("document.documentElement.scrollWidth > innerWidth")
        assert not overflow, "the console scrolls sideways"
        await search(page, f"Borealis {tag}")
        await until(page, "document.querySelectorAll('#rows tr').length === 1")
        await page.click(f"tr[data-company='{companies[5]}'] button[data-action='delete']")
        await until(page, "document.getElementById('confirm').open")
        await shots.take(page, "confirm")
        await page.click("#confirm-cancel")
    finally:
        await close_console(page)
    async with api.client(headers=api.admin()) as http:
        for c in companies:
            await http.delete(f"/v1/sessions/{c}")


@pytest.mark.skipif(not hasattr(Phase, "LINK_EXPIRED"),
                    reason="this build has no LinkExpired phase (issue 13's link expiry)")
async def test_renew_link_for_an_expired_onboarding(chromium: Browser, api: ApiServer,
                                                    redis_url: str) -> None:
    """A row in phase LinkExpired offers "Renew link", which calls
    `POST /v1/sessions/{id}/link/renew` after a confirmation (no worker runs here: the API
    answers 503 `no_worker`, which the dialog explains)."""
    company = new_company()
    async with api.client(headers=api.admin()) as http:
        await create(http, company, "Salon Expired")
    redis = Redis.from_url(redis_url)
    page = await open_console(chromium, api)
    try:
        await sign_in(page, api.admin_token)
        await until(page, f"{row(company, 'company')} !== null")
        await redis.hset(session_state_key(company), mapping={
            "phase": "LinkExpired", "linked": "false", "connected": "false", "seq": "3"})
        await redis.expire(session_state_key(company), 60)
        source = EventSource(company, company.replace("_", "-"))
        await redis.publish(events_channel(company), encode(source.event(
            ErrorData(code="test", message="the console re-reads the state"))))
        await until(page, f"{row(company, 'phase-col')} === 'LinkExpired'")
        await page.click(f"tr[data-company='{company}'] button[data-action='renew']")
        assert "Renew the link of Salon Expired" in await page.inner_text("#confirm-title")
        await page.click("#confirm-ok")
        await until(page, f"window.__admin.trace.includes('action:renew:{company}:503')")
        assert "no worker" in await page.inner_text("#confirm-error")
    finally:
        await close_console(page)
        await redis.delete(session_state_key(company))
        await redis.aclose()
