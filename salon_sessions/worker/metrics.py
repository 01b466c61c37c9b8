"""Prometheus metrics of the session worker (injectable registry, like core.metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.lock_held = Gauge(
            "salon_worker_lock_held", "1 while this worker holds its session's lock",
            registry=registry)
        self.connected = Gauge(
            "salon_worker_connected", "1 while the WhatsApp socket is open", registry=registry)
        self.linked = Gauge(
            "salon_worker_linked", "1 while the device is linked", registry=registry)
        self.driver_events = Counter(
            "salon_worker_driver_events", "Facts reported by the driver", ["kind"],
            registry=registry)
        self.client_restarts = Counter(
            "salon_worker_client_restarts",
            "WhatsApp clients the driver restarted by itself (reason: not_connected, "
            "reconnect_after_pairing_failed)", ["reason"], registry=registry)
        self.pings = Counter(
            "salon_worker_pings_answered", "Health pings answered with a pong",
            registry=registry)
        self.pings_ignored = Counter(
            "salon_worker_pings_ignored",
            "Health pings left unanswered: this worker does not hold (or cannot prove) the "
            "session's lock", registry=registry)
        self.rejected = Counter(
            "salon_worker_rejected", "Commands and messages rejected as bad input",
            ["source", "reason"], registry=registry)
        self.inbound = Counter(
            "salon_worker_inbound_messages", "Inbound messages written to the stream",
            ["sender"], registry=registry)
        self.outbound = Counter(
            "salon_worker_outbound_results", "Outbound send commands by result", ["status"],
            registry=registry)
        self.hook_attempts = Counter(
            "salon_worker_post_connect_hook_attempts", "Post-connect hook calls",
            ["hook", "result"], registry=registry)
