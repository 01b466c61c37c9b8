"""The post-connect hook: an external call made after the session connects (the legacy
system's marketplace activation). It runs in the background with exponential backoff, is
recorded in `salon_post_connect_hooks` and reported (state hash, `error` events, metrics);
its failure never blocks or reverts `connected`.

`PostConnect` is the worker's declared slot for it: configured or not, started on each
connect unless a run is still going, and its status read by the state-hash writer (the
worker used to set an undeclared attribute and read it back with `getattr`). The rows are
written by `db.hooks`.

The call is one JSON POST, made with the standard library (`urllib.request`, imported on
first use) in a daemon thread: an HTTP client library such as aiohttp would stay in every
worker's memory (~9 MiB) for a call made once per salon. Environment proxies are ignored
(`ProxyHandler({})`), redirects followed, any status >= 300 is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections.abc import Awaitable, Callable

import asyncpg

from salon_sessions.core.backoff import Backoff
from salon_sessions.db import hooks
from salon_sessions.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
Report = Callable[[str, str], Awaitable[None]]


class PostConnectHook:
    def __init__(self, name: str, url: str, pool: asyncpg.Pool, company_id: str,
                 metrics: WorkerMetrics, report: Report, *,
                 backoff: Backoff | None = None, max_attempts: int = 12,
                 timeout_s: float = 10.0) -> None:
        self.name = name
        self._url = url
        self._pool = pool
        self._company = company_id
        self._metrics = metrics
        self._report = report
        self._backoff = backoff or Backoff(base=1.0, cap=300.0)
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self.status = "pending"

    async def already_done(self) -> bool:
        return await hooks.hook_succeeded(self._pool, self._company, self.name)

    async def run(self, phone: str | None) -> None:
        """Call the hook until it succeeds or the attempts run out."""
        if await self.already_done():
            self.status = "succeeded"
            return
        rng = random.Random()
        for attempt in range(1, self._max_attempts + 1):
            error = await self._call(phone)
            await self._record(attempt, error)
            if error is None:
                self.status = "succeeded"
                self._metrics.hook_attempts.labels(self.name, "ok").inc()
                log.info("post-connect hook %s succeeded (attempt %d)", self.name, attempt,
                         extra={"company_id": self._company})
                return
            self.status = "retrying"
            self._metrics.hook_attempts.labels(self.name, "error").inc()
            log.warning("post-connect hook %s failed (attempt %d): %s", self.name, attempt,
                        error, extra={"company_id": self._company})
            await self._report("post_connect_hook_failed",
                               f"{self.name} attempt {attempt}: {error}")
            await asyncio.sleep(self._backoff.delay(attempt, rng))
        self.status = "failed"
        await hooks.record_failed(self._pool, self._company, self.name)

    async def _call(self, phone: str | None) -> str | None:
        body = json.dumps({"company_id": self._company, "phone": phone,
                           "event": "connected"}).encode()
        try:
            status = await _in_thread(lambda: post_json(self._url, body, self._timeout_s))
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, a bad URL
            return type(exc).__name__
        return None if status < 300 else f"HTTP {status}"

    async def _record(self, attempt: int, error: str | None) -> None:
        await hooks.record_attempt(self._pool, self._company, self.name, attempt, error)


class PostConnect:
    """The worker's post-connect hook, when one is configured (`post_connect_url`)."""

    def __init__(self, name: str, url: str | None, pool: asyncpg.Pool, company_id: str,
                 metrics: WorkerMetrics, report: Report) -> None:
        self._make = (None if url is None else
                      lambda: PostConnectHook(name, url, pool, company_id, metrics, report))
        self._hook: PostConnectHook | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> str | None:
        """For the state hash: None until the hook has been started once."""
        return self._hook.status if self._hook is not None else None

    def start(self, phone: str | None) -> None:
        """The session connected: run the hook (afresh) in the background, unless a run is
        still going."""
        if self._make is None or (self._task is not None and not self._task.done()):
            return
        self._hook = self._make()
        self._task = asyncio.create_task(self._hook.run(phone), name="hook")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


def post_json(url: str, body: bytes, timeout_s: float) -> int:
    """POST `body` as JSON; the response status (an HTTP error status is returned, not
    raised). Blocking: run it in a thread."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


async def _in_thread(fn: Callable[[], int]) -> int:
    """`fn()` in a daemon thread (a call stuck until its timeout never holds up the
    worker's exit, as an `asyncio.to_thread` executor thread would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def settle(result: int | BaseException) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result: int | BaseException = fn()
        except BaseException as exc:
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=target, name="post-connect-hook", daemon=True).start()
    return await future
