"""The onboarding page in real Chromium (Debian's, driven by Playwright) against the API
process and a session worker with the simulator driver. Screenshots of each step go to
test-artifacts/onboarding/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    WebSocketRoute,
)
from redis.asyncio import Redis

from salon_sessions.api.routes.page import render_page
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
    DEVICES,
    Shots,
    done_only_after_connected,
    fits_the_width,
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
# national numbers in the page's hints and the API's parsing (docs/API.md, Configuration)
API_EXTRA_ENV = {"SALON_DEFAULT_REGION": "RU"}
SALON = "Салон «Аврора»"
OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(chromium: Browser) -> AsyncIterator[OpenPage]:
    """`await open_page(device, lang)`: a page in a fresh context emulating `device` (see
    `DEVICES`), with the browser's language `lang`; no JavaScript error on any of them."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    async def open_(device: str = "desktop", lang: str = "en") -> Page:
        context = await chromium.new_context(
            **DEVICES[device], locale="ru-RU" if lang == "ru" else "en-US")
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
async def page(open_page: OpenPage) -> Page:
    """A desktop page (the QR leads there)."""
    return await open_page("desktop")


async def _salon(api: ApiServer, company: str, name: str | None = SALON) -> None:
    """The SalonSession, created through the API as a platform does (no operator runs in
    these tests: the worker is started directly)."""
    body: dict[str, Any] = {"company_id": company}
    if name is not None:
        body["display_name"] = name
    async with api.client(headers=api.admin()) as http:
        resp = await http.post("/v1/sessions", json=body)
    assert resp.status_code in (200, 201), resp.text


async def _link(api: ApiServer, company: str, name: str | None = SALON) -> str:
    """The onboarding link, as the platform gets it from the API (for a salon it created)."""
    await _salon(api, company, name)
    async with api.client(headers=api.admin()) as http:
        resp = await http.post(f"/v1/sessions/{company}/tokens", json={"ttl_s": 3600})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    api.secrets_seen.add(body["token"])
    url: str = body["onboarding_url"]
    assert url.startswith(f"{api.base_url}/onboarding/{company}#token=")
    return url


def _in(link: str, lang: str) -> str:
    return link.replace("#", f"?lang={lang}#")


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
        assert (await page.text_content("#done-phone")) == "+7 ••• ••• 44 88"


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
        open_page: OpenPage) -> None:
    """On a phone (the salon's own, which cannot scan its screen) the code comes first."""
    shots = Shots("pairing-code-flow")
    period = float(FAST_SIMULATOR["SALON_SIMULATOR_QR_PERIOD_S"])
    page = await open_page("phone")
    async with observing(redis_url, company) as obs:
        workers()  # fast QR rotation
        await page.goto(await _link(api, company))
        await wait_step(page, "link")
        assert await page.locator("#phone-form").is_visible()  # no tap needed
        assert await page.locator("#qr-mode").is_hidden()
        await obs.wait_event("qr")  # the worker is up (a code before that: 503 no_worker)
        await shots.take(page, "phone-leads-with-the-code")
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
        assert (await page.text_content("#code-phone")) == "+7 968 648 44 88"
        assert await page.locator("#phone-form").is_hidden()  # the number is with its code
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
        assert (await page.text_content("#done-phone")) == "+7 ••• ••• 44 88"


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
        api: ApiServer, redis_url: str, open_page: OpenPage) -> None:
    shots = Shots("russian-small-phone")
    company = new_company()
    source = EventSource(company, company.replace("_", "-"))
    page = await open_page("phone320", "ru")
    redis = Redis.from_url(redis_url)
    try:
        link = await _link(api, company)
        await page.goto(link)  # the browser's language
        await wait_step(page, "link")
        assert await page.text_content("h1") == "Подключение WhatsApp"
        assert await page.evaluate("document.documentElement.lang") == "ru"
        await shots.take(page, "ru-code-first")
        assert await fits_the_width(page), "the page scrolls sideways on a 320 px phone"

        await page.fill("#phone", "12345")
        await page.click("#get-code")
        error = page.locator("#code-error")
        await error.wait_for(state="visible")
        text = await error.text_content() or ""
        assert "Проверьте номер" in text, text
        assert "например +7" in text, text
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
        await redis.aclose()


