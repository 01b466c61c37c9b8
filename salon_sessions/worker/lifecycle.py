"""The session's lifecycle in a worker: wait for the session's lock (standby while another
worker holds it), run the driver as the holder until the worker stops, the lock is lost, a
restart is requested or the onboarding's bound passes, close the driver, release, again.

    standby ─► lock acquired ─► driver runs ─► (bound passed: driver closed, lock kept,
       ▲                                       until a renewal starts it again)
       └──── driver closed, lock released ◄── stop / lock lost / restart requested

Its own object because this is the one place that decides *when* WhatsApp may be open: a
driver runs only inside a tenure of the lock, and every exit from a tenure closes it first
(`LoopFence.holding_since` spans exactly that, for the fence rule). What running the driver
means is the session's (`worker.session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from salon_sessions.core.settings import WorkerSettings
from salon_sessions.worker.announcer import Announcer
from salon_sessions.worker.fence_watch import LoopFence
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.outbound import OutboundSender
from salon_sessions.worker.session import Session
from salon_sessions.worker.state_writer import StateHashWriter
from salon_sessions.worker.stream_retention import StreamKeeper, keep_streams

log = logging.getLogger(__name__)
TASK_STOP_S = 5.0


@dataclass(eq=False, kw_only=True)
class SessionLifecycle:
    """Lock tenures, and the driver run inside each (`run`); the end (`finish`)."""

    settings: WorkerSettings
    lock: SessionLock
    fence: LoopFence
    session: Session
    writer: StateHashWriter
    announcer: Announcer
    outbound: OutboundSender
    stream_keepers: list[StreamKeeper]
    metrics: WorkerMetrics
    stopping: asyncio.Event
    _restart: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def request_restart(self) -> None:
        """Close the driver and release the lock (then take it again): a control request."""
        self._restart.set()

    def holding(self) -> bool:
        """From acquiring the lock until the driver is closed again."""
        return self.fence.holding_since is not None

    async def run(self) -> None:
        session, lock = self.session, self.lock
        while not self.stopping.is_set():
            self.writer.lock_note = "waiting for the session lock"
            await self.writer.write_standby()
            if not await self._until_stopping(lock.acquire()):
                return
            self.fence.holding_since = time.monotonic()
            self.metrics.lock_held.set(1)
            self.writer.lock_note = "holding the session lock"
            while True:
                outbound = asyncio.create_task(
                    self.outbound.run(session.current_driver(), session.connected),
                    name="outbound")
                keeper = asyncio.create_task(keep_streams(
                    self.stream_keepers, self.settings.stream_trim_s, lambda: lock.held),
                    name="stream-retention")
                try:
                    await self._run_driver()
                finally:
                    await cancel(outbound)
                    await cancel(keeper)
                expired = session.expire_now.is_set()
                session.expire_now.clear()
                if (not expired or self.stopping.is_set() or lock.lost_at is not None):
                    break
                # the onboarding ended: WhatsApp is asked for nothing more; still the holder
                await self.close_driver("link expired")
                session.state.restarted()
                await self.writer.write_state()
            lost = lock.lost_at is not None
            if self.stopping.is_set() and not lost:
                return  # the worker's shutdown closes the driver, then `finish`
            await self.close_driver("lock lost" if lost else "restart requested")
            self.fence.holding_since = None
            await lock.release()
            self.metrics.lock_held.set(0)
            session.state.restarted()
            if lost:
                log.error("session lock lost: WhatsApp connection dropped",
                          extra={"company_id": self.settings.company_id})
                await self.announcer.report_error(
                    "lock_lost", "the database connection that held the session lock was "
                    "lost; reconnecting only after re-acquiring it")

    async def close_driver(self, reason: str) -> None:
        await self.session.close_driver(reason, will_reconnect=not self.stopping.is_set())

    async def _run_driver(self) -> None:
        """Start the driver and run until stopping, a lost lock or a restart request,
        whichever comes first - even while the driver is still starting."""
        start = asyncio.create_task(self.session.start_driver(), name="driver-start")
        waits = {asyncio.create_task(e.wait()) for e in
                 (self.stopping, self.lock.lost, self._restart, self.session.expire_now)}
        pending: set[asyncio.Task[Any]] = {start, *waits}
        try:
            while not pending.isdisjoint(waits):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if start in done:
                    start.result()  # a driver that cannot start fails the worker, as before
                if not done.isdisjoint(waits):
                    break
        finally:
            for task in (start, *waits):
                task.cancel()
            await cancel(start)
        self._restart.clear()

    async def _until_stopping(self, coro: Any) -> bool:
        """Run `coro` unless the worker stops first; True when it completed."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def finish(self) -> None:
        """The end of the worker, once the driver is closed: the final state written while
        still the holder, the lock released."""
        self.writer.lock_note = "stopped"
        with contextlib.suppress(Exception):  # the final state, while still the holder
            async with asyncio.timeout(3):
                await self.writer.write_state()
        self.fence.holding_since = None
        with contextlib.suppress(Exception):
            await self.lock.release()


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it a bounded time: a task that swallows its cancellation
    must not hold the worker (the fence watchdog bounds what happens meanwhile)."""
    task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(TASK_STOP_S):
            await task
