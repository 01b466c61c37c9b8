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
        self.stream_length = Gauge(
            "salon_worker_stream_length", "Entries in the session's stream",
            ["stream"], registry=registry)
        self.stream_groups = Gauge(
            "salon_worker_stream_groups",
            "Consumer groups reading the stream (0: no bot acknowledges what it reads)",
            ["stream"], registry=registry)
        self.stream_backlog = Gauge(
            "salon_worker_stream_backlog",
            "Entries a consumer group has not acknowledged (pending + not yet delivered)",
            ["stream", "group"], registry=registry)
        self.stream_oldest_unacked_age = Gauge(
            "salon_worker_stream_oldest_unacked_age_seconds",
            "Age of the oldest entry some consumer group has not acknowledged (0: none)",
            ["stream"], registry=registry)
        self.stream_retention = Gauge(
            "salon_worker_stream_retention_seconds",
            "Unacknowledged entries older than this are dropped", registry=registry)
        self.stream_max_entries = Gauge(
            "salon_worker_stream_max_entries",
            "A stream keeps at most this many entries, acknowledged or not",
            registry=registry)
        self.stream_dropped = Counter(
            "salon_worker_stream_dropped",
            "Entries dropped before every consumer group acknowledged them",
            ["stream", "cause"], registry=registry)
        self.outbound_delayed = Counter(
            "salon_worker_outbound_delayed",
            "Send commands held back (reason: pacing, new_contact, sending_paused)",
            ["reason"], registry=registry)
        self.sending_paused = Gauge(
            "salon_worker_sending_paused",
            "1 while sending is stopped because WhatsApp refused a send as rate-limited or "
            "restricted", registry=registry)
        self.inbound_not_stored = Counter(
            "salon_worker_inbound_not_stored",
            "Inbound messages that could not be written to the stream in time (left "
            "unacknowledged to WhatsApp, which delivers them again)", registry=registry)
