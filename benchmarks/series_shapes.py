"""The Prometheus series of one session worker and of the operator, built with the real
metric classes in a fresh registry and every label path exercised with its whole bounded
value set (tests/observability/test_series_bounds.py counts them; benchmarks/
prometheus_series.py serves them to a real Prometheus as 1,000 synthetic sessions).

`LABELS` declares, per labelled family, the values each label can take, from the code's own
enums where there is one. A family or label missing from it fails the test: declare its
bounded set (and never a message id, an error text or a company id).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric

from salon_sessions.core.codec import RejectReason
from salon_sessions.core.events import EventType
from salon_sessions.core.metrics import PublisherMetrics, SubscriberMetrics
from salon_sessions.core.phone import JidKind
from salon_sessions.core.resource import Phase
from salon_sessions.operator import acl_denials
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.worker import driver
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.pacing import DelayReason
from salon_sessions.worker.stream_retention import MAX_GROUP_LABELS

DRIVER_EVENTS = tuple(t.__name__ for t in driver.DriverFact.__args__)  # type: ignore[attr-defined]
PUBLISHED = tuple(t.value for t in EventType if t not in (EventType.PING, EventType.PONG))
STREAMS = ("inbound", "results", "outbound")
REJECTED = (
    [("outbound", r) for r in ("malformed", "oversized", "unknown_type", "invalid",
                                "wrong_company")]
    + [("health", r.value) for r in RejectReason] + [("health", "wrong_company_or_type")]
    + [("control", r) for r in ("oversized", "malformed", "invalid", "wrong_company")])
OUTBOUND_STATUS = ("sent", "rejected", "failed", "duplicate", "unknown")
SENDERS = ("phone", "unresolved_lid", *(k.value for k in JidKind))
HOOKS = ("marketplace_activation",)  # SALON_POST_CONNECT_HOOK: one name per deployment
RESTARTS = ("not_connected", "reconnect_after_pairing_failed")
WORKER_GROUP = "workers"


def bot_groups(n: int) -> list[str]:
    return [f"bot-{i}" for i in range(n)]


LABELS: dict[str, dict[str, str]] = {
    # family -> label -> where its values come from (the bound)
    "salon_worker_driver_events": {"kind": "driver.DriverFact classes"},
    "salon_worker_client_restarts": {"reason": "2 restart reasons"},
    "salon_worker_rejected": {"source": "outbound|health|control",
                              "reason": "Rejected/RejectReason/ControlError codes"},
    "salon_worker_inbound_messages": {"sender": "phone|unresolved_lid|JidKind"},
    "salon_worker_outbound_results": {"status": "5 result statuses"},
    "salon_worker_post_connect_hook_attempts": {"hook": "the one configured hook",
                                                "result": "ok|error"},
    "salon_worker_stream_length": {"stream": "3 streams"},
    "salon_worker_stream_groups": {"stream": "3 streams"},
    "salon_worker_stream_backlog": {"stream": "3 streams",
                                    "group": f"<= {MAX_GROUP_LABELS} per stream"},
    "salon_worker_stream_oldest_unacked_age_seconds": {"stream": "3 streams"},
    "salon_worker_stream_dropped": {"stream": "inbound|results", "cause": "2 causes"},
    "salon_worker_outbound_delayed": {"reason": "DelayReason"},
    "salon_pubsub_publish_attempts": {"type": "EventType"},
    "salon_pubsub_publish_retries": {"type": "EventType"},
    "salon_pubsub_publish_failures": {"type": "EventType"},
    "salon_pubsub_subscriber_connected": {"subscriber": "one per process"},
    "salon_pubsub_subscriber_reconnects": {"subscriber": "one per process"},
    "salon_pubsub_subscriber_gap_seconds": {"subscriber": "one per process"},
    "python_info": {"implementation": "", "major": "", "minor": "", "patchlevel": "",
                    "version": ""},
    "python_gc_objects_collected": {"generation": "0|1|2"},
    "python_gc_objects_uncollectable": {"generation": "0|1|2"},
    "python_gc_collections": {"generation": "0|1|2"},
    # the operator's
    "salon_operator_reconcile_seconds": {"kind": "statefulset|cleanup|heartbeat"},
    "salon_operator_reconcile_errors": {"kind": "3 kinds + credentials",
                                        "reason": "HTTP status|error"},
    "salon_operator_events_rejected": {"reason": "fixed reasons"},
    "salon_operator_status_patches": {"result": "ok|HTTP status"},
    "salon_operator_kube_events": {"result": "fixed"},
    "salon_operator_pings": {"result": "sent|answered|missed|no_receiver|publish_failed"},
    "salon_operator_heartbeats_rejected": {"reason": "fixed"},
    "salon_operator_status_reasserts": {"cause": "foreign|raced"},
    "salon_operator_cleanups": {"result": "6 results"},
    "salon_operator_statefulset_drift": {"kind": "deleted|changed"},
    "salon_operator_session_credentials": {"action": "fixed", "result": "fixed"},
    "salon_operator_session_roundtrip_seconds": {"company_id": "ONE PER SESSION (gauge)"},
    "salon_redis_acl_denials": {"user": f"service users + <= {acl_denials.MAX_USERS} "
                                        "session users (refused ones only) + other",
                                "reason": "command|key|channel|auth|other"},
    "salon_events_consumed": {"consumer": "operator|api", "type": "EventType"},
    "salon_events_dropped": {"consumer": "operator|api", "reason": "RejectReason + future"},
    "salon_operator_sessions": {"phase": "Phase"},
}
PER_SESSION_LABELS = frozenset({"company_id", "session", "name", "pod", "user"})
"""Labels whose values grow with the sessions: only the families allowed in
`PER_SESSION_FAMILIES` may carry them."""
PER_SESSION_FAMILIES = frozenset({"salon_operator_session_roundtrip_seconds",
                                  "salon_redis_acl_denials"})


def worker_registry(*, groups_per_stream: int = 1, everything: bool = True,
                    company: str = "company_1") -> CollectorRegistry:
    """One worker's registry as its /metrics serves it: the default collectors (process,
    platform, gc: the worker uses prometheus_client's default registry) and the worker's
    families, with every label value set (`everything`) or only those of an idle, connected
    session that received and sent messages (False)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    w = WorkerMetrics(registry)
    sub = SubscriberMetrics(registry)
    pub = PublisherMetrics(registry)
    for g in (w.lock_held, w.connected, w.linked):
        g.set(1)
    w.sending_paused.set(0)
    w.stream_retention.set(7 * 86400)
    w.stream_max_entries.set(100_000)
    w.pings.inc()
    w.pings_ignored.inc()
    w.inbound_not_stored.inc()
    sub.connected.labels(f"worker-{company}").set(1)
    sub.reconnects.labels(f"worker-{company}").inc()
    sub.gap_seconds.labels(f"worker-{company}").observe(1)
    pub.latency.observe(0.001)
    # what session_keepers() sets at start
    for stream in ("inbound", "results"):
        for cause in ("retention", "max_entries"):
            w.stream_dropped.labels(stream, cause)
    groups = {"inbound": bot_groups(groups_per_stream), "results": bot_groups(groups_per_stream),
              "outbound": [WORKER_GROUP]}
    for stream in STREAMS:
        w.stream_length.labels(stream).set(1)
        w.stream_groups.labels(stream).set(len(groups[stream]))
        w.stream_oldest_unacked_age.labels(stream).set(0)
        for group in groups[stream][:MAX_GROUP_LABELS]:
            w.stream_backlog.labels(stream, group).set(0)
    if everything:
        kinds, published, rejected = DRIVER_EVENTS, PUBLISHED, REJECTED
        statuses, senders, delays = OUTBOUND_STATUS, SENDERS, [r.value for r in DelayReason]
        restarts, hooks = RESTARTS, list(product(HOOKS, ("ok", "error")))
    else:  # an ordinary day: linked, connected, messages in and out
        kinds = ("QrCode", "PairSuccess", "Connected", "InboundMessage")
        published = ("qr", "linked", "connected")
        rejected, statuses, senders = [], ("sent",), ("phone",)
        delays, restarts, hooks = ["pacing"], [], [(HOOKS[0], "ok")]
    for kind in kinds:
        w.driver_events.labels(kind).inc()
    for t in published:
        pub.attempts.labels(t).inc()
        pub.retries.labels(t).inc() if everything else None
        pub.failures.labels(t).inc() if everything else None
    for source, reason in rejected:
        w.rejected.labels(source, reason).inc()
    for status in statuses:
        w.outbound.labels(status).inc()
    for sender in senders:
        w.inbound.labels(sender).inc()
    for delay in delays:
        w.outbound_delayed.labels(delay).inc()
    for restart in restarts:
        w.client_restarts.labels(restart).inc()
    for hook, result in hooks:
        w.hook_attempts.labels(hook, result).inc()
    return registry