async def test_falls_back_to_polling_when_the_websocket_fails(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        page: Page) -> None:
    """Every WebSocket is cut at once: the page reconnects with backoff, polls the status
    meanwhile, shows the QR from polling and still reaches "done" after the link; a logout
    seen by polling is explained as one seen live."""
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

        old_qrs = {e["data"]["code"] for e in obs.of("qr")}
        seen = len(await trace(page))
        await obs.act({"action": "logout", "code": 403})
        text = await banner_says(page, "loggedOutLocked")
        assert "Unlock it in WhatsApp on the phone first" in text, text
        assert await step(page) == "link"
        assert (await page.text_content("#conn") or "").startswith("Connection lost, checking")
        await shots.take(page, "polling-logged-out")
        await in_language(page, "ru")
        assert "разблокируйте его" in await banner_says(page, "loggedOutLocked")  # noqa: RUF001
        # a new QR to link again, from polling; never one of the old link's
        await wait_for(page, f"window.__salon.trace.slice({seen}).includes('qr:shown')")
        [payload] = await _decode_qr(page, shots.dir / "qr-element-after-logout.png")
        await obs.wait_published_qr(payload)
        assert payload not in old_qrs
        api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}


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
        assert (await http.get("/static/app.js")).status_code == 200
        # the phone hints of SALON_DEFAULT_REGION (API_EXTRA_ENV), for the page's script
        assert '<meta name="salon-phone-region" content="RU">' in resp.text
        assert re.search(r'<meta name="salon-phone-example" content="\+7 9[0-9 -]+">',
                         resp.text), resp.text[:800]
        # a malformed link: the same page (it says the link is not valid), never raw JSON
        bad = await http.get("/onboarding/not-a-company")
        assert bad.status_code == 404
        assert bad.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in bad.headers["content-security-policy"]
        assert '<meta name="salon-company" content="">' in bad.text
        # the icon, at the address browsers try by themselves too
        for path in ("/static/favicon.svg", "/favicon.ico"):
            icon = await http.get(path)
            assert icon.status_code == 200, path
            assert icon.headers["content-type"].startswith("image/svg+xml"), path
        assert "/onboarding/{company_id}" not in (await http.get("/openapi.json")).text


def test_page_meta_without_a_default_region() -> None:
    """Unset SALON_DEFAULT_REGION: international numbers only, and the hint says so."""
    html = render_page("company_1001", None)
    assert '<meta name="salon-company" content="company_1001">' in html
    assert '<meta name="salon-phone-region" content="">' in html
    assert '<meta name="salon-phone-example" content="+7 912 345-67-89">' in html
    assert '<meta name="salon-company" content="&lt;x&gt;">' in render_page("<x>", None)


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
async def opened_later(open_page: OpenPage, link: str,
                       lang: str) -> AsyncIterator[Page]:
    """Another tab opened on the link after the event: it knows only the current state."""
    page = await open_page("desktop", lang)
    try:
        await page.goto(_in(link, lang))
        yield page
    finally:
        await page.close()


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
        open_page: OpenPage) -> None:
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
        async with opened_later(open_page, link, "en") as later:
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
        async with opened_later(open_page, link, "en") as later:  # from the state alone
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
        open_page: OpenPage) -> None:
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
            async with opened_later(open_page, link, "ru") as later:
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
        open_page: OpenPage) -> None:
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
        async with opened_later(open_page, link, "en") as later:  # the state has the end
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
        async with opened_later(open_page, link, "ru") as later:
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


