"""The session worker: one process per session pod, the same code for every driver.

    lock ─► driver.start(sink) ─► facts ─► SessionState ─► events on Redis, state hash,
                                                          project tables, bridge, hook

Loop: wait for the session's lock (standby while another worker holds it), start the
driver, run until SIGTERM, a lost lock or a restart request, close the driver, release.

An onboarding is bounded (`spec.link.expireAfter`, `worker.link_window`): when it passes
without a link the driver is closed (no more QR codes or pairing codes are asked of
WhatsApp), the phase is `LinkExpired`, and the worker keeps the lock, its heartbeat and its
control channel, without a driver, until a renewal (`renew_link`) starts the driver again. A
worker that starts for an expired onboarding does not start its driver at all.

Only the proven holder (`SessionLock.held`: PostgreSQL confirmed the lock within the proof
deadline) writes the session's state hash and answers its pings and control requests; a
standby writes only its own `whatsapp:standby:<company>:<pod>`. A fence watchdog ticks every
second: it drops WhatsApp when the last lock proof is overdue and exits when the worker
stays unproven (`worker.fence`), whatever the path that should have noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels, control
from salon_sessions.core.codec import decode, encode
from salon_sessions.core.events import (
    ErrorData,
    EventData,
    EventSource,
    LinkedData,
    LinkExpiredData,
    LoggedOutData,
    PingEvent,
    PongData,
    QrData,
)
from salon_sessions.core.metrics import PublisherMetrics, SubscriberMetrics
from salon_sessions.core.phone import InvalidPhone, parse_phone, phone_from_user_jid
from salon_sessions.core.publisher import Publisher, PublishFailed
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.resource import DriverName
from salon_sessions.core.settings import WorkerSettings
from salon_sessions.core.subscriber import Gap, ResilientSubscriber
from salon_sessions.db.connections import create_pool
from salon_sessions.db.migrator import migrate_or_check
from salon_sessions.worker import fence
from salon_sessions.worker.bridge import InboundWriter
from salon_sessions.worker.driver import (
    Connected,
    Driver,
    DriverError,
    DriverEvent,
    InboundMessage,
    PairSuccess,
    QrCode,
)
from salon_sessions.worker.hook import PostConnectHook
from salon_sessions.worker.link_window import LinkWindow
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.outbound import OutboundSender
from salon_sessions.worker.pacing import Pacer, PacingPolicy
from salon_sessions.worker.state import RefusedError, SessionState
from salon_sessions.worker.stream_retention import StreamKeeper, keep_streams, session_keepers

log = logging.getLogger(__name__)
DriverFactory = Callable[["Worker"], Driver]
RESTATE_AFTER_GAP_S = (0.0, 3.0)
TICK_S = 1.0
TASK_STOP_S = 5.0


EXIT_DRIVER_UNSAFE = 70
"""Exit status of a worker whose driver can no longer run a WhatsApp client safely in this
process (EX_SOFTWARE): a client that would not stop, or too many parked login clients."""


def make_driver(worker: Worker) -> Driver:
    """The driver the session's spec names. The simulator is refused for other drivers."""
    s = worker.settings
    if s.driver is DriverName.SIMULATOR:
        from salon_sessions.worker.simulator import SimulatorDriver, SimulatorTiming

        timing = SimulatorTiming(first_qr_s=s.simulator_first_qr_s,
                                 qr_period_s=s.simulator_qr_period_s,
                                 code_ttl_s=s.simulator_code_ttl_s)
        server = connect_redis(s.redis_url, max_connections=2,
                               client_name=f"salon-simulator:{worker.company}")
        return SimulatorDriver(worker.pool, server, worker.company, timing,
                               worker.subscriber_metrics, close_redis=True)
    from salon_sessions.worker.neonize_driver import NeonizeDriver, NeonizePolicy

    proxy = s.proxy_url.get_secret_value() if s.proxy_url else None
    policy = NeonizePolicy(watchdog_s=s.neonize_watchdog_s,
                           stream_replaced_retry_s=s.neonize_stream_replaced_retry_s)
    driver: Driver = NeonizeDriver(
        s.database_url.get_secret_value(), worker.company, proxy_url=proxy, policy=policy,
        lock_held=lambda: worker.lock.held,
        on_restart=lambda reason: worker.metrics.client_restarts.labels(reason).inc(),
        on_fatal=worker.exit_for_restart, store_pool=worker.pool)
    return driver


