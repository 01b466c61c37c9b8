"""The onboarding page in real Chromium (Debian's, driven by Playwright) against the API
process and a session worker with the simulator driver. Screenshots of each step go to
test-artifacts/onboarding/."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, WebSocketRoute, async_playwright
from redis.asyncio import Redis

from salon_sessions.core.channels import events_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventData,
    EventSource,
    LinkedData,
    LoggedOutData,
    PairingCodeData,
)
from tests.api.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PHONE_VIEWPORT,
    Shots,
    done_only_after_connected,
    step,
    trace,
    wait_for,
    wait_step,
    wait_trace,
)
from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.api.zbar import decode
from tests.worker.harness import FAST_SIMULATOR, Observer, new_company, observing

pytestmark = pytest.mark.slow
# QR rotation slow enough to screenshot, decode and "scan" one QR before it rotates
READABLE_QR = {"SALON_SIMULATOR_FIRST_QR_S": "8", "SALON_SIMULATOR_QR_PERIOD_S": "5"}


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user data dir
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport=PHONE_VIEWPORT, locale="en-US")
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def page(browser: BrowserContext) -> AsyncIterator[Page]:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):  # a language clicked stays for the next test
            await page.evaluate("localStorage.removeItem('salon.lang')")
        await page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def _link(api: ApiServer, company: str) -> str:
    """The onboarding link, as the platform gets it from the API."""
    async with api.client(headers=api.admin()) as http:
        created = await http.post("/v1/sessions", json={"company_id": company})
        assert created.status_code in (200, 201), created.text  # tokens need a session
        resp = await http.post(f"/v1/sessions/{company}/tokens", json={"ttl_s": 3600})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    api.secrets_seen.add(body["token"])
    url: str = body["onboarding_url"]
    assert url.startswith(f"{api.base_url}/onboarding/{company}#token=")
    return url


async def _decode_qr(page: Page, path: Path) -> list[str]:
    await page.locator("#qr").screenshot(path=str(path))
    return decode(path)


async def test_qr_flow(api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
                       page: Page) -> None:
    shots = Shots("qr-flow")
    async with observing(redis_url, company) as obs:
        workers(env=READABLE_QR)
        await page.goto(await _link(api, company))
        assert "#token" not in page.url  # the page takes the token out of the address bar
        await wait_trace(page, "qr:shown")
        await shots.take(page, "qr")
        [first] = await _decode_qr(page, shots.dir / "qr-element-1.png")
        await obs.wait_published_qr(first)

        # the worker rotates the QR: the page shows the new one (no timer of its own)
        qrs = len(obs.of("qr"))
        await obs.wait_event("qr", count=qrs + 1)
        await wait_trace(page, "qr:shown", count=2)
        await shots.take(page, "qr-rotated")

        linked = await _scan_what_the_page_shows(page, obs, shots.dir)
        api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}
        assert linked["data"]["method"] == "qr"
        await wait_step(page, "done")
        await shots.take(page, "done")
        entries = await trace(page)
        assert done_only_after_connected(entries), entries
        assert "event:linked" in entries
        assert entries.index("event:linked") < entries.index("step:done")
        assert (await page.text_content("#step-done h2")) == "Done"


async def _scan_what_the_page_shows(page: Page, obs: Observer, where: Path) -> dict[str, object]:
    """Decode the QR on the screen with zbar and "scan" it; again if it rotated meanwhile."""
    for attempt in range(5):
        [payload] = await _decode_qr(page, where / f"qr-element-scan-{attempt}.png")
        await obs.wait_published_qr(payload)  # what the page shows is what it published
        await obs.act({"action": "scan", "qr": payload, "phone": "+7 968 648-44-88"})
        try:
            return await obs.wait_event("linked", timeout=3)
        except AssertionError:
            continue  # rotated between the screenshot and the scan
    raise AssertionError("could not scan the QR shown on the page")


async def test_pairing_code_flow_outlives_qr_rotations(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        page: Page) -> None:
    shots = Shots("pairing-code-flow")
    period = float(FAST_SIMULATOR["SALON_SIMULATOR_QR_PERIOD_S"])
    async with observing(redis_url, company) as obs:
        workers()  # fast QR rotation
        await page.goto(await _link(api, company))
        await wait_trace(page, "qr:shown")
        await shots.take(page, "qr")
        await page.click("#to-code")
        await page.fill("#phone", "+7 968 648-44-88")
        await shots.take(page, "phone-entered")
        await page.click("#get-code")
        await page.wait_for_selector("#code-box:not([hidden])")
        shown = (await page.text_content("#code") or "").strip()
        assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", shown), shown
        issued = await obs.wait_event("pairing_code")
        assert issued["data"]["code"] == shown.replace("-", "")
        api.secrets_seen.add(issued["data"]["code"])
        assert re.search(r"Valid for [23]:\d\d", await page.text_content("#code-ttl") or "")
        await shots.take(page, "code")

        # the salon takes its time: more than two QR rotations pass before the code is typed
        qrs = len(obs.of("qr"))
        started = asyncio.get_running_loop().time()
        await obs.wait_event("qr", count=qrs + 3)
        assert asyncio.get_running_loop().time() - started > 2 * period
        assert (await page.text_content("#code") or "").strip() == shown
        assert await step(page) == "link"
        assert (await obs.state())["phase"] == "PairingCodeIssued"
        await shots.take(page, "code-after-rotations")

        await obs.act({"action": "enter_code", "code": shown})
        linked = await obs.wait_event("linked")
        assert linked["data"]["method"] == "pairingCode"
        await wait_step(page, "done")
        await shots.take(page, "done")
        entries = await trace(page)
        assert done_only_after_connected(entries), entries
        assert entries.index("event:pairing_code") < entries.index("event:linked")


async def _publish(redis: Redis, source: EventSource, data: EventData) -> None:
    event = source.event(data)
    await redis.publish(events_channel(event.company_id), encode(event))


async def test_done_only_on_connected_not_on_linked_or_a_code(
        api: ApiServer, redis_url: str, page: Page) -> None:
    """Events published by hand: a code issued and `linked` keep the page on step 1."""
    shots = Shots("done-only-on-connected")
    company = new_company()
    source = EventSource(company, company.replace("_", "-"))
    redis = Redis.from_url(redis_url)
    try:
        await page.goto(await _link(api, company))
        await wait_trace(page, "ws:open")
        await wait_step(page, "link")
        await _publish(redis, source, PairingCodeData(code="ABCD2345", phone="79686484488"))
        await wait_trace(page, "event:pairing_code")
        assert await step(page) == "link"
        assert (await page.text_content("#code") or "").strip() == "ABCD-2345"
        await shots.take(page, "code-issued")
        await _publish(redis, source, LinkedData(jid="79686484488:7@s.whatsapp.net",
                                                 phone="79686484488"))
        await wait_trace(page, "event:linked")
        assert await step(page) == "linked"
        await shots.take(page, "linked-not-done")
        await _publish(redis, source, DisconnectedData(reason="network"))
        await wait_trace(page, "event:disconnected")
        assert await step(page) == "linked"
        assert "interrupted" in (await page.text_content("#banner") or "")
        await _publish(redis, source, ConnectedData(jid="79686484488:7@s.whatsapp.net"))
        await wait_step(page, "done")
        await shots.take(page, "done")
        assert done_only_after_connected(await trace(page))
    finally:
        await redis.aclose()


async def test_russian_texts_phone_layout_and_plain_errors(
        api: ApiServer, redis_url: str, browser: BrowserContext) -> None:
    shots = Shots("russian-small-phone")
    company = new_company()
    source = EventSource(company, company.replace("_", "-"))
    page = await browser.new_page()
    await page.set_viewport_size({"width": 320, "height": 568})
    redis = Redis.from_url(redis_url)
    try:
        link = await _link(api, company)
        await page.goto(link.replace("#", "?lang=ru#"))
        await wait_step(page, "link")
        assert await page.text_content("h1") == "Подключение WhatsApp"
        assert await page.evaluate("document.documentElement.lang") == "ru"
        await shots.take(page, "ru-qr-waiting")
        fits = await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, "the page scrolls sideways on a 320 px phone"

        await page.click("#to-code")
        await page.fill("#phone", "12345")
        await page.click("#get-code")
        error = page.locator("#code-error")
        await error.wait_for(state="visible")
        assert "от 8 до 15 цифр" in (await error.text_content() or "")
        await shots.take(page, "ru-bad-phone")

        await _publish(redis, source, ErrorData(code="temporary_ban", message="ban 101",
                                                fatal=True))
        await wait_trace(page, "event:error")
        assert "временно заблокировал" in (await page.text_content("#banner") or "")
        await _publish(redis, source, LoggedOutData(reason="removed on the phone"))
        await wait_trace(page, "event:logged_out")
        assert "Привяжите его снова" in (await page.text_content("#banner") or "")  # noqa: RUF001
        await shots.take(page, "ru-logged-out")
        await page.click("button[data-lang=en]")
        assert await page.text_content("h1") == "Connect WhatsApp"
    finally:
        await page.close()
        await redis.aclose()


async def test_falls_back_to_polling_when_the_websocket_fails(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        page: Page) -> None:
    """Every WebSocket is cut at once: the page reconnects with backoff, polls the status
    meanwhile, shows the QR from polling and still reaches "done" after the link."""
    shots = Shots("polling-fallback")
    cut = 0

    async def refuse(ws: WebSocketRoute) -> None:
        nonlocal cut
        cut += 1
        await ws.close(code=1011, reason="cut by the test")

    await page.route_web_socket(re.compile(r".*/ws$"), refuse)
    async with observing(redis_url, company) as obs:
        workers(env=READABLE_QR)
        await page.goto(await _link(api, company))
        await wait_trace(page, "poll:start")
        await wait_for(page, "document.getElementById('app').dataset.conn === 'polling'")
        await wait_trace(page, "qr:shown")
        await shots.take(page, "polling-qr")
        await _scan_what_the_page_shows(page, obs, shots.dir)
        api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}
        await obs.wait_event("connected")
        await wait_step(page, "done")
        await shots.take(page, "polling-done")
        assert cut >= 2
        assert "poll:Connected" in await trace(page)


@pytest.mark.parametrize("fragment", ["", "#token=v1.bm9wZQ.c2lnbmF0dXJl"])
async def test_missing_or_invalid_token(api: ApiServer, page: Page, fragment: str) -> None:
    company = new_company()
    await page.goto(f"{api.base_url}/onboarding/{company}{fragment}")
    await wait_step(page, "error")
    text = await page.text_content("#error-text") or ""
    assert ("incomplete" in text) if not fragment else ("expired" in text)


async def test_page_is_served_with_strict_headers(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        resp = await http.get(f"/onboarding/{new_company()}")
        assert resp.status_code == 200
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert (await http.get("/onboarding/not-a-company")).status_code == 422
        assert (await http.get("/static/app.js")).status_code == 200


# ---- WhatsApp's harder states, played through the simulator (docs/API.md, The page) -----
# a login window (first QR + 5 rotations) long enough for a passkey exchange: 3 s + 50 s
SLOW_LOGIN = {"SALON_SIMULATOR_FIRST_QR_S": "3", "SALON_SIMULATOR_QR_PERIOD_S": "10"}


async def banner_says(page: Page, key: str) -> str:
    """Wait until the banner shows the text `key`; its words."""
    await wait_for(page, f"document.getElementById('banner').dataset.key === {key!r}")
    return (await page.text_content("#banner") or "").strip()


async def in_language(page: Page, lang: str) -> None:
    await page.click(f"button[data-lang={lang}]")
    await wait_for(page, f"document.documentElement.lang === {lang!r}")


@contextlib.asynccontextmanager
async def opened_later(browser: BrowserContext, link: str,
                       lang: str) -> AsyncIterator[Page]:
    """Another tab opened on the link after the event: it knows only the current state."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.goto(link.replace("#", f"?lang={lang}#"))
        yield page
    finally:
        await page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def _connected(page: Page, obs: Observer, count: int) -> None:
    """The worker's `count`th connection, and the page showing it."""
    await obs.wait_event("connected", count=count)
    await wait_trace(page, "event:connected", count=count)
    await wait_step(page, "done")