# ---- issue 13: the phone's own path, trust cues, an honest label, links that end -------
# every item at 320 px and at desktop size, in Russian and in English
WORDS = {
    "en": {"title": "Connect WhatsApp", "brand": "Salon admin",
           "toQr": "Link with a QR code instead", "toCode": "Link with phone number instead",
           "codeFor": "Code for", "wrong": "Wrong number?", "done": "Done",
           "unknown": "This link is not valid any more", "ask": "Ask for a new one.",
           "expired": "This code expired", "renew": "Get a new code",
           "lost": "Connection lost"},
    "ru": {"title": "Подключение WhatsApp", "brand": "Салон-админ",
           "toQr": "Привязать по QR-коду", "toCode": "Связать по номеру телефона",
           "codeFor": "Код для номера", "wrong": "Не тот номер?",  # noqa: RUF001
           "done": "Готово",
           "unknown": "Эта ссылка больше не действует", "ask": "Попросите прислать новую.",
           "expired": "Срок действия кода истёк", "renew": "Получить новый код",
           "lost": "Связь потеряна"},
}
EVERY_VIEW = [("phone320", "ru"), ("phone320", "en"), ("desktop", "ru"), ("desktop", "en")]
TWO_VIEWS = [("phone320", "ru"), ("desktop", "en")]  # the flows that need a worker
JID = "79686484488:7@s.whatsapp.net"


async def _text(page: Page, selector: str) -> str:
    return (await page.text_content(selector) or "").strip()


async def _trusted(page: Page, lang: str, name: str | None = SALON) -> None:
    """What every state shows: the brand, the icon, a real title (with the salon's name once
    known), and no sideways scrolling."""
    assert await page.locator(".brand").is_visible()
    assert await _text(page, ".brand") == WORDS[lang]["brand"]
    title = WORDS[lang]["title"] + (f" — {name}" if name else "")
    await wait_for(page, f"document.title === {title!r}")
    icon = await page.evaluate(
        "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)")
    assert icon == 200
    assert await fits_the_width(page), "the page scrolls sideways"


@pytest.mark.parametrize(("device", "lang"), EVERY_VIEW)
async def test_lead_path_follows_the_device_and_every_state_is_trusted(
        api: ApiServer, redis_url: str, open_page: OpenPage, device: str, lang: str) -> None:
    """On a phone the pairing code leads (it cannot scan its own screen), on a desktop the
    QR; the other is one tap away. The salon's name, the brand and the icon on every state;
    a code shows its number; "Done" the linked number, masked. Events published by hand."""
    shots = Shots(f"lead-and-trust-{device}-{lang}")
    words = WORDS[lang]
    company = new_company()
    source = EventSource(company, company.replace("_", "-"))
    page = await open_page(device, lang)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and "/v1/" not in r.url else None)
    redis = Redis.from_url(redis_url)
    try:
        await page.goto(await _link(api, company))
        await wait_step(page, "link")
        await _trusted(page, lang)
        assert await _text(page, "#salon") == SALON
        lead = "code" if device.startswith("phone") else "qr"
        assert await page.evaluate("document.getElementById('app').dataset.lead") == lead
        if lead == "code":
            assert await page.locator("#phone-form").is_visible()
            assert await page.locator("#qr-mode").is_hidden()
            assert await _text(page, "#to-qr") == words["toQr"]
            assert "+7\xa0912" in await _text(page, "#phone-hint")  # never broken
            assert (await page.get_attribute("#phone", "placeholder") or "").startswith("+7 9")
        else:
            assert await page.locator("#qr-box").is_visible()
            assert await page.locator("#code-mode").is_hidden()
            assert await _text(page, "#to-code") == words["toCode"]
        await shots.take(page, f"lead-{lead}")
        await page.click("#to-qr" if lead == "code" else "#to-code")  # the other path
        other = "qr" if lead == "code" else "code"
        assert await page.evaluate("document.getElementById('app').dataset.mode") == other
        await shots.take(page, f"other-{other}")
        await page.click("#to-code" if lead == "code" else "#to-qr")

        await _publish(redis, source, PairingCodeData(code="ABCD2345", phone="79686484488"))
        await wait_trace(page, "code:shown")
        assert await _text(page, "#code") == "ABCD-2345"
        assert await _text(page, ".code-for") == f"{words['codeFor']} +7 968 648 44 88"
        assert (await _text(page, "#cancel-code")).startswith(words["wrong"])
        await _trusted(page, lang)
        await shots.take(page, "code-with-its-number")

        await _publish(redis, source, LinkedData(jid=JID, phone="79686484488"))
        await wait_step(page, "linked")
        await _trusted(page, lang)
        await _publish(redis, source, ConnectedData(jid=JID))
        await wait_step(page, "done")
        assert await _text(page, "#step-done h2") == words["done"]
        assert await _text(page, "#done-phone") == "+7 ••• ••• 44 88"
        await _trusted(page, lang)
        await shots.take(page, "done")
        assert not failed, failed
    finally:
        await redis.aclose()


