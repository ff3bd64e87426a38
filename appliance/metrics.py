"""Prometheus metrics of one node (its own registry, so tests can run many nodes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from sync.envelope import Event


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("smartq_events_committed", "Events committed to the log", ["source", "type"],
                              registry=self.registry)
        self.rejected = Counter("smartq_events_rejected", "Foreign events rejected", ["reason"], registry=self.registry)
        self.requests = Counter("smartq_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.waiting = Gauge("smartq_tickets_waiting", "Tickets waiting today", ["service"], registry=self.registry)
        self.stream_clients = Gauge("smartq_stream_clients", "Open /api/v1/stream connections", registry=self.registry)
        self.writer_transactions = Gauge("smartq_writer_transactions", "Transactions committed by the writer",
                                         registry=self.registry)

    def events_committed(self, events: list[Event], own_id: str) -> None:
        for e in events:
            self.events.labels("local" if e.origin == own_id else "peer", e.type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
