"""The session as its holder runs it: the driver, and its facts turned into the session's
state, events, state hash and rows.

    driver facts ─► SessionState ─► events (Announcer), state hash (StateHashWriter),
                                    salon_sessions rows (db.session_records), post-connect hook

It also keeps the onboarding's bound (`worker.link_window`): a driver is started only while
linking may go on, a QR after the bound is never shown, and the link clock ends the
onboarding when the bound passes without a link (`expire_now`: the lifecycle then closes the
driver and keeps the lock). Every change of the state happens under `events_lock`, so that
facts, control requests and the clock see one order.

Apart from the lifecycle (`worker.lifecycle`: lock, tenure, fence), which decides *when* a
driver runs, this object says *what* running it means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from salon_sessions.core.events import LinkedData, LoggedOutData
from salon_sessions.core.phone import InvalidPhone, phone_from_user_jid
from salon_sessions.core.settings import WorkerSettings
from salon_sessions.core.subscriber import Gap
from salon_sessions.db import session_records
from salon_sessions.worker.announcer import Announcer
from salon_sessions.worker.bridge import InboundWriter
from salon_sessions.worker.driver import (
    Connected,
    Disconnected,
    Driver,
    DriverFact,
    InboundMessage,
    PairSuccess,
    QrCode,
)
from salon_sessions.worker.hook import PostConnect
from salon_sessions.worker.link_window import LinkWindow
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.outbound import OutboundSender
from salon_sessions.worker.state import SessionState
from salon_sessions.worker.state_writer import StateHashWriter

log = logging.getLogger(__name__)
RESTATE_AFTER_GAP_S = (0.0, 3.0)


@dataclass(eq=False, kw_only=True)
class Session:
    """The holder's session: its driver, its state, and what each fact changes."""

    settings: WorkerSettings
    state: SessionState
    lock: SessionLock
    link: LinkWindow
    writer: StateHashWriter
    announcer: Announcer
    inbound: InboundWriter
    outbound: OutboundSender
    hook: PostConnect
    pool: asyncpg.Pool
    metrics: WorkerMetrics
    driver_factory: Callable[[], Driver]
    events_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    connected: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    driver: Driver | None = field(default=None, init=False)
    driver_started: bool = field(default=False, init=False)
    expire_now: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """The onboarding's bound passed: close the driver, keep the lock."""
    renewed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """The onboarding was renewed: an expired one may start its driver again."""
    _link_verified_at: float = field(default=0.0, init=False)

    def current_driver(self) -> Driver:
        """The session's driver, made on first use after each close."""
        if self.driver is None:
            self.driver = self.driver_factory()
        return self.driver

    # ---- driver facts ---------------------------------------------------------------
    async def on_driver_fact(self, fact: DriverFact) -> None:
        self.metrics.driver_events.labels(type(fact).__name__).inc()
        if isinstance(fact, InboundMessage):
            # MessageNotStored: not acked
            await self.inbound.inbound(fact, self.current_driver())
            self.outbound.nudge()  # its bot is likely to answer
            return
        async with self.events_lock:
            if isinstance(fact, QrCode) and not self.state.linked:
                if self.link.started_at is None:
                    # a new login after a logout: a new onboarding, with its own bound
                    await self.link.open(datetime.now(UTC))
                    self.state.link_window(self.link.expires_at())
                elif await self.end_if_due():
                    return  # a QR after the bound is never shown
            out = self.state.apply(fact)
            if isinstance(fact, PairSuccess):
                linked = next((d for d in out if isinstance(d, LinkedData)), None)
                if linked is not None:
                    await session_records.record_link(
                        self.pool, self.settings.company_id, self.settings.namespace,
                        self.settings.session_name, linked, self._actor)
                if self.state.linked:
                    await self.link.clear()
            for data in out:
                if isinstance(data, LoggedOutData):
                    await session_records.record_logout(self.pool, self.settings.company_id,
                                                        data.reason, self._actor)
            if isinstance(fact, Connected):
                self.inbound.connected_since = datetime.now(UTC)
                self.connected.set()
                self.hook.start(self.state.phone)
            elif not self.state.connected:
                self.connected.clear()
            self.metrics.connected.set(int(self.state.connected))
            self.metrics.linked.set(int(self.state.linked))
            await self.writer.write_state()
            await self.announcer.publish(out)

    @property
    def _actor(self) -> str:
        return f"worker:{self.settings.pod_name}"

    # ---- starting and closing the driver ----------------------------------------------
    async def start_driver(self) -> None:
        driver = self.current_driver()
        stored = await driver.stored_device()
        if stored is not None:
            try:
                phone: str | None = phone_from_user_jid(stored)
            except InvalidPhone:
                phone = None  # a LID device JID: the phone is learnt on connect
            self.state.resume_linked(stored, phone)
            await self.link.clear()  # linked: no onboarding to bound
        else:
            await self._until_link_window()
        await driver.start(self.on_driver_fact)
        self.driver_started = True
        await self.writer.write_state()

    async def _until_link_window(self) -> None:
        """Return once linking may go on: at once while the onboarding's window is open
        (opening it if none is), else after a renewal. An expired onboarding is reported
        (phase `LinkExpired`, `link_expired` once per expiry) and its driver never
        started: a restarted worker asks WhatsApp for nothing."""
        await self.link.load()
        now = datetime.now(UTC)
        if self.link.started_at is None:
            await self.link.open(now)
        async with self.events_lock:
            if self.link.expired(now):
                await self._expire_link(now)
            else:
                self.state.link_window(self.link.expires_at())
            await self.writer.write_state()
        while self.state.link_expired:
            self.renewed.clear()
            await self.renewed.wait()

    async def close_driver(self, reason: str, *, will_reconnect: bool) -> None:
        driver, self.driver = self.driver, None
        self.driver_started = False
        if driver is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await driver.close()
        if self.state.connected:
            await self.on_driver_fact(Disconnected(reason, will_reconnect=will_reconnect))
        self.connected.clear()

    # ---- the onboarding's bound -------------------------------------------------------
    async def _expire_link(self, now: datetime) -> None:
        """Under `events_lock`: the onboarding ends now (the caller stops the driver)."""
        self.state.link_window(self.link.expires_at())
        out = self.state.expire_link(self.link.expire_after_s, now)
        if out:
            log.info("no link within %d s: no more QR codes or pairing codes until the "
                     "onboarding is renewed", self.link.expire_after_s,
                     extra={"company_id": self.settings.company_id})
        await self.announcer.publish(out)

    async def end_if_due(self) -> bool:
        """Under `events_lock`: end the onboarding if its bound passed while the driver
        runs (the driver is then closed by the lifecycle). True when it has ended."""
        if self.state.link_expired:
            return True
        now = datetime.now(UTC)
        if self.state.linked or not self.driver_started or not self.link.expired(now):
            return False
        await self._expire_link(now)
        await self.writer.write_state()
        self.expire_now.set()
        return True

    async def keep_time(self) -> None:
        """Once a second: expire what is due in the state (a pairing code), and run the
        link clock as the holder."""
        while True:
            await asyncio.sleep(1)
            if self.state.expire():
                await self.writer.write_state()
            if self.lock.held:
                await self._link_clock()

    async def _link_clock(self) -> None:
        """Once a second as the holder: write the onboarding's window to Redis if Redis
        missed it (expired too: a successor must find it), and, while the driver runs, end
        the onboarding when its bound passed without a link."""
        async with self.events_lock:
            if self.state.linked or self.link.started_at is None:
                return
            now = time.monotonic()
            if now - self._link_verified_at >= max(1.0, self.settings.heartbeat_ttl_s / 3):
                self._link_verified_at = now
                await self.link.verify()  # Redis lost it (no persistence, FLUSHALL)?
            else:
                await self.link.persist()
            await self.end_if_due()

    async def on_gap(self, gap: Gap) -> None:
        """Redis came back: whatever we published meanwhile was lost; restate it, now and
        again a little later for consumers that resubscribe after us."""
        self.link.forget_saved()  # written again by the link clock, if Redis lost it
        for delay in RESTATE_AFTER_GAP_S:
            await asyncio.sleep(delay)
            if not self.lock.held:
                continue
            await self.writer.write_state()
            async with self.events_lock:
                await self.announcer.publish([self.state.status_event()])