def operator_registry(sessions: int, *, refused_sessions: int = 0) -> CollectorRegistry:
    """The operator's registry with `sessions` pinged sessions (and `refused_sessions` of
    them refused by Redis for every reason), every other label path exercised once."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    m = OperatorMetrics(registry)
    companies = [f"company_{i}" for i in range(sessions)]
    m.watch_sessions(lambda: [(Phase.CONNECTED, True, True) for _ in companies])
    for kind in ("statefulset", "cleanup", "heartbeat"):
        m.reconcile_seconds.labels(kind).observe(0.01)
        m.reconcile_errors.labels(kind, "409").inc()
    m.reconcile_errors.labels("credentials", "error").inc()
    for t in EventType:
        m.consumer.consumed.labels("operator", t.value).inc()
    for r in RejectReason:
        m.consumer.dropped.labels("operator", r.value).inc()
    m.consumer.dropped.labels("operator", "future").inc()
    for reason in ("unknown_session", "stale_seq", "future", "unknown_pong", "mismatch"):
        m.events_rejected.labels(reason).inc()
    m.event_status_lag.observe(0.1)
    for result in ("ok", "409", "422", "error"):
        m.status_patches.labels(result).inc()
    m.status_patch_seconds.observe(0.01)
    m.k8s_events.labels("ok").inc()
    for result in ("sent", "answered", "missed", "no_receiver", "publish_failed"):
        m.pings.labels(result).inc()
    m.heartbeat_lost.inc()
    for cause in ("foreign", "raced"):
        m.status_reasserts.labels(cause).inc()
    for result in ("deleted", "retained", "duplicate", "failed", "deleted_late",
                   "retry_failed"):
        m.cleanups.labels(result).inc()
    for kind in ("deleted", "changed"):
        m.statefulset_drift.labels(kind).inc()
    m.worker_restarts.inc()
    for action in ("ensured", "dropped", "restored"):
        m.credentials.labels(action, "ok").inc()
    m.leader.set(1)
    m.postgres_refusals.set(0)
    m.subscriber.connected.labels("operator").set(1)
    m.publisher.attempts.labels("ping").inc()
    m.publisher.latency.observe(0.001)
    for company in companies:
        m.roundtrip.observe(0.002)
        m.session_roundtrip.labels(company).set(0.002)
    denials = acl_denials.AclDenials(None, m)  # type: ignore[arg-type]
    for company in companies[:refused_sessions]:
        for reason in acl_denials.REASONS:
            m.acl_denials.labels(*denials.labels(f"salon-session.ns.{company}", reason)).inc()
    return registry


def families(registry: CollectorRegistry) -> list[Metric]:
    return list(registry.collect())


def series_by_family(registry: CollectorRegistry) -> dict[str, int]:
    """Samples (= series once scraped) per family name."""
    return {f.name: len(f.samples) for f in families(registry)}


def count(registry: CollectorRegistry) -> int:
    return sum(series_by_family(registry).values())


def label_names(metric: Metric) -> set[str]:
    return {k for s in metric.samples for k in s.labels if k not in ("le", "quantile")}


def labelled(registry: CollectorRegistry) -> Iterable[tuple[str, set[str]]]:
    for metric in families(registry):
        names = label_names(metric)
        if names:
            yield metric.name, names
