"""Prometheus metrics of the shared pub/sub code, each family registered in an injectable
registry (components pass the default one, tests a fresh `CollectorRegistry`).

Series are bounded (tests/observability/test_series_bounds.py, docs/BENCHMARKS.md "Prometheus
series per session"): every label takes its values from a fixed set, never a message id, an
error text or a company id (the scrape adds `company_id` to a worker's series; a label
carrying it again would multiply nothing but must not be added to a histogram). Importing this
module turns off the `_created` series of counters and histograms (one more series per child
that no dashboard or alert reads: a third of a worker's series).
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
GAP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.attempts = Counter(
            "salon_pubsub_publish_attempts", "Redis PUBLISH attempts, including retries",
            ["type"], registry=registry)
        self.retries = Counter(
            "salon_pubsub_publish_retries", "PUBLISH attempts that failed and were retried",
            ["type"], registry=registry)
        self.failures = Counter(
            "salon_pubsub_publish_failures",
            "Events given up on after the last attempt or the time budget", ["type"],
            registry=registry)
        self.latency = Histogram(
            "salon_pubsub_publish_seconds",
            "Time to publish an event successfully, retries included (all types: by type it "
            "was 17 series per event type in every worker)",
            buckets=LATENCY_BUCKETS, registry=registry)


class SubscriberMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.connected = Gauge(
            "salon_pubsub_subscriber_connected", "1 while the subscription is live",
            ["subscriber"], registry=registry)
        self.reconnects = Counter(
            "salon_pubsub_subscriber_reconnects",
            "Subscriptions re-established after a lost connection", ["subscriber"],
            registry=registry)
        self.gap_seconds = Histogram(
            "salon_pubsub_subscriber_gap_seconds",
            "Time without a subscription (messages published then were missed)",
            ["subscriber"], buckets=GAP_BUCKETS, registry=registry)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.consumed = Counter(
            "salon_events_consumed", "Events decoded and handed to the consumer",
            ["consumer", "type"], registry=registry)
        self.dropped = Counter(
            "salon_events_dropped", "Messages rejected by the decoder and dropped",
            ["consumer", "reason"], registry=registry)