class Worker:
    def __init__(self, settings: WorkerSettings, *, registry: CollectorRegistry = REGISTRY,
                 driver_factory: DriverFactory = make_driver, metrics_port: int = 0) -> None:
        self.settings = settings
        self.metrics_port = metrics_port
        self.company: str = settings.company_id
        self.pod = settings.pod_name
        self.registry = registry
        self.metrics = WorkerMetrics(registry)
        self.subscriber_metrics = SubscriberMetrics(registry)
        self.publisher_metrics = PublisherMetrics(registry)
        self._driver_factory = driver_factory
        self.state = SessionState()
        self.source = EventSource(self.company, settings.session_name)
        self.connected = asyncio.Event()
        self.stopping = asyncio.Event()
        self._restart = asyncio.Event()
        self._expire_now = asyncio.Event()
        """The onboarding's bound passed: close the driver, keep the lock."""
        self._renewed = asyncio.Event()
        self._driver_started = False
        self._link_verified_at = 0.0
        self._events_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._hook_task: asyncio.Task[None] | None = None
        self.driver: Driver | None = None
        self.lock_note = "starting"
        self.exit_code = 0
        self.fence_bounds = fence.FenceBounds(settings.lock_check_s, settings.lock_lost_exit_s)
        self.tick_at = time.monotonic()
        self.holding_since: float | None = None
        """Set from acquiring the lock until the driver is closed again (WhatsApp may be open)."""
        self.fence_file = fence.state_file()
        self.lock = SessionLock(settings.direct_database_url.get_secret_value(), self.company,
                                check_s=settings.lock_check_s)
        # set in run()
        self.redis: Redis
        """Commands (`redis_command_connections`, default 1 connection)."""
        self.pubsub_redis: Redis
        """The worker's one pub/sub connection (pings and control requests)."""
        self.pool: asyncpg.Pool
        self.publisher: Publisher
        self.inbound: InboundWriter
        self.outbound: OutboundSender
        self.stream_keepers: list[StreamKeeper]
        self.link: LinkWindow

    # ---- lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        watchdog = asyncio.create_task(self._fence_watchdog(), name="fence-watchdog")
        try:
            await migrate_or_check(s.direct_database_url.get_secret_value(),
                                   f"salon-migrate:{self.company}")
            self.redis = connect_redis(
                s.redis_url, max_connections=s.redis_command_connections,
                client_name=f"salon-commands:{self.company}")
            self.pubsub_redis = connect_redis(s.redis_url, max_connections=1,
                                              client_name=f"salon-pubsub:{self.company}")
            self.pool = await create_pool(s.database_url, f"salon-tables:{self.company}",
                                          pooler=s.database_pooler,
                                          max_size=s.database_pool_max,
                                          idle_s=s.database_pool_idle_s)
        except BaseException:
            watchdog.cancel()
            raise
        self.publisher = Publisher(self.redis, self.publisher_metrics)
        self.link = LinkWindow(self.redis, self.company, s.link_expire_after_s)
        self.inbound = InboundWriter(self.redis, self.company, self.metrics)
        pacer = Pacer(self.redis, self.company, PacingPolicy(
            enabled=s.send_pacing, rate_per_minute=s.send_rate_per_minute,
            burst=s.send_burst, new_contacts_per_hour=s.send_new_contacts_per_hour,
            new_contact_burst=s.send_new_contact_burst, jitter_s=s.send_jitter_s,
            breaker_s=s.send_breaker_s))
        self.outbound = OutboundSender(
            self.redis, self.company, self.pod, self.metrics, self._publish_error, pacer,
            typing_max_s=s.send_typing_max_s if s.send_typing else 0.0, poll_s=s.send_poll_s,
            idle_poll_s=s.send_idle_poll_s)
        self.stream_keepers = session_keepers(self.redis, self.company, s.stream_retention_s,
                                              s.stream_max_entries, self.metrics)
        self._tasks = [
            watchdog,
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._expiry(), name="code-expiry"),
        ]
        try:
            await self._sessions()
        finally:
            await self._shutdown()

    async def _sessions(self) -> None:
        while not self.stopping.is_set():
            self.lock_note = "waiting for the session lock"
            await self._write_standby()
            if not await self._until_stopping(self.lock.acquire()):
                return
            self.holding_since = time.monotonic()
            self.metrics.lock_held.set(1)
            self.lock_note = "holding the session lock"
            while True:
                outbound = asyncio.create_task(
                    self.outbound.run(self._driver(), self.connected), name="outbound")
                keeper = asyncio.create_task(keep_streams(
                    self.stream_keepers, self.settings.stream_trim_s, lambda: self.lock.held),
                    name="stream-retention")
                try:
                    await self._run_driver()
                finally:
                    await _cancel(outbound)
                    await _cancel(keeper)
                expired = self._expire_now.is_set()
                self._expire_now.clear()
                if (not expired or self.stopping.is_set() or self.lock.lost_at is not None):
                    break
                # the onboarding ended: WhatsApp is asked for nothing more; still the holder
                await self._close_driver("link expired")
                self.state.restarted()
                await self._write_state()
            lost = self.lock.lost_at is not None
            if self.stopping.is_set() and not lost:
                return  # _shutdown closes the driver, writes the final state and releases
            await self._close_driver("lock lost" if lost else "restart requested")
            self.holding_since = None
            await self.lock.release()
            self.metrics.lock_held.set(0)
            self.state.restarted()
            if lost:
                log.error("session lock lost: WhatsApp connection dropped",
                          extra={"company_id": self.company})
                await self._report_error("lock_lost", "the database connection that held the "
                                         "session lock was lost; reconnecting only after "
                                         "re-acquiring it")

    def _driver(self) -> Driver:
        if self.driver is None:
            self.driver = self._driver_factory(self)
        return self.driver

    async def _run_driver(self) -> None:
        """Start the driver and run until stopping, a lost lock or a restart request,
        whichever comes first - even while the driver is still starting."""
        start = asyncio.create_task(self._start_driver(), name="driver-start")
        waits = {asyncio.create_task(e.wait()) for e in
                 (self.stopping, self.lock.lost, self._restart, self._expire_now)}
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
            await _cancel(start)
        self._restart.clear()

    async def _start_driver(self) -> None:
        driver = self._driver()
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
        await driver.start(self.on_driver_event)
        self._driver_started = True
        await self._write_state()

    async def _until_link_window(self) -> None:
        """Return once linking may go on: at once while the onboarding's window is open
        (opening it if none is), else after a renewal. An expired onboarding is reported
        (phase `LinkExpired`, `link_expired` once per expiry) and its driver never
        started: a restarted worker asks WhatsApp for nothing."""
        await self.link.load()
        now = datetime.now(UTC)
        if self.link.started_at is None:
            await self.link.open(now)
        async with self._events_lock:
            if self.link.expired(now):
                await self._expire_link(now)
            else:
                self.state.link_window(self.link.expires_at())
            await self._write_state()
        while self.state.link_expired:
            self._renewed.clear()
            await self._renewed.wait()

    async def _expire_link(self, now: datetime) -> None:
        """Under `_events_lock`: the onboarding ends now (the caller stops the driver)."""
        self.state.link_window(self.link.expires_at())
        out = self.state.expire_link(self.link.expire_after_s, now)
        if out:
            log.info("no link within %d s: no more QR codes or pairing codes until the "
                     "onboarding is renewed", self.link.expire_after_s,
                     extra={"company_id": self.company})
        await self._publish(out)

    async def _close_driver(self, reason: str) -> None:
        driver, self.driver = self.driver, None
        self._driver_started = False
        if driver is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await driver.close()
        if self.state.connected:
            from salon_sessions.worker.driver import Disconnected

            await self.on_driver_event(Disconnected(reason,
                                                    will_reconnect=not self.stopping.is_set()))
        self.connected.clear()

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

    async def _shutdown(self) -> None:
        await self._close_driver("worker stopping")
        if self._hook_task is not None:
            self._hook_task.cancel()
        self.lock_note = "stopped"
        with contextlib.suppress(Exception):  # the final state, while still the holder
            async with asyncio.timeout(3):
                await self._write_state()
        self.holding_since = None
        with contextlib.suppress(Exception):
            await self.lock.release()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.pool.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.pubsub_redis.aclose()

    # ---- driver facts ---------------------------------------------------------------
    async def on_driver_event(self, event: DriverEvent) -> None:
        self.metrics.driver_events.labels(type(event).__name__).inc()
        if isinstance(event, InboundMessage):
            await self.inbound.inbound(event, self._driver())  # MessageNotStored: not acked
            self.outbound.nudge()  # its bot is likely to answer
            return
        async with self._events_lock:
            if isinstance(event, QrCode) and not self.state.linked:
                if self.link.started_at is None:
                    # a new login after a logout: a new onboarding, with its own bound
                    await self.link.open(datetime.now(UTC))
                    self.state.link_window(self.link.expires_at())
                elif await self._end_if_due():
                    return  # a QR after the bound is never shown
            out = self.state.apply(event)
            if isinstance(event, PairSuccess):
                await self._record_link(out)
                if self.state.linked:
                    await self.link.clear()
            for data in out:
                if isinstance(data, LoggedOutData):
                    await self._record_logout(data.reason)
            if isinstance(event, Connected):
                self.inbound.connected_since = datetime.now(UTC)
                self.connected.set()
                self._start_hook()
            elif not self.state.connected:
                self.connected.clear()
            self.metrics.connected.set(int(self.state.connected))
            self.metrics.linked.set(int(self.state.linked))
            await self._write_state()
            await self._publish(out)

    async def _publish(self, out: list[EventData]) -> None:
        for data in out:
            with contextlib.suppress(RedisError, OSError):
                if isinstance(data, QrData):
                    await self.redis.set(channels.latest_qr_key(self.company), data.code,
                                         ex=max(data.timeout_s, 5))
                elif isinstance(data, LinkedData | LoggedOutData | LinkExpiredData):
                    await self.redis.delete(channels.latest_qr_key(self.company))
            try:
                await self.publisher.publish(self.source.event(data))
            except PublishFailed as exc:
                # the state hash still carries the truth; the operator re-reads it
                log.error("event lost: %s", exc, extra={"company_id": self.company})

    async def _report_error(self, code: str, message: str) -> None:
        await self._publish([ErrorData(code=code, message=message[:2048])])

    async def _publish_error(self, data: ErrorData) -> None:
        await self._publish([data])

    async def _record_link(self, out: list[EventData]) -> None:
        linked = next((d for d in out if isinstance(d, LinkedData)), None)
        if linked is None:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO salon_sessions (company_id, namespace, resource_name, device_jid,
                                            phone, link_method, linked_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, now(), now())
                ON CONFLICT (company_id) DO UPDATE SET device_jid = EXCLUDED.device_jid,
                    phone = EXCLUDED.phone, link_method = EXCLUDED.link_method,
                    linked_at = now(), logged_out_at = NULL, updated_at = now()
                """,
                self.company, self.settings.namespace, self.settings.session_name,
                linked.jid, linked.phone, linked.method.value if linked.method else None)
            await conn.execute(
                "INSERT INTO salon_link_history (company_id, action, method, device_jid, "
                "phone, actor) VALUES ($1, 'linked', $2, $3, $4, $5)",
                self.company, linked.method.value if linked.method else None, linked.jid,
                linked.phone, f"worker:{self.pod}")

    async def _record_logout(self, reason: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE salon_sessions SET device_jid = NULL, logged_out_at = now(), "
                "linked_at = NULL, updated_at = now() WHERE company_id = $1", self.company)
            await conn.execute(
                "INSERT INTO salon_link_history (company_id, action, actor, reason) "
                "VALUES ($1, 'logged_out', $2, $3)", self.company, f"worker:{self.pod}",
                reason[:1024])

    def _start_hook(self) -> None:
        url = self.settings.post_connect_url
        if url is None or (self._hook_task is not None and not self._hook_task.done()):
            return
        hook = PostConnectHook(self.settings.post_connect_hook, url.get_secret_value(),
                               self.pool, self.company, self.metrics, self._report_error)
        self.hook = hook
        self._hook_task = asyncio.create_task(hook.run(self.state.phone), name="hook")

    # ---- Redis: state hash, pings, control --------------------------------------------
    async def _write_state(self) -> None:
        """Write the session's state hash - only as the proven holder of its lock."""
        if not self.lock.held:
            return
        hook = getattr(self, "hook", None)
        state = replace(
            self.state.state_hash(), pod=self.pod, driver=self.settings.driver.value,
            session=self.settings.session_name, lock=self.lock_note,
            metrics_port=self.metrics_port, seq=self.source.next_seq(),
            heartbeat_at=datetime.now(UTC),
            post_connect_hook=None if hook is None else hook.status)
        fields = state.to_fields()
        await self._write_hash(channels.session_state_key(self.company), fields)

    async def _write_standby(self) -> None:
        """A worker without the lock says so in its own key, never in the session's hash."""
        await self._write_hash(channels.standby_key(self.company, self.pod), {
            "pod": self.pod, "lock": self.lock_note,
            "heartbeat_at": datetime.now(UTC).isoformat()})

    async def _write_hash(self, key: str, fields: dict[str, str]) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, self.settings.heartbeat_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("%s not written: %s", key, type(exc).__name__,
                        extra={"company_id": self.company})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.settings.heartbeat_ttl_s / 3))
            if self.lock.held:
                await self._write_state()
            elif self.holding_since is None:
                await self._write_standby()

    def exit_for_restart(self, why: str) -> None:
        """The driver cannot run a client safely in this process any more: stop, and exit
        with `EXIT_DRIVER_UNSAFE` so that the pod restarts (the credentials stay)."""
        if self.stopping.is_set():
            return
        log.critical("%s; exiting so that the pod restarts", why,
                     extra={"company_id": self.company})
        self.exit_code = EXIT_DRIVER_UNSAFE
        self.stopping.set()

    # ---- fencing --------------------------------------------------------------------
    def fence_state(self) -> fence.FenceState:
        """A snapshot for the fence rule (also read by the watchdog thread)."""
        return fence.FenceState(tick_at=self.tick_at, holding_since=self.holding_since,
                                proved_at=self.lock.proved_at, lost_at=self.lock.lost_at)

    async def _fence_watchdog(self) -> None:
        """Every tick: record that the loop runs, apply the fence rule, and write the state
        file the liveness probe reads."""
        while True:
            self.tick_at = time.monotonic()
            state = self.fence_state()
            verdict, why = fence.judge(state, self.fence_bounds, self.tick_at)
            if verdict is fence.Verdict.FENCE:
                self.lock.lose(why)
            elif verdict is fence.Verdict.EXIT and not self.stopping.is_set():
                log.critical("fence: %s; exiting so that the pod restarts", why,
                             extra={"company_id": self.company})
                self.lock.lose(why)
                self.exit_code = fence.EXIT_LOCK_LOST
                self.stopping.set()
            try:
                await asyncio.to_thread(fence.write_state_file, state, self.fence_bounds,
                                        self.fence_file, self.lock.backend_pid)
            except OSError as exc:
                log.warning("fence state file not written: %s", exc,
                            extra={"company_id": self.company})
            await asyncio.sleep(TICK_S)

    async def _expiry(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.state.expire():
                await self._write_state()
            if self.lock.held:
                await self._link_clock()

    async def _link_clock(self) -> None:
        """Once a second as the holder: write the onboarding's window to Redis if Redis
        missed it (expired too: a successor must find it), and, while the driver runs, end
        the onboarding when its bound passed without a link."""
        async with self._events_lock:
            if self.state.linked or self.link.started_at is None:
                return
            now = time.monotonic()
            if now - self._link_verified_at >= max(1.0, self.settings.heartbeat_ttl_s / 3):
                self._link_verified_at = now
                await self.link.verify()  # Redis lost it (no persistence, FLUSHALL)?
            else:
                await self.link.persist()
            await self._end_if_due()

    async def _end_if_due(self) -> bool:
        """Under `_events_lock`: end the onboarding if its bound passed while the driver
        runs (the driver is then closed by `_sessions`). True when it has ended."""
        if self.state.link_expired:
            return True
        now = datetime.now(UTC)
        if self.state.linked or not self._driver_started or not self.link.expired(now):
            return False
        await self._expire_link(now)
        await self._write_state()
        self._expire_now.set()
        return True

    async def _on_gap(self, gap: Gap) -> None:
        """Redis came back: whatever we published meanwhile was lost; restate it, now and
        again a little later for consumers that resubscribe after us."""
        self.link.forget_saved()  # written again by the link clock, if Redis lost it
        for delay in RESTATE_AFTER_GAP_S:
            await asyncio.sleep(delay)
            if not self.lock.held:
                continue
            await self._write_state()
            async with self._events_lock:
                await self._publish([self.state.status_event()])

    async def _listen(self) -> None:
        ping_channel = channels.health_ping_channel(self.company)
        control_channel = channels.control_channel(self.company)
        sub = ResilientSubscriber(self.pubsub_redis, [ping_channel, control_channel],
                                  name=f"worker-{self.company}",
                                  metrics=self.subscriber_metrics,
                                  on_gap=lambda gap: self._spawn(self._on_gap(gap)))
        async for message in sub.messages():
            if not self.lock.held:  # a standby (or a holder without a proof) stays silent
                if message.channel == ping_channel:
                    self.metrics.pings_ignored.inc()
                continue
            if message.channel == ping_channel:
                await self._on_ping(message.data)
            else:
                self._spawn(self._on_control(message.data))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _on_ping(self, raw: bytes) -> None:
        ping = decode(raw)
        if not isinstance(ping, PingEvent) or ping.company_id != self.company:
            reason = getattr(ping, "reason", "wrong_company_or_type")
            self.metrics.rejected.labels("health", str(reason)).inc()
            return
        pong = self.source.event(PongData(correlation_id=ping.data.correlation_id,
                                          phase=self.state.phase))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(channels.health_pong_channel(self.company), encode(pong))
            self.metrics.pings.inc()

    async def _on_control(self, raw: bytes) -> None:
        try:
            req = control.parse_request(raw, self.company)
        except control.ControlError as exc:
            self.metrics.rejected.labels("control", exc.code).inc()
            await self._report_error("bad_command", f"control request rejected: {exc}")
            return
        try:
            result = await self._execute(req)
            reply = control.reply_payload(req.id, result)
        except (control.ControlError, RefusedError, DriverError) as exc:
            err = exc if isinstance(exc, control.ControlError) else control.ControlError(
                exc.code, str(exc))
            reply = control.reply_payload(req.id, error=err)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(channels.control_reply_channel(self.company, req.id),
                                     reply)

    async def _execute(self, req: control.ControlRequest) -> dict[str, Any]:
        match req.cmd:
            case "state":
                return self.state.snapshot() | {"lock": self.lock_note}
            case "pairing_code":
                assert req.phone is not None
                return await self._pairing_code(req.phone)
            case "cancel_pairing_code":
                return await self._cancel_pairing_code()
            case "restart":
                self.state.check_restart(req.force)
                self._restart.set()
                return {"restarting": True}
            case "renew_link":
                return await self._renew_link()
            case "logout":
                if self.state.link_expired:
                    raise control.ControlError("link_expired", "no device is linked: the "
                                               "onboarding expired")
                driver = self._require_driver()
                await driver.logout()
                return {"logged_out": True}
        raise control.ControlError("unknown_command", req.cmd)  # pragma: no cover

    async def _renew_link(self) -> dict[str, Any]:
        """Linking goes on for another `expire_after_s` from now; an expired onboarding
        starts its driver again (QR codes resume)."""
        async with self._events_lock:
            if self.state.linked:
                raise RefusedError("already_linked", "the session is already linked")
            await self.link.renew(datetime.now(UTC))
            expires = self.link.expires_at()
            assert expires is not None
            self.state.renew_link(expires)
            await self._write_state()
            self._renewed.set()
            log.info("onboarding renewed for %d s", self.link.expire_after_s,
                     extra={"company_id": self.company})
            return {"phase": self.state.phase.value, "expires_at": expires.isoformat(),
                    "expire_after_s": self.link.expire_after_s}

    def _require_driver(self) -> Driver:
        if self.driver is None or not self.lock.held:
            raise control.ControlError("not_ready", "the worker does not hold the session "
                                       "(standing by or starting)")
        return self.driver

    async def _pairing_code(self, typed: str) -> dict[str, Any]:
        try:
            phone = parse_phone(typed, self.settings.default_region)
        except InvalidPhone as exc:
            raise control.ControlError("invalid", f"phone: {exc.why}") from None
        async with self._events_lock:
            await self._end_if_due()  # a request after the bound gets `link_expired`
            pending = self.state.current_code(phone)
            if pending is None:
                issued = await self._require_driver().request_pairing_code(phone)
                out = self.state.code_issued(phone, issued)
                await self._write_state()
                await self._publish(out)
                pending = self.state.pending_code
                assert pending is not None
            return {"code": pending.code, "phone": pending.phone,
                    "expires_at": pending.expires_at.isoformat()}

    async def _cancel_pairing_code(self) -> dict[str, Any]:
        """End the pending code (idempotent): the driver drops it, the state forgets it,
        and a code for another number may be requested at once."""
        async with self._events_lock:
            if self.state.linked:
                return {"cancelled": False}
            pending = self.state.cancel_code()
            if self.driver is not None:
                await self.driver.cancel_pairing_code()
            if pending is not None:
                await self._write_state()
            return {"cancelled": pending is not None}


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it a bounded time: a task that swallows its cancellation
    must not hold the worker (the fence watchdog bounds what happens meanwhile)."""
    task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(TASK_STOP_S):
            await task
