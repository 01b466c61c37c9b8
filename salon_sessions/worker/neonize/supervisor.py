"""The supervisor of the `neonize` driver: one WhatsApp client at a time, and what follows it.

One task runs one Go client at a time (a `GoAttempt`, `neonize.go`). A device found in the
store (`DeviceRecord.stored_device`) is resumed by its JID; otherwise a new device shows QR
codes. The handlers never start or stop a client themselves: they ask for an `Outcome`
(`request`; the first one wins) and the supervisor ends the attempt, retires its client
(`neonize.retire`), waits, and starts the next one:

- a connect error (the network, a proxy, the store) ends the attempt; it is reported once
  per outage as `Disconnected(will_reconnect=True)` and retried with exponential backoff;
- login sockets that expire without a link count towards `max_login_cycles`, then the
  driver halts until `start()` or a pairing code request (`restart`);
- a client that may hold WhatsApp's stream must have returned before the next starts, and
  too many parked login clients end the process (`on_fatal`): two clients with the same
  credentials replace each other's stream, and parked threads are never freed;
- a linked client that stays unconnected is restarted (`watch`).

Kept apart from the event handlers so that the client's lifecycle reads in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from salon_sessions.core.backoff import Backoff
from salon_sessions.worker.driver import Disconnected, LoggedOut
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.device import DeviceRecord
from salon_sessions.worker.neonize.go import (
    AttemptPhase,
    AttemptPost,
    GoAttempt,
    GoOps,
    load_neonize,
)
from salon_sessions.worker.neonize.retire import ClientRetirer
from salon_sessions.worker.neonize.state import ClientRun, LoginSocket

LOGGED_OUT_RESTART_DELAY_S: Final = 2.0
WATCHDOG_TICK_S: Final = 5.0

OutcomeKind = Literal["finished", "restart", "halt", "stop"]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """Why an attempt ends and what comes next."""

    kind: OutcomeKind
    reason: str = ""
    delay: float | None = None
    """Seconds before the next attempt; None: the backoff decides."""
    fresh: bool = False
    """Start a new device (no resume)."""
    login_cycle: bool = False
    """A login socket expired without a link (counts towards `max_login_cycles`)."""
    needs_lock: bool = False
    """Start the next client only if the worker still holds the session lock."""


@dataclasses.dataclass(frozen=True, slots=True)
class GoClientSettings:
    """What each Go client is started with (never logged: URLs hold secrets)."""

    database_url: str
    proxy_url: str | None
    ops: GoOps | None = None


class AttemptSupervisor:
    """Runs the clients of one session, one at a time (see the module docstring)."""

    def __init__(self, ctx: DriverContext, *, run: ClientRun, login: LoginSocket,
                 device: DeviceRecord, retirer: ClientRetirer, go: GoClientSettings,
                 post: AttemptPost, backoff: Backoff, max_login_cycles: int,
                 lock_held: Callable[[], bool], on_restart: Callable[[str], None],
                 on_fatal: Callable[[str], None],
                 on_device_gone: Callable[[LoggedOut], Awaitable[None]]) -> None:
        if max_login_cycles < 1:
            raise ValueError("max_login_cycles must be at least 1")
        self._ctx = ctx
        self._run = run
        self._login = login
        self._device = device
        self.retirer = retirer
        self._go = go
        self._post = post
        self._backoff = backoff
        self.max_login_cycles = max_login_cycles
        self.lock_held = lock_held
        self.on_restart = on_restart
        """`on_restart(reason)`: the driver restarted a client by itself (counted)."""
        self._on_fatal = on_fatal
        self._on_device_gone = on_device_gone
        self._rng = random.Random()
        self._slow_backoff = Backoff(base=ctx.policy.slow_base_s, cap=ctx.policy.slow_cap_s)

        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.halted: str | None = None
        """Why the supervisor stopped reconnecting, or None while it runs or before start."""
        self.attempt: GoAttempt | None = None
        """The client that describes the session now (None between clients)."""
        self.outcome: asyncio.Future[Outcome] | None = None
        """What ends the current attempt (set by `request`)."""
        self.failures = 0
        self._slow_failures = 0
        self.login_cycles = 0
        self.down_reported = False

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        """The supervisor task runs (it may be pausing between clients)."""
        return self._task is not None and not self._task.done()

    @property
    def started(self) -> bool:
        """`start` was called and `stop` was not since (the task may have ended)."""
        return self._task is not None

    async def start(self) -> None:
        """Start supervising (nothing when it runs already)."""
        if self.running:
            return
        await asyncio.to_thread(load_neonize)
        self._stop.clear()
        self.halted = None
        self.login_cycles = 0
        self.failures = 0
        self._spawn()

    async def restart(self) -> None:
        """Supervise again after a halt (the login cycles count from zero)."""
        await self.stop()
        self._stop.clear()
        self.halted = None
        self.login_cycles = 0
        self._spawn()

    async def stop(self) -> None:
        """End the current client and the supervisor task."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        self.request(Outcome("stop", "stop requested"))
        try:
            await task
        except Exception:
            self._ctx.log.exception("the neonize supervisor failed")

    def running_client(self) -> GoAttempt | None:
        """The current client if it runs and is connected (what a Go call needs)."""
        attempt = self.attempt
        if (not self._run.connected or attempt is None
                or attempt.phase is not AttemptPhase.RUNNING):
            return None
        return attempt

    def request(self, outcome: Outcome) -> None:
        """Ask the supervisor to end the current attempt (first request wins)."""
        future = self.outcome
        if future is not None and not future.done():
            future.set_result(outcome)

    def restart_client(self, reason: str) -> None:
        """Restart the current client on the driver's own account (counted)."""
        self.on_restart(reason)
        self.request(Outcome("restart", reason, delay=0.0))

    def slow_delay(self) -> float:
        """The next pause after a refusal nobody explained (never a fast loop)."""
        self._slow_failures += 1
        return self._slow_backoff.delay(self._slow_failures, self._rng)

    def connected(self) -> None:
        """The socket is up: the failure counts and the outage report start over."""
        self.failures = self._slow_failures = 0
        self.down_reported = False
        self.login_cycles = 0

    async def finished(self, attempt: GoAttempt, reason: str) -> None:
        """A client's `Neonize()` returned: the current one ends its attempt; a retired
        one's store connections are closed again (they may have been opened late)."""
        if attempt is self.attempt:
            self.request(Outcome("finished", reason))
        else:
            await self.retirer.finished(attempt)

    # ------------------------------------------------------------------ the loop
    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._supervise(),
                                         name=f"neonize-{self._ctx.company_id}")

    async def _supervise(self) -> None:
        log = self._ctx.log
        fresh = False
        try:
            while not self._stop.is_set():
                try:
                    jid = None if fresh else await self._device.stored_device()
                except Exception as exc:
                    self.failures += 1
                    await self.report_down(f"session store unavailable: "
                                           f"{self._ctx.scrub(str(exc)) or type(exc).__name__}")
                    await self._pause(self._backoff.delay(self.failures, self._rng))
                    continue
                fresh = False
                refusal = (self.retirer.refusal(jid)
                           or await self.retirer.holder_gone())
                if refusal is not None:
                    await self._halt_fatally(refusal)
                    break
                outcome = await self._run_attempt(jid)
                if outcome.kind == "stop" or self._stop.is_set():
                    break
                if outcome.kind == "halt":
                    self.halted = outcome.reason
                    log.warning("not reconnecting: %s", outcome.reason)
                    break
                delay: float
                if outcome.kind == "finished":
                    self.failures += 1
                    if jid is not None and not await self._device.still_registered(jid):
                        await self._on_device_gone(LoggedOut(reason="device_removed",
                                                             on_connect=True))
                        delay = LOGGED_OUT_RESTART_DELAY_S
                        fresh = True
                    else:
                        await self.report_down("connection failed: "
                                               f"{outcome.reason or 'the client stopped'}")
                        delay = self._backoff.delay(self.failures, self._rng)
                else:  # restart
                    fresh = outcome.fresh
                    if outcome.login_cycle:
                        self.login_cycles += 1
                        if self.login_cycles >= self.max_login_cycles:
                            self.halted = "login_expired"
                            log.info("no link after %d login sockets; waiting for start() "
                                     "or a pairing code request", self.login_cycles)
                            break
                    if outcome.delay is not None:
                        delay = outcome.delay
                    else:
                        self.failures += 1
                        delay = self._backoff.delay(self.failures, self._rng)
                log.info("reconnecting in %.1f s (%s)", delay,
                         outcome.reason[:200] or outcome.kind)
                await self._pause(delay)
                if outcome.needs_lock and not self.lock_held():
                    self.halted = f"{outcome.reason}; the session lock is not held"
                    log.warning("not reconnecting: %s", self.halted)
                    await self._ctx.emit(Disconnected(reason=self.halted,
                                                      will_reconnect=False))
                    break
        except Exception:
            self.halted = "internal error"
            log.exception("the neonize supervisor failed; not reconnecting")
            with contextlib.suppress(Exception):
                await self._ctx.emit(Disconnected(reason="driver error", will_reconnect=False))
        finally:
            self._run.connected = False

    async def _run_attempt(self, jid: str | None) -> Outcome:
        loop = asyncio.get_running_loop()
        go = self._go
        attempt = GoAttempt(company_id=self._ctx.company_id, database_url=go.database_url,
                            jid=jid, proxy_url=go.proxy_url, post=self._post,
                            log=self._ctx.log, scrub=self._ctx.scrub, ops=go.ops,
                            message_wait_s=self._ctx.policy.message_wait_s)
        self.attempt = attempt
        self.outcome = loop.create_future()
        self._login.reset()
        if jid is not None:
            self._device.current = jid
        self._run.reset(linked=self._device.current is not None)
        self._ctx.log.info("starting a WhatsApp client (%s)",
                           "resuming the stored device" if jid else "new device: QR login")
        outcome_future = self.outcome
        attempt.start()
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {outcome_future, stopper}
        try:
            while not any(f.done() for f in waiting):
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED,
                                   timeout=min(WATCHDOG_TICK_S, self._ctx.policy.watchdog_s))
                await self.watch(attempt)
            outcome = (outcome_future.result() if outcome_future.done()
                       else Outcome("stop", "stop requested"))
        finally:
            stopper.cancel()
            self.outcome = None
            await self.retire(attempt)
        return outcome

    async def watch(self, attempt: GoAttempt) -> None:
        """The watchdog: a linked client that stays unconnected past the bound is restarted
        (whatsmeow gives up on a failed reconnect after pairing, and a client can hang)."""
        since = self._run.unconnected_since
        if (since is None or self._run.connected or attempt is not self.attempt
                or attempt.phase is AttemptPhase.FINISHED):
            return
        waited = time.monotonic() - since
        if waited < self._ctx.policy.watchdog_s:
            return
        self._ctx.log.warning("linked but not connected for %.0f s; restarting the WhatsApp "
                              "client", waited)
        self._run.unconnected_since = None
        await self._ctx.emit(Disconnected(reason=f"not connected for {waited:.0f} s; "
                                                 "restarting the WhatsApp client",
                                          will_reconnect=True))
        self.restart_client("not_connected")

    async def _halt_fatally(self, reason: str) -> None:
        self.halted = reason
        self._ctx.log.error("not starting another WhatsApp client: %s", reason)
        await self._ctx.emit(Disconnected(reason=reason[:1024], will_reconnect=False))
        self._on_fatal(reason)

    async def retire(self, attempt: GoAttempt) -> None:
        """The attempt no longer describes the session; its client is stopped
        (`ClientRetirer.retire`)."""
        self.attempt = None
        self._run.connected = False
        self._login.ready.clear()
        await self.retirer.retire(attempt)

    async def report_down(self, reason: str) -> None:
        """WhatsApp is unreachable: reported once per outage."""
        self._run.connected = False
        if self.down_reported:
            self._ctx.log.debug("still down: %s", reason)
            return
        self.down_reported = True
        self._ctx.log.warning("WhatsApp unreachable, retrying: %s", reason)
        await self._ctx.emit(Disconnected(reason=reason[:1024], will_reconnect=True))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(seconds, 0.0))