async def _relink(api: ApiServer, page: Page, obs: Observer) -> None:
    """Scan the QR the page shows again after a logout (stored by the worker: the QR flow
    itself is `test_qr_flow`'s)."""
    await page.locator("#qr").wait_for(state="visible")
    await obs.scan()
    api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}


async def test_passkey_request_is_explained_and_the_qr_still_links(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str, page: Page,
        browser: BrowserContext) -> None:
    shots = Shots("passkey")
    async with observing(redis_url, company) as obs:
        workers(env=SLOW_LOGIN)
        link = await _link(api, company)
        await page.goto(link)
        await wait_trace(page, "qr:shown")
        assert await page.locator("#passkey").is_hidden()
        await obs.act({"action": "passkey", "stage": "request"})
        await wait_trace(page, "passkey:request")
        card = page.locator("#passkey")
        text = await card.inner_text()
        for words in ("passkey to confirm the new device", "cannot answer",
                      "works only on WhatsApp's own site", "If WhatsApp shows a request, "
                      "confirm it there", "link with the phone number instead",
                      "try again later"):
            assert words in text, text
        assert await page.locator("#qr").is_visible()  # the QR login stays open
        assert await step(page) == "link"
        await shots.take(page, "request-en")
        await in_language(page, "ru")
        text = await card.inner_text()
        for words in ("Подтвердите на телефоне салона", "ключ доступа",
                      "подтвердите его там",  # noqa: RUF001
                      "привяжите по номеру телефона"):
            assert words in text, text
        await shots.take(page, "request-ru")

        # the QR keeps rotating under the card
        qrs = len(obs.of("qr"))
        await obs.wait_event("qr", count=qrs + 1)
        await wait_trace(page, "qr:shown", count=2)
        assert await card.is_visible()

        # a page opened now learns it from the state
        async with opened_later(browser, link, "en") as later:
            await wait_trace(later, "passkey:request")
            assert "works only on WhatsApp's own site" in await later.locator(
                "#passkey").inner_text()

        await obs.act({"action": "passkey", "stage": "confirmation", "code": "ABCD-2345"})
        await wait_trace(page, "passkey:confirmation")
        assert "тот же код" in await card.inner_text()
        assert (await page.text_content("#passkey-code") or "").strip() == "ABCD-2345"
        await shots.take(page, "confirmation-ru")
        await in_language(page, "en")
        assert "must show the same code" in await card.inner_text()
        async with opened_later(browser, link, "en") as later:  # from the state alone
            await wait_trace(later, "passkey:confirmation")
            assert (await later.text_content("#passkey-code") or "").strip() == "ABCD-2345"

        await _scan_what_the_page_shows(page, obs, shots.dir)
        api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}
        await wait_step(page, "done")
        assert await card.is_hidden()
        await shots.take(page, "done")
        entries = await trace(page)
        assert entries.index("passkey:confirmation") < entries.index("passkey:hidden")
        assert done_only_after_connected(entries), entries