async def _says_not_valid(page: Page, lang: str) -> None:
    await wait_step(page, "error")
    assert await _text(page, "#error-title") == WORDS[lang]["unknown"]
    assert await _text(page, "#error-text") == WORDS[lang]["ask"]
    assert await _text(page, "#conn") == ""  # nothing is checked any more: no claim it is
    assert await page.locator("#banner").is_hidden()
    await _trusted(page, lang, name=None)
    assert "#token" not in page.url


async def test_a_link_for_a_salon_that_is_gone_or_mangled_says_so(
        api: ApiServer, open_page: OpenPage) -> None:
    """The salon deleted while its page is open: the page says so after a bounded wait (it
    asks every 15 s while nothing shows the salon); a page opened later at once (the API's
    404); a mangled id in the link gets the same page, not JSON."""
    shots = Shots("unknown-salon")
    company = new_company()
    link = await _link(api, company)
    waiting = await open_page("desktop", "en")
    await waiting.goto(link)
    await wait_step(waiting, "link")
    await wait_for(waiting, "document.title.endsWith(' — ' + " + repr(SALON) + ")")
    async with api.client(headers=api.admin()) as http:
        assert (await http.delete(f"/v1/sessions/{company}")).status_code == 204
    await _says_not_valid(waiting, "en")  # wait_step: 30 s, the bound is 15
    await shots.take(waiting, "deleted-while-open-desktop-en")

    for device, lang in EVERY_VIEW:
        page = await open_page(device, lang)
        await page.goto(link)
        await _says_not_valid(page, lang)
        assert "session:unknown" in await trace(page)
        await shots.take(page, f"gone-{device}-{lang}")
    token = link.split("#token=")[1]
    for device, lang in TWO_VIEWS:
        page = await open_page(device, lang)
        response = await page.goto(f"{api.base_url}/onboarding/company_12x4#token={token}")
        assert response is not None
        assert response.status == 404
        await _says_not_valid(page, lang)
        await shots.take(page, f"mangled-{device}-{lang}")


async def test_a_frozen_api_is_reported_within_the_heartbeat_bound(
        api: ApiServer, open_page: OpenPage) -> None:
    """The API stops answering (SIGSTOP): the socket gets no heartbeat, and the page drops it
    and says so after 2.5 heartbeats (1 s here) instead of waiting for a close handshake
    that never ends; "Live" again once the API answers."""
    shots = Shots("frozen-api")
    page = await open_page("phone320", "en")
    await page.goto(await _link(api, new_company()))
    await wait_step(page, "link")
    await wait_for(page, "document.getElementById('app').dataset.conn === 'live'")
    assert await _text(page, "#conn") == "Live"
    loop = asyncio.get_running_loop()
    os.kill(api.proc.pid, signal.SIGSTOP)
    frozen_at = loop.time()
    try:
        await wait_for(page, "document.getElementById('app').dataset.conn !== 'live'",
                       timeout_s=15)
        print(f"frozen API: the page left 'Live' after {loop.time() - frozen_at:.1f} s "
              "(heartbeat 1 s, bound 2.5 heartbeats + the 1 s watchdog tick)")
        assert "ws:stale" in await trace(page)
        assert (await _text(page, "#conn")).startswith(WORDS["en"]["lost"])
        await shots.take(page, "frozen-en")
        await in_language(page, "ru")
        assert (await _text(page, "#conn")).startswith(WORDS["ru"]["lost"])
        await shots.take(page, "frozen-ru")
        await asyncio.sleep(3)  # several more heartbeats: it never claims "Live" meanwhile
        assert await page.evaluate("document.getElementById('app').dataset.conn") != "live"
    finally:
        os.kill(api.proc.pid, signal.SIGCONT)
    await wait_for(page, "document.getElementById('app').dataset.conn === 'live'",
                   timeout_s=45)
    assert await _text(page, "#conn") == "На связи"  # noqa: RUF001
    await shots.take(page, "live-again-ru")


