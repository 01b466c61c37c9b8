"""The operator's Prometheus metrics (the shared pub/sub families come from core.metrics).

One series per session, no more: `salon_operator_session_roundtrip_seconds{company_id}` (a
gauge, removed with the session). Every other label has a fixed set of values; the round-trip
histogram is fleet-wide (by company it was 17 series per session, 10,000 at 600 sessions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from salon_sessions.core.metrics import (
    LATENCY_BUCKETS,
    ConsumerMetrics,
    PublisherMetrics,
    SubscriberMetrics,
)
from salon_sessions.core.resource import Phase

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
CONSUMER = "operator"


PING_RESULTS: Final = ("sent", "answered", "missed", "no_receiver", "publish_failed")

class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.consumer = ConsumerMetrics(registry)
        self.subscriber = SubscriberMetrics(registry)
        self.publisher = PublisherMetrics(registry)
        self.reconcile_seconds = Histogram(
            "salon_operator_reconcile_seconds", "Duration of reconciliations", ["kind"],
            buckets=RECONCILE_BUCKETS, registry=registry)
        self.reconcile_errors = Counter(
            "salon_operator_reconcile_errors", "Reconciliations that failed (and are retried)",
            ["kind", "reason"], registry=registry)
        self.events_rejected = Counter(
            "salon_operator_events_rejected",
            "Decoded events the operator refused (unknown session, mismatched session, "
            "stale or duplicate seq, future timestamps, unexpected types)", ["reason"],
            registry=registry)
        self.event_status_lag = Histogram(
            "salon_operator_event_status_lag_seconds",
            "From an event's timestamp (worker clock) to its status patch being accepted",
            buckets=LAG_BUCKETS, registry=registry)
        self.status_patches = Counter(
            "salon_operator_status_patches", "Status patches sent to the API server",
            ["result"], registry=registry)
        self.status_patch_seconds = Histogram(
            "salon_operator_status_patch_seconds", "Duration of one status patch",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.k8s_events = Counter(
            "salon_operator_kube_events", "Kubernetes Events posted for phase changes",
            ["result"], registry=registry)
        self.roundtrip = Histogram(
            "salon_operator_pubsub_roundtrip_seconds",
            "Health ping to pong round trip through Redis, all sessions together",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.session_roundtrip = Gauge(
            "salon_operator_session_roundtrip_seconds",
            "The last answered health ping's round trip of each session (its series goes "
            "with the session); per-session quantiles: quantile_over_time", ["company_id"],
            registry=registry)
        self.pings = Counter(
            "salon_operator_pings", "Health pings by outcome", ["result"], registry=registry)
        for result in PING_RESULTS:  # from 0, so that the first ping is an increase
            self.pings.labels(result)
        self.heartbeat_lost = Counter(
            "salon_operator_heartbeats_lost", "Sessions whose heartbeat hash expired",
            registry=registry)
        self.heartbeats_rejected = Counter(
            "salon_operator_heartbeats_rejected",
            "State hashes refused by the bounds of core.bounds (seq out of int64, numbered "
            "or dated beyond the horizon)", ["reason"], registry=registry)
        self.status_reasserts = Counter(
            "salon_operator_status_reasserts",
            "Status patches that put back a status someone else changed (foreign: seen on "
            "the watch or by the audit; raced: in the response of our own patch)",
            ["cause"], registry=registry)
        self.cleanups = Counter(
            "salon_operator_cleanups", "Finalizer cleanups by outcome", ["result"],
            registry=registry)
        self.cleanups_pending = Gauge(
            "salon_operator_cleanups_pending",
            "Credential cleanups that gave up and are retried in the background until done",
            registry=registry)
        self.statefulset_drift = Counter(
            "salon_operator_statefulset_drift",
            "Session StatefulSets put back after someone else deleted or changed them",
            ["kind"], registry=registry)
        self.worker_restarts = Counter(
            "salon_operator_worker_restarts",
            "Restarts of session workers' containers seen by the operator", registry=registry)
        self.acl_denials = Counter(
            "salon_redis_acl_denials",
            "Requests Redis refused (NOPERM, failed logins) by Redis user and Redis's reason, "
            "drained from ACL LOG by the leader", ["user", "reason"], registry=registry)
        self.postgres_refusals = Gauge(
            "salon_postgres_tenancy_refusals",
            "Refusals of session roles counted by PostgreSQL since the tenancy migration "
            "(another company's rows, device or lock); only grows", registry=registry)
        self.credentials = Counter(
            "salon_operator_session_credentials",
            "Per-session Redis users and Secrets: ensured, dropped, restored after Redis "
            "forgot them", ["action", "result"], registry=registry)
        self.leader = Gauge(
            "salon_operator_leader", "1 while this replica is the active one",
            registry=registry)

    def watch_sessions(self, sessions: Callable[[], Iterable[tuple[Phase | None, bool | None,
                                                               bool]]]) -> None:
        """Export sessions by phase and the linked/connected counts, computed on scrape."""
        self.registry.register(_SessionsCollector(sessions))


class _SessionsCollector(Collector):
    def __init__(self, sessions: Callable[[], Iterable[tuple[Phase | None, bool | None,
                                                         bool]]]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterable[Metric]:
        by_phase = {p.value: 0 for p in Phase}
        linked = connected = 0
        for phase, is_linked, is_connected in self._sessions():
            by_phase[(phase or Phase.PENDING).value] += 1
            linked += bool(is_linked)
            connected += is_connected
        phases = GaugeMetricFamily("salon_operator_sessions", "SalonSessions by phase",
                                   labels=["phase"])
        for phase_name, count in by_phase.items():
            phases.add_metric([phase_name], count)
        yield phases
        yield GaugeMetricFamily("salon_operator_sessions_linked",
                                "SalonSessions whose device is linked", value=linked)
        yield GaugeMetricFamily("salon_operator_sessions_connected",
                                "SalonSessions whose socket is open", value=connected)

    def describe(self) -> Iterable[Metric]:
        return []
