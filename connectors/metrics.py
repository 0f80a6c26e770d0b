"""Prometheus metrics of one process, in its own registry (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meterline_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.measurements = Counter(
            "meterline_ingest_measurements",
            "Measurements received by the HTTP edge, by outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "meterline_webhooks",
            "Stripe webhooks by outcome and event type",
            ["outcome", "type"],
            registry=self.registry,
        )
        self.kafka_up = Gauge(
            "meterline_kafka_reachable",
            "1 when Kafka answered the last check",
            registry=self.registry,
        )
        self.sink_bills = Counter(
            "meterline_sink_bills",
            "Bill versions handled by the Stripe sink, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.stripe_requests = Counter(
            "meterline_stripe_requests",
            "Stripe API requests by operation and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            "meterline_http_auth_refusals",
            "Organization API requests refused by API key checks, by reason and the scope "
            "the route needs",
            ["reason", "scope"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterline_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
