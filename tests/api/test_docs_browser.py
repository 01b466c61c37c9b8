"""`/docs` (Swagger UI) and `/redoc` in real Chromium (Debian's, driven by Playwright) with
every request that does not go to the API process refused: their assets come from this
server (the `fastapi-offline` package), not from a CDN, and they work under the docs'
Content-Security-Policy (no inline script). Swagger UI's Authorize takes the admin token
and a call tried from the page gets its 200. Screenshots in test-artifacts/onboarding/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Route, async_playwright

from tests.api.browser import CHROMIUM, CHROMIUM_ARGS, Shots, wait_for
from tests.api.server import ApiServer

pytestmark = pytest.mark.slow
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[BrowserContext]:
    """A fresh context of Debian's Chromium at desktop size (no profile kept)."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
        context = await chromium.new_context(viewport=DESKTOP, locale="en-US")
        try:
            yield context
        finally:
            await chromium.close()


class Offline:
    """Only the API process answers; every other request (a CDN, fonts, a validator) is
    aborted and remembered. CSP violations and page errors are remembered too."""

    def __init__(self, api: ApiServer) -> None:
        self.origin = api.base_url
        self.blocked: list[str] = []
        self.served: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []

    async def route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{self.origin}/") or url == self.origin:
            self.served.append(url.removeprefix(self.origin))
            await route.continue_()
        elif url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            self.blocked.append(url)
            await route.abort("internetdisconnected")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(message.text)

    def check(self, *, tolerated: str | None = None) -> None:
        """`tolerated`: the one CSP refusal allowed (ReDoc's footer logo, which its bundle
        always asks from its vendor's CDN and hides when it does not load)."""
        assert not self.blocked, f"requests beyond the server: {self.blocked}"
        assert not self.errors, f"JavaScript errors: {self.errors}"
        csp = [m for m in self.console if "Content Security Policy" in m
               and not (tolerated and tolerated in m)]
        assert not csp, f"CSP violations: {csp}"


@pytest.fixture
async def page(browser: BrowserContext, api: ApiServer) -> AsyncIterator[tuple[Page, Offline]]:
    page = await browser.new_page()
    offline = Offline(api)
    await page.route("**/*", offline.route)
    page.on("console", offline.on_console)
    page.on("pageerror", lambda exc: offline.errors.append(str(exc)))
    try:
        yield page, offline
    finally:
        await page.close()


async def test_swagger_ui_authorizes_and_runs_a_call_offline(
        api: ApiServer, page: tuple[Page, Offline]) -> None:
    tab, offline = page
    shots = Shots("docs_swagger_ui")
    response = await tab.goto(f"{api.base_url}/docs")
    assert response is not None
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    await tab.locator(".swagger-ui .info .title").wait_for(timeout=30_000)
    assert "salon-sessions onboarding API" in await tab.locator(".info .title").inner_text()
    await shots.take(tab, "loaded")

    await tab.locator("button.authorize").first.click()
    dialog = tab.locator(".modal-ux")
    await dialog.locator("input").first.fill(api.admin_token)
    await dialog.locator("button.authorize").click()
    await dialog.locator("button.btn-done").click()
    await shots.take(tab, "authorized")

    operation = tab.locator(".opblock-get").filter(
        has=tab.locator('[data-path="/health/pubsub/simple"]'))
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    await status.first.wait_for(timeout=30_000)
    assert (await status.first.inner_text()).strip() == "200"
    body = await operation.locator(".live-responses-table .response").first.inner_text()
    assert '"channel"' in body
    assert '"latency_ms"' in body
    # only the response: the curl line above it shows the token
    await operation.locator(".live-responses-table .response").first.screenshot(
        path=str(shots.dir / "03-call-200.png"))

    assert "/docs/assets/swagger-ui-bundle.js" in offline.served
    assert "/docs/assets/swagger-ui.css" in offline.served
    assert "/openapi.json" in offline.served
    assert "/health/pubsub/simple" in offline.served
    offline.check()


async def test_redoc_renders_offline(api: ApiServer, page: tuple[Page, Offline]) -> None:
    tab, offline = page
    shots = Shots("docs_redoc")
    response = await tab.goto(f"{api.base_url}/redoc")
    assert response is not None
    assert response.status == 200
    assert "script-src 'self';" in response.headers["content-security-policy"]
    await wait_for(tab, "!!document.querySelector('.api-info h1')")
    title = await tab.locator(".api-info h1").first.inner_text()
    assert "salon-sessions onboarding API" in title
    await wait_for(tab, "document.body.innerText.includes('Cancel the pending pairing code')")
    await shots.take(tab, "loaded")
    assert "/docs/assets/redoc.standalone.js" in offline.served
    offline.check(tolerated="redoc/logo-mini.svg")


async def test_the_openapi_document_declares_the_bearer_scheme(api: ApiServer) -> None:
    async with api.client() as http:
        schema = (await http.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"]}
    paths = schema["paths"]
    for path, method in (("/v1/sessions", "post"), ("/v1/sessions/{company_id}", "get"),
                         ("/v1/sessions/{company_id}/pairing-code", "delete"),
                         ("/health/pubsub/simple", "get")):
        assert paths[path][method]["security"] == [{"bearerAuth": []}], (path, method)
    for path in ("/healthz", "/readyz", "/metrics", "/admin"):
        assert "security" not in paths[path]["get"], path
    for page in ("/docs", "/onboarding/{company_id}"):
        assert page not in paths
    for method in ("get", "post"):
        assert paths["/v1/sessions/{company_id}/link/renew" if method == "post"
                     else "/v1/sessions"][method]["security"] == [{"bearerAuth": []}]
    assert "/redoc" not in paths
