"""The post-connect hook: an external call made after the session connects (the legacy
system's marketplace activation). It runs in the background with exponential backoff, is
recorded in `salon_post_connect_hooks` and reported (state hash, `error` events, metrics);
its failure never blocks or reverts `connected`.

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
        row = await self._pool.fetchrow(
            "SELECT status FROM salon_post_connect_hooks WHERE company_id = $1 AND hook = $2",
            self._company, self.name)
        return row is not None and row["status"] == "succeeded"

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
        await self._pool.execute(
            "UPDATE salon_post_connect_hooks SET status = 'failed', updated_at = now() "
            "WHERE company_id = $1 AND hook = $2", self._company, self.name)

    async def _call(self, phone: str | None) -> str | None:
        body = json.dumps({"company_id": self._company, "phone": phone,
                           "event": "connected"}).encode()
        try:
            status = await _in_thread(lambda: post_json(self._url, body, self._timeout_s))
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, a bad URL
            return type(exc).__name__
        return None if status < 300 else f"HTTP {status}"

    async def _record(self, attempt: int, error: str | None) -> None:
        await self._pool.execute(
            """
            INSERT INTO salon_post_connect_hooks (company_id, hook, status, attempts, last_error,
                                                  succeeded_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'succeeded' THEN now() END, now())
            ON CONFLICT (company_id, hook) DO UPDATE SET
                status = EXCLUDED.status, attempts = salon_post_connect_hooks.attempts + 1,
                last_error = EXCLUDED.last_error, succeeded_at = EXCLUDED.succeeded_at,
                updated_at = now()
            """,
            self._company, self.name, "succeeded" if error is None else "pending", attempt,
            error)


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
