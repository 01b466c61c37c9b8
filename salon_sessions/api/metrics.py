"""Prometheus metrics of the API (an injectable registry, like core.metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from salon_sessions.core.metrics import LATENCY_BUCKETS, ConsumerMetrics, SubscriberMetrics

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Histogram(
            "salon_api_request_seconds", "HTTP request latency by route template and status",
            ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=registry)
        self.ws_clients = Gauge(
            "salon_api_websocket_clients", "Connected WebSocket clients", registry=registry)
        self.ws_connections = Counter(
            "salon_api_websocket_connections", "WebSocket connections by outcome",
            ["outcome"], registry=registry)
        self.ws_dropped = Counter(
            "salon_api_websocket_clients_dropped",
            "WebSocket clients disconnected by the server (slow, dead, over the limit)",
            ["reason"], registry=registry)
        self.fanned_out = Counter(
            "salon_api_events_fanned_out",
            "Events queued to WebSocket clients (one per client per event)", ["type"],
            registry=registry)
        self.events_routed = Counter(
            "salon_api_events_routed", "Events received from Redis and routed to clients",
            ["type"], registry=registry)
        self.health_rtt = Histogram(
            "salon_api_health_roundtrip_seconds",
            "Round trips of /health/pubsub (ping->pong through a worker) and "
            "/health/pubsub/simple (Redis publish->subscribe)", ["check"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.health_failures = Counter(
            "salon_api_health_failures", "Health round trips that got no answer",
            ["check", "reason"], registry=registry)
        self.pairing_codes = Counter(
            "salon_api_pairing_code_requests", "Pairing-code requests by outcome",
            ["outcome"], registry=registry)
        self.consumer = ConsumerMetrics(registry)
        self.subscriber = SubscriberMetrics(registry)