LOGOUTS = [  # the phone's action, the page's text in English and in Russian
    ({"action": "logout", "code": 406}, "loggedOutBanned",
     "WhatsApp has banned this number. It cannot be linked.",
     "WhatsApp заблокировал этот номер. Привязать его нельзя."),  # noqa: RUF001
    ({"action": "logout", "code": 403}, "loggedOutLocked",
     "Unlock it in WhatsApp on the phone first",
     "разблокируйте его в WhatsApp на телефоне"),  # noqa: RUF001
    ({"action": "logout"}, "loggedOut", "The phone removed this device. Link it again.",
     "Телефон отвязал это устройство."),
    ({"action": "connect_failure", "code": 499}, "errConnectFailure",
     "WhatsApp refused the connection (code 499). We will retry.",
     "WhatsApp отказал в подключении (код 499). Повторим попытку."),
    ({"action": "logout", "code": 499}, "loggedOutCode",
     "WhatsApp removed this device (code 499). Link it again.",
     "WhatsApp отвязал это устройство (код 499)."),
]


async def test_logout_reasons_in_plain_words_also_on_a_page_opened_later(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str, page: Page,
        browser: BrowserContext) -> None:
    shots = Shots("logout-reasons")
    async with observing(redis_url, company) as obs:
        workers(env=READABLE_QR)
        link = await _link(api, company)
        await page.goto(link)
        connects = 0
        for action, key, english, russian in LOGOUTS:
            await _relink(api, page, obs)
            connects += 1
            await _connected(page, obs, connects)
            await obs.act(action)
            assert english in await banner_says(page, key)
            await shots.take(page, f"{key}-en")
            async with opened_later(browser, link, "ru") as later:
                assert russian in await banner_says(later, key)
                await shots.take(later, f"{key}-ru-opened-later")
            if action["action"] == "connect_failure":
                assert await obs.control("restart") == {"restarting": True}
                await _connected(page, obs, connects + 1)
                logouts = len(obs.of("logged_out"))
                await obs.act({"action": "logout"})  # back to a QR for the next round
                await obs.wait_event("logged_out", count=logouts + 1)
                connects += 1


