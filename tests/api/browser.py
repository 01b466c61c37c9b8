"""Debian's Chromium driven by Playwright (no downloaded browser), and page helpers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from playwright.async_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "onboarding"
PHONE_VIEWPORT = {"width": 390, "height": 844}
DEVICES: dict[str, dict[str, Any]] = {
    # Playwright's emulation of a phone: a touch screen, a mobile viewport (the page's own
    # device test reads `pointer: coarse` and the width), as on the salon's own phone
    "phone": {"viewport": PHONE_VIEWPORT, "is_mobile": True, "has_touch": True},
    "phone320": {"viewport": {"width": 320, "height": 568}, "is_mobile": True,
                 "has_touch": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}


class Shots:
    """Numbered screenshots of one test's steps, in `root`/<test>/ (default
    test-artifacts/onboarding/)."""

    def __init__(self, name: str, root: Path = SHOTS) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()
        self.n = 0

    async def take(self, page: Page, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


async def step(page: Page) -> str:
    return str(await page.evaluate("document.getElementById('app').dataset.step"))


async def wait_for(page: Page, expression: str, timeout_s: float = 30) -> None:
    """Poll a JavaScript expression until it is true. (`page.wait_for_function` evaluates
    strings with eval, which the page's Content-Security-Policy forbids.)"""
    try:
        async with asyncio.timeout(timeout_s):
            while not await page.evaluate(expression):
                await asyncio.sleep(0.05)
    except TimeoutError:
        state = await page.evaluate("[document.getElementById('app').dataset.step, "
                                    "window.__salon && window.__salon.trace]")
        raise AssertionError(f"timed out waiting for {expression}; page: {state}") from None


async def wait_step(page: Page, name: str, timeout_s: float = 30) -> None:
    await wait_for(page, f"document.getElementById('app').dataset.step === {json.dumps(name)}",
                   timeout_s)


async def trace(page: Page) -> list[str]:
    result: list[str] = await page.evaluate("window.__salon.trace")
    return result


async def wait_trace(page: Page, entry: str, count: int = 1, timeout_s: float = 30) -> None:
    await wait_for(page, f"window.__salon.trace.filter(e => e === {json.dumps(entry)}).length"
                   f" >= {count}", timeout_s)


def done_only_after_connected(entries: list[str]) -> bool:
    """The page went to "done" once, and only after it received a `connected` event."""
    if "step:done" not in entries or "event:connected" not in entries:
        return False
    return entries.index("event:connected") < entries.index("step:done")


async def fits_the_width(page: Page) -> bool:
    """No sideways scrolling (a 320 px phone is the narrowest tested)."""
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"))


def json_of(value: Any) -> str:
    return json.dumps(value)
