"""Go callbacks onto the event loop, in order.

Go calls back on its own threads (`neonize_go.GoAttempt`); nothing there may touch the
driver's state. `post` hands each callback to the loop (thread-safe), where a `note` hook
sees it at once (the login socket is tracked before the queue, so that a pairing code
request does not wait behind a busy sink) and a queue keeps the order for one consumer task
that hands each item to the driver's router. An inbound message that cannot be queued, or
is still queued when the driver closes, is settled as not stored at once: its Go thread
waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.go import GoAttempt, GoCallback, PendingMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Callback:
    """One Go callback, queued: which client said it, what kind of thing, and the thing."""

    attempt: GoAttempt
    kind: GoCallback
    payload: Any
    """`str` for QR, LOGIN and FINISHED, a protobuf for EVENT, a `PendingMessage` for
    MESSAGE, a `neonize_logs.LogFact` for MARKER (see `GoCallback`)."""


def unqueued(payload: Any) -> None:
    """A callback that will never be handled: release a Go thread waiting on it."""
    if isinstance(payload, PendingMessage):
        payload.settle(False)


class CallbackInbox:
    """The queue between Go's threads and the driver's handlers (see the docstring)."""

    def __init__(self, ctx: DriverContext, *, note: Callable[[Callback], None],
                 route: Callable[[Callback], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._note_hook = note
        self._route = route
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Callback] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._closed = False

    def open(self) -> None:
        """Start the consumer on the running loop (nothing when it runs already)."""
        self.loop = asyncio.get_running_loop()
        if self._consumer is None or self._consumer.done():
            self._queue = asyncio.Queue()
            self._consumer = asyncio.create_task(
                self._consume(), name=f"neonize-events-{self._ctx.company_id}")

    def post(self, attempt: GoAttempt, kind: GoCallback, payload: Any) -> None:
        """From Go threads: queue a callback onto the event loop (thread-safe). A message
        that cannot be queued is settled as not stored at once (its Go thread waits)."""
        loop = self.loop
        if loop is None:
            unqueued(payload)
            return
        try:
            loop.call_soon_threadsafe(self._note, Callback(attempt, kind, payload))
        except RuntimeError:  # the loop is closed
            unqueued(payload)

    def _note(self, item: Callback) -> None:
        self._note_hook(item)
        if self._queue is not None and not self._closed:
            self._queue.put_nowait(item)
        else:
            unqueued(item.payload)

    async def _consume(self) -> None:
        self.loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            try:
                await self._route(item)
            except Exception:
                self._ctx.log.exception("handling a neonize %s failed", item.kind)

    async def close(self) -> None:
        """Stop the consumer; settle what is still queued (nothing is queued after)."""
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        while self._queue is not None and not self._queue.empty():
            unqueued(self._queue.get_nowait().payload)