async def test_bans_replaced_streams_and_refusals_in_plain_words(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str, page: Page,
        browser: BrowserContext) -> None:
    shots = Shots("bans-and-refusals")
    async with observing(redis_url, company) as obs:
        workers(env=READABLE_QR)
        link = await _link(api, company)
        await page.goto(link)
        await _relink(api, page, obs)
        await _connected(page, obs, 1)

        # a temporary ban: until when, in the browser's own time zone, and why
        await obs.act({"action": "temporary_ban", "code": 101, "expire_s": 900})
        error: dict[str, Any] = await obs.wait_event("error")
        zone = await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
        until = datetime.fromisoformat(error["data"]["retry_at"]).astimezone(ZoneInfo(zone))
        text = await banner_says(page, "errTemporaryBanUntil")
        assert f"temporarily blocked this number until {until:%H:%M}" in text, text
        assert "(messages to too many people)" in text
        assert await step(page) == "linked"  # no longer "done": the socket is closed
        assert await page.locator("#linked-spinner").is_visible()  # it comes back by itself
        await shots.take(page, "ban-en")
        await in_language(page, "ru")
        text = await banner_says(page, "errTemporaryBanUntil")
        assert f"временно заблокировал номер до {until:%H:%M}" in text, text
        assert "(сообщения слишком многим людям)" in text
        await in_language(page, "en")
        async with opened_later(browser, link, "en") as later:  # the state has the end
            text = await banner_says(later, "errTemporaryBanUntil")
            assert f"temporarily blocked this number until {until:%H:%M}" in text, text
            assert "(messages to too many people)" in text
            await shots.take(later, "ban-opened-later")

        # the worker restarted: a new connection; then another session takes it over
        assert await obs.control("restart") == {"restarting": True}
        await _connected(page, obs, 2)
        await obs.act({"action": "stream_replaced"})
        assert "took over this connection. Reconnecting once" in await banner_says(
            page, "errStreamReplaced")
        await _connected(page, obs, 3)  # once, after a pause
        await obs.act({"action": "stream_replaced"})
        text = await banner_says(page, "errStreamReplacedStop")
        assert "Another WhatsApp Web or desktop session took over" in text
        assert "Close WhatsApp on the other computer" in text
        assert "not connected" in (await page.text_content("#linked-text") or "")
        assert await page.locator("#linked-spinner").is_hidden()  # nothing comes by itself
        await shots.take(page, "replaced-en")
        async with opened_later(browser, link, "ru") as later:
            assert "перехватила подключение" in await banner_says(later,
                                                                  "errStreamReplacedStop")
            assert "не подключён" in (await later.text_content("#linked-text") or "")

        # WhatsApp unavailable: retried (and it connects again); an outdated client: not
        await obs.act({"action": "connect_failure", "code": 503})
        assert "refused the connection (WhatsApp is unavailable). We will retry." in (
            await banner_says(page, "errConnectFailure"))
        await _connected(page, obs, 4)
        await obs.act({"action": "connect_failure", "code": 405})
        text = await banner_says(page, "errConnectFailureStop")
        assert "(this app version is outdated). It will not retry by itself" in text
        await shots.take(page, "refused-en")
