"""The operator process: leader election, then kopf and the background loops.

    /metrics /healthz /readyz ── always
    Lease ── standby until acquired ──► kopf (reconcile, finalizer, watches)
                                        status writer (coalesced patches) ◄─┐
                                        events consumer (whatsapp:events:*) ┤
                                        heartbeat reconciler (state hashes) ┤
                                        health pinger (per-session pings) ──┤
                                        status audit (foreign edits) ───────┘
                                        session credentials (Redis users, Secrets)
                                        pending cleanups (credentials left
                                          behind while PostgreSQL was down)
                                        Kubernetes Event recorder

Everything runs in one event loop. When the Lease is lost the process stops everything and
exits non-zero (the Deployment restarts it as a standby); on SIGTERM it finishes in-flight
status patches and releases the Lease so that the standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import kopf
from redis.asyncio import Redis

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.events import ConnectedEvent, Event
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.settings import OperatorSettings
from salon_sessions.core.subscriber import Gap
from salon_sessions.operator import handlers
from salon_sessions.operator.acl_denials import AclDenials
from salon_sessions.operator.audit import StatusAudit
from salon_sessions.operator.cleanups import PendingCleanups
from salon_sessions.operator.consumer import EventsConsumer
from salon_sessions.operator.health import HealthPinger
from salon_sessions.operator.heartbeat import HeartbeatReconciler
from salon_sessions.operator.http import make_app, serve
from salon_sessions.operator.kube import Kube, KubeError, load_configuration
from salon_sessions.operator.leader import LeaderElector
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.pods import observe_pod
from salon_sessions.operator.reconciler import Reconciler
from salon_sessions.operator.recorder import EventRecorder
from salon_sessions.operator.redis_persistence import RedisPersistenceGauges
from salon_sessions.operator.refusals import TenancyRefusals
from salon_sessions.operator.registry import Registry, Session
from salon_sessions.operator.status_writer import StatusWriter
from salon_sessions.operator.tenancy import SessionCredentials

log = logging.getLogger(__name__)


class Operator:
    def __init__(self, settings: OperatorSettings, metrics: OperatorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stopping = asyncio.Event()
        self.registry = Registry(on_new=self._on_new_session,
                                 horizon=Horizon(settings.max_event_skew_s))
        self.role = "starting"
        self.elector: LeaderElector | None = None
        self.consumer: EventsConsumer | None = None
        self.heartbeat: HeartbeatReconciler | None = None
        self.kopf_ready = asyncio.Event()
        metrics.watch_sessions(lambda: [(s.model.phase, s.model.linked, s.model.connected)
                                        for s in self.registry])

    # ---- probes ---------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if self.role == "standby":
            return True, "standby"
        if self.role != "leader" or not self.kopf_ready.is_set():
            return False, self.role
        if self.consumer is None or not self.consumer.subscriber.subscribed.is_set():
            return False, "leader (events subscription down)"
        return True, "leader"

    def _on_new_session(self, _: Session) -> None:
        if self.heartbeat is not None:
            self.heartbeat.trigger()

    def lease_namespace(self) -> str:
        s = self.settings
        return (s.lease_namespace or next(iter(s.namespaces), None)
                or os.environ.get("POD_NAMESPACE") or "default")

    # ---- lifecycle --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def run(self) -> int:
        """Run until SIGTERM (0) or a lost Lease / a crashed component (1)."""
        s = self.settings
        self.install_signal_handlers()
        http = None
        if s.metrics_port:
            http = await serve(make_app(self.metrics.registry, self.readiness), s.http_host,
                               s.metrics_port)
        kube = Kube(await load_configuration(max_connections=s.status_concurrency + 16))
        try:
            if s.leader_election:
                self.elector = LeaderElector(kube, self.lease_namespace(), s.lease_name,
                                             s.identity, duration_s=s.lease_duration_s,
                                             renew_s=s.lease_renew_s)
                self.role = "standby"
                acquired = asyncio.create_task(self.elector.acquire())
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait([acquired, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not acquired.done():
                    acquired.cancel()
                    return 0
            self.role = "leader"
            self.metrics.leader.set(1)
            return await self._lead(kube)
        finally:
            self.metrics.leader.set(0)
            if self.elector is not None:
                await self.elector.release()
            await kube.close()
            if http is not None:
                await http.cleanup()

    async def _lead(self, kube: Kube) -> int:
        s = self.settings
        redis: Redis = connect_redis(s.redis_url, client_name="salon-operator")
        admin: Redis = connect_redis(s.redis_admin_url, max_connections=4,
                                     client_name="salon-operator-acl")
        recorder = EventRecorder(kube, self.metrics, s.identity)
        writer = StatusWriter(kube, self.registry, self.metrics, recorder,
                              batch_s=s.status_batch_s, lazy_s=s.status_lazy_s,
                              concurrency=s.status_concurrency)
        pinger = HealthPinger(redis, self.registry, writer, self.metrics,
                              interval_s=s.ping_interval_s, timeout_s=s.ping_timeout_s,
                              threshold=s.ping_miss_threshold)
        self.heartbeat = heartbeat = HeartbeatReconciler(
            redis, self.registry, writer, self.metrics, interval_s=s.heartbeat_check_s,
            ttl_s=s.worker_heartbeat_ttl_s, horizon=Horizon(s.max_event_skew_s))

        def on_applied(session: Session, event: Event) -> None:
            heartbeat.heard_from(session.key)
            if isinstance(event, ConnectedEvent):
                pinger.ping_soon(session.namespace, session.name)

        credentials = SessionCredentials(s, kube, admin, self.registry, self.metrics)

        def on_gap(gap: Gap) -> None:
            credentials.on_gap(gap)  # first: the workers cannot log in until it is done
            heartbeat.on_gap(gap)

        self.consumer = EventsConsumer(redis, self.registry, writer, self.metrics,
                                       on_pong=pinger.on_pong, on_applied=on_applied,
                                       on_gap=on_gap, max_skew_s=s.max_event_skew_s)
        await self._prime_registry(kube)
        pending = PendingCleanups(kube, self.lease_namespace(), s.pending_cleanup_configmap,
                                  s.database_url.get_secret_value(), self.metrics, recorder,
                                  retry_s=s.pending_cleanup_retry_s, pooler=s.database_pooler)
        reconciler = Reconciler(s, kube, redis, writer, recorder, self.metrics, self.registry,
                                credentials, pending)
        audit = StatusAudit(kube, self.registry, writer, s.namespaces,
                            interval_s=s.status_resync_s)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, self.registry, reconciler, on_status=writer.observed,
                          on_pod=lambda session, pod: observe_pod(session, pod, writer,
                                                                  self.metrics))
        logging.getLogger("kopf").setLevel(s.kopf_log_level)
        kopf_stop = asyncio.Event()
        kopf_ready = asyncio.Event()
        scope: dict[str, Any] = ({"namespaces": s.namespaces} if s.namespaces
                                 else {"clusterwide": True})
        tasks = {
            asyncio.create_task(writer.run(), name="status-writer"),
            asyncio.create_task(recorder.run(), name="event-recorder"),
            asyncio.create_task(self.consumer.run(), name="events-consumer"),
            asyncio.create_task(heartbeat.run(), name="heartbeat"),
            asyncio.create_task(pinger.run(), name="pinger"),
            asyncio.create_task(audit.run(), name="status-audit"),
            asyncio.create_task(pending.run(), name="pending-cleanups"),
            asyncio.create_task(credentials.run(), name="credentials"),
            asyncio.create_task(AclDenials(admin, self.metrics,
                                           interval_s=s.acl_log_drain_s).run(),
                                name="acl-denials"),
            asyncio.create_task(TenancyRefusals(s.database_url.get_secret_value(), self.metrics,
                                                interval_s=s.acl_log_drain_s,
                                                pooler=s.database_pooler).run(),
                                name="tenancy-refusals"),
            asyncio.create_task(RedisPersistenceGauges(redis, self.metrics.registry).run(),
                                name="redis-persistence"),
        }
        waiters = {asyncio.create_task(self.stopping.wait(), name="stop")}
        if self.elector is not None:
            tasks.add(asyncio.create_task(self.elector.keep(), name="lease"))
            waiters.add(asyncio.create_task(self.elector.lost.wait(), name="lost"))
        ready_task = asyncio.create_task(self._when_kopf_ready(kopf_ready))
        # kopf waits at exit for tasks born after it started: start ours (and their
        # workers) first
        await asyncio.sleep(0.01)
        tasks.add(asyncio.create_task(kopf.operator(
            registry=registry, settings=handlers.kopf_settings(s), standalone=True,
            stop_flag=kopf_stop, ready_flag=kopf_ready, **scope), name="kopf"))
        done, _ = await asyncio.wait(tasks | waiters, return_when=asyncio.FIRST_COMPLETED)
        code = 0 if self.stopping.is_set() else 1
        for task in done:
            if task.get_name() not in ("stop",) and not task.cancelled() and task.exception():
                log.error("%s crashed", task.get_name(), exc_info=task.exception())
        if self.elector is not None and self.elector.lost.is_set():
            log.error("the Lease is lost: stopping (another replica is taking over)")
            code = 1
        log.info("operator stopping")
        kopf_stop.set()
        ready_task.cancel()
        kopf_task = next(t for t in tasks if t.get_name() == "kopf")
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(kopf_task), 10)
        if code == 0:
            await writer.drain(5)
            await recorder.drain(2)
        for task in tasks | waiters:
            task.cancel()
        await asyncio.gather(*tasks, *waiters, return_exceptions=True)
        for client in (redis, admin):
            with contextlib.suppress(Exception):
                await client.aclose()
        return code

    async def _prime_registry(self, kube: Kube) -> None:
        """Know every SalonSession before the first handler runs, so that which one owns a
        company (the oldest) is decided on the whole picture, not on the order of kopf's
        first events. Best effort: kopf's watch fills the registry anyway."""
        try:
            scopes: list[str | None] = list(self.settings.namespaces) or [None]
            for namespace in scopes:
                for item in await kube.list_sessions(namespace):
                    self.registry.observe(item)
        except KubeError as exc:
            log.warning("listing SalonSessions before the watch failed: %s", exc)
            return
        log.info("%d SalonSession(s) known before the watch starts", len(self.registry))

    async def _when_kopf_ready(self, flag: asyncio.Event) -> None:
        await flag.wait()
        self.kopf_ready.set()
        # kopf installs its own SIGTERM/SIGINT handlers when it starts; ours stop everything
        # in order (and stop kopf through its stop flag)
        self.install_signal_handlers()
