"""The session worker: one process per session pod, the same code for every driver.

    lock ─► driver.start(sink) ─► facts ─► SessionState ─► events on Redis, state hash,
                                                          project tables, bridge, hook

`Worker` only connects and composes; each job is an object of its own module, injected into
the ones that need it:

- `worker.lifecycle.SessionLifecycle`: wait for the session's lock (standby while another
  worker holds it), run the driver until SIGTERM, a lost lock or a restart request, close
  it, release;
- `worker.session.Session`: the driver's facts turned into the session's state, events,
  state hash and rows, and the onboarding's bound (`spec.link.expireAfter`);
- `worker.state_writer.StateHashWriter`: the one writer of the state hash and standby key;
- `worker.health.HealthResponder` and `worker.control_server.ControlServer`: answers to
  pings and control requests;
- `worker.announcer.Announcer`: the session's events on Redis;
- `worker.hook.PostConnect`: the post-connect hook;
- `worker.fence_watch.LoopFence`: the fence rule in the event loop.

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
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis

from salon_sessions.core import channels
from salon_sessions.core.events import EventSource
from salon_sessions.core.metrics import PublisherMetrics, SubscriberMetrics
from salon_sessions.core.publisher import Publisher
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.resource import DriverName
from salon_sessions.core.settings import WorkerSettings
from salon_sessions.core.subscriber import ResilientSubscriber
from salon_sessions.db.connections import create_pool
from salon_sessions.db.migrator import wait_for_migrations
from salon_sessions.worker import fence
from salon_sessions.worker.announcer import Announcer
from salon_sessions.worker.bridge import InboundWriter
from salon_sessions.worker.control_server import ControlServer
from salon_sessions.worker.driver import Driver
from salon_sessions.worker.fence_watch import LoopFence
from salon_sessions.worker.health import HealthResponder
from salon_sessions.worker.hook import PostConnect
from salon_sessions.worker.lifecycle import SessionLifecycle
from salon_sessions.worker.link_window import LinkWindow
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.outbound import OutboundSender
from salon_sessions.worker.pacing import Pacer, PacingPolicy
from salon_sessions.worker.session import Session
from salon_sessions.worker.state import SessionState
from salon_sessions.worker.state_writer import StateHashWriter
from salon_sessions.worker.stream_retention import session_keepers

log = logging.getLogger(__name__)
DriverFactory = Callable[["Worker"], Driver]


EXIT_DRIVER_UNSAFE = 70
"""Exit status of a worker whose driver can no longer run a WhatsApp client safely in this
process (EX_SOFTWARE): a client that would not stop, or too many parked login clients."""


def make_driver(worker: Worker) -> Driver:
    """The driver the session's spec names. The simulator is refused for other drivers."""
    s = worker.settings
    if s.driver is DriverName.SIMULATOR:
        from salon_sessions.worker.simulator.driver import SimulatorDriver, SimulatorTiming

        timing = SimulatorTiming(first_qr_s=s.simulator_first_qr_s,
                                 qr_period_s=s.simulator_qr_period_s,
                                 code_ttl_s=s.simulator_code_ttl_s)
        server = connect_redis(s.redis_url, max_connections=2,
                               client_name=f"salon-simulator:{worker.company}")
        return SimulatorDriver(worker.pool, server, worker.company, timing,
                               worker.subscriber_metrics, close_redis=True)
    from salon_sessions.worker.neonize.driver import NeonizeDriver, NeonizePolicy

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
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self.lock = SessionLock(settings.direct_database_url.get_secret_value(), self.company,
                                check_s=settings.lock_check_s)
        self.loop_fence = LoopFence(
            lock=self.lock, company_id=self.company, stopping=self.stopping, exit=self.exit,
            bounds=fence.FenceBounds(settings.lock_check_s, settings.lock_lost_exit_s))
        # set in run()
        self.redis: Redis
        """Commands (`redis_command_connections`, default 1 connection)."""
        self.pubsub_redis: Redis
        """The worker's one pub/sub connection (pings and control requests)."""
        self.pool: asyncpg.Pool
        self.hook: PostConnect
        self.writer: StateHashWriter
        self.session: Session
        self.lifecycle: SessionLifecycle
        self.health: HealthResponder
        self.control: ControlServer

    async def run(self) -> None:
        s = self.settings
        watchdog = asyncio.create_task(self.loop_fence.run(), name="fence-watchdog")
        try:
            # the Helm hook (or `salon-sessions migrate up`) migrates; a worker only waits
            await wait_for_migrations(s.direct_database_url.get_secret_value(),
                                      f"salon-migrate:{self.company}",
                                      timeout_s=s.migration_wait_s)
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
        self._compose()
        self._tasks = [
            watchdog,
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self.writer.heartbeat(self.lifecycle.holding),
                                name="heartbeat"),
            asyncio.create_task(self.session.keep_time(), name="code-expiry"),
        ]
        try:
            await self.lifecycle.run()
        finally:
            await self._shutdown()

    def _compose(self) -> None:
        """The worker's objects, once Redis and PostgreSQL are reachable."""
        s, redis, company, metrics = self.settings, self.redis, self.company, self.metrics
        announcer = Announcer(redis, Publisher(redis, self.publisher_metrics), self.source)
        pacer = Pacer(redis, company, PacingPolicy(
            enabled=s.send_pacing, rate_per_minute=s.send_rate_per_minute,
            burst=s.send_burst, new_contacts_per_hour=s.send_new_contacts_per_hour,
            new_contact_burst=s.send_new_contact_burst, jitter_s=s.send_jitter_s,
            breaker_s=s.send_breaker_s))
        outbound = OutboundSender(
            redis, company, self.pod, metrics, announcer.publish_error, pacer,
            typing_max_s=s.send_typing_max_s if s.send_typing else 0.0, poll_s=s.send_poll_s,
            idle_poll_s=s.send_idle_poll_s)
        url = s.post_connect_url
        self.hook = PostConnect(s.post_connect_hook, url.get_secret_value() if url else None,
                                self.pool, company, metrics, announcer.report_error)
        self.writer = StateHashWriter(redis=redis, settings=s, lock=self.lock,
                                      state=self.state, source=self.source, hook=self.hook,
                                      metrics_port=self.metrics_port)
        self.session = Session(
            settings=s, state=self.state, lock=self.lock,
            link=LinkWindow(redis, company, s.link_expire_after_s), writer=self.writer,
            announcer=announcer, inbound=InboundWriter(redis, company, metrics),
            outbound=outbound, hook=self.hook, pool=self.pool, metrics=metrics,
            driver_factory=lambda: self._driver_factory(self))
        self.lifecycle = SessionLifecycle(
            settings=s, lock=self.lock, fence=self.loop_fence, session=self.session,
            writer=self.writer, announcer=announcer, outbound=outbound,
            stream_keepers=session_keepers(redis, company, s.stream_retention_s,
                                           s.stream_max_entries, metrics),
            metrics=metrics, stopping=self.stopping)
        self.health = HealthResponder(redis=redis, company_id=company, source=self.source,
                                      state=self.state, metrics=metrics)
        self.control = ControlServer(
            redis=redis, company_id=company, default_region=s.default_region,
            session=self.session, lock=self.lock, writer=self.writer, announcer=announcer,
            metrics=metrics, request_restart=self.lifecycle.request_restart)

    async def _shutdown(self) -> None:
        await self.lifecycle.close_driver("worker stopping")
        self.hook.cancel()
        await self.lifecycle.finish()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.pool.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.pubsub_redis.aclose()

    def exit(self, code: int, why: str) -> None:
        """Stop, and exit with `code` so that the pod restarts (once: the first reason
        wins)."""
        if self.stopping.is_set():
            return
        log.critical("%s; exiting so that the pod restarts", why,
                     extra={"company_id": self.company})
        self.exit_code = code
        self.stopping.set()

    def exit_for_restart(self, why: str) -> None:
        """The driver cannot run a client safely in this process any more: stop, and exit
        with `EXIT_DRIVER_UNSAFE` so that the pod restarts (the credentials stay)."""
        self.exit(EXIT_DRIVER_UNSAFE, why)

    async def _listen(self) -> None:
        """Pings and control requests, on the worker's one pub/sub connection; answered
        only as the proven holder of the session's lock."""
        ping_channel = channels.health_ping_channel(self.company)
        control_channel = channels.control_channel(self.company)
        sub = ResilientSubscriber(self.pubsub_redis, [ping_channel, control_channel],
                                  name=f"worker-{self.company}",
                                  metrics=self.subscriber_metrics,
                                  on_gap=lambda gap: self._spawn(self.session.on_gap(gap)))
        async for message in sub.messages():
            if not self.lock.held:  # a standby (or a holder without a proof) stays silent
                if message.channel == ping_channel:
                    self.health.ignored()
                continue
            if message.channel == ping_channel:
                await self.health.on_ping(message.data)
            else:
                self._spawn(self.control.on_control(message.data))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