@pytest.mark.parametrize(("device", "lang"), TWO_VIEWS)
async def test_a_wrong_number_is_cancelled_and_the_right_one_entered_at_once(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        open_page: OpenPage, device: str, lang: str) -> None:
    """The code shows the number it belongs to; "wrong number?" ends it on the worker
    (`DELETE .../pairing-code`) and a code for another number follows at once (no 409)."""
    shots = Shots(f"wrong-number-{device}-{lang}")
    page = await open_page(device, lang)
    async with observing(redis_url, company) as obs:
        workers()
        await page.goto(await _link(api, company))
        await wait_step(page, "link")
        if device == "desktop":
            await page.click("#to-code")
        await obs.wait_event("qr")  # the worker is up
        await page.fill("#phone", "+7 968 648-44-88")  # a mistyped number
        await page.click("#get-code")
        await wait_trace(page, "code:shown")
        first = await obs.wait_event("pairing_code")
        api.secrets_seen.add(first["data"]["code"])
        assert await _text(page, "#code-phone") == "+7 968 648 44 88"
        await shots.take(page, "code-for-the-wrong-number")

        await page.click("#cancel-code")
        await wait_trace(page, "code:cancelled")
        assert await page.locator("#code-box").is_hidden()
        assert await page.locator("#phone-form").is_visible()
        assert await page.evaluate("document.activeElement.id") == "phone"
        assert (await obs.state()).get("pairing_code_pending") in ("0", "false", "", None)
        await shots.take(page, "cancelled")

        await page.fill("#phone", "8 916 123-45-67")  # the national way: SALON_DEFAULT_REGION
        await page.click("#get-code")
        second = await obs.wait_event("pairing_code", count=2)
        api.secrets_seen.add(second["data"]["code"])
        assert second["data"]["phone"] == "79161234567"
        await wait_for(page, "document.getElementById('code-phone').textContent"
                             " === '+7 916 123 45 67'")
        shown = await _text(page, "#code")
        assert shown.replace("-", "") == second["data"]["code"]
        assert await page.locator("#code-error").is_hidden()
        await shots.take(page, "code-for-the-right-number")

        await obs.act({"action": "enter_code", "code": shown})
        await wait_step(page, "done")
        assert await _text(page, "#done-phone") == "+7 ••• ••• 45 67"
        await shots.take(page, "done")


@pytest.mark.parametrize(("device", "lang"), TWO_VIEWS)
async def test_an_expired_onboarding_is_renewed_from_the_page(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        open_page: OpenPage, device: str, lang: str) -> None:
    """`spec.link.expireAfter` passes without a link (6 s here): the page says the code
    expired (also one opened later, from the state) and its button renews the onboarding
    (`POST .../link/renew`): new QR codes come again."""
    shots = Shots(f"link-expired-{device}-{lang}")
    words = WORDS[lang]
    page = await open_page(device, lang)
    async with observing(redis_url, company) as obs:
        workers(env={"SALON_LINK_EXPIRE_AFTER_S": "6"})
        link = await _link(api, company)
        await page.goto(link)
        await obs.wait_event("link_expired")
        await wait_step(page, "expired")
        assert await _text(page, "#step-expired h2") == words["expired"]
        assert await _text(page, "#renew") == words["renew"]
        await _trusted(page, lang)
        await shots.take(page, "expired")
        async with opened_later(open_page, link, lang) as later:
            await wait_step(later, "expired")

        qrs = len(obs.of("qr"))
        await page.click("#renew")
        await wait_trace(page, "link:renewed")
        await wait_step(page, "link")
        await obs.wait_event("qr", count=qrs + 1)
        if device == "desktop":
            await wait_trace(page, "qr:shown")
        else:
            assert await page.locator("#phone-form").is_visible()
        await shots.take(page, "renewed")
        api.secrets_seen |= {e["data"]["code"] for e in obs.of("qr")}
