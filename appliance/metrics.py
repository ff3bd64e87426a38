"""Prometheus metrics: the HTTP part every SmartQ server shares (nodes and HQ) and the node's own.

Each server object has its own registry, so tests can run many nodes or HQs in one process.
When ``PROMETHEUS_MULTIPROC_DIR`` is set (HQ's supervisor sets it for its worker processes),
prometheus_client keeps values in files there and :meth:`HttpMetrics.render` answers the sum
over every worker process of the host, so a scrape that lands on any worker sees them all.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sync.envelope import Event

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; the bookings target is p99 <= 100 ms, so the buckets are fine around it.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def route_of(request: web.Request) -> str:
    """The route's template (``/api/v1/tickets/{id}``), never the raw path: bounded label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class HttpMetrics:
    """Requests by route and status, and their latency by route."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.requests = Counter("smartq_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("smartq_http_request_duration_seconds", "Time to answer an HTTP request, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, request: web.Request, status: int, started: float) -> None:
        """Count one answered request; ``started`` is its ``time.perf_counter()`` at arrival."""
        route = route_of(request)
        children = self._children.get((route, status))
        if children is None:  # labels() validates and locks on every call: once per route and status
            children = self._children[(route, status)] = (self.requests.labels(route, str(status)),
                                                          self.latency.labels(route))
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def render(self) -> bytes:
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return generate_latest(registry)
        return generate_latest(self.registry)


def text_response(body: bytes) -> web.Response:
    """The Prometheus text exposition answer."""
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


class Metrics(HttpMetrics):
    """A node's metrics: the HTTP ones plus events, queues, streams and the writer."""

    def __init__(self) -> None:
        super().__init__()
        self.events = Counter("smartq_events_committed", "Events committed to the log", ["source", "type"],
                              registry=self.registry)
        self.rejected = Counter("smartq_events_rejected", "Foreign events rejected", ["reason"], registry=self.registry)
        self.waiting = Gauge("smartq_tickets_waiting", "Tickets waiting today", ["service"], registry=self.registry)
        self.stream_clients = Gauge("smartq_stream_clients", "Open /api/v1/stream connections", registry=self.registry)
        self.writer_transactions = Gauge("smartq_writer_transactions", "Transactions committed by the writer",
                                         registry=self.registry)

    def events_committed(self, events: list[Event], own_id: str) -> None:
        for e in events:
            self.events.labels("local" if e.origin == own_id else "peer", e.type).inc()
