"""Prometheus ``/metrics`` of an HQ process (docs/hq.md, "Metrics").

Two kinds of figures:

- per process, counted as things happen (requests and latency by route via the HTTP part shared
  with the nodes, appliance.metrics; bookings; events ingested and their lag per branch; database
  calls in flight and their time). With several workers they are summed over the host's workers
  (prometheus_client's multiprocess mode, set up by hq.main's supervisor).
- read from the database at scrape time, the same on every process and host (link age per
  branch, notification outbox depth, upcoming bookings): shared state, so each HQ process can
  be scraped and a dashboard takes any one of them (``max by (branch)``), not the sum.

Who may read it: with ``metrics_token`` set, a request with ``Authorization: Bearer <token>``;
without it, only a client on the loopback interface that did not come through a proxy (no
X-Forwarded-For, Forwarded or X-Real-IP header). The node's rule is the same: loopback only.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from appliance.metrics import HttpMetrics, text_response

LAG_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


class HQMetrics(HttpMetrics):
    """The process-local figures of one HQ process."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.bookings = Counter("smartq_hq_bookings", "Bookings written by this process, by action "
                                "(created, rescheduled, cancelled)", ["action"], registry=r)
        self.events = Counter("smartq_hq_events_ingested", "Branch events received over the link, by branch and "
                              "result (accepted, duplicate, held, rejected)", ["branch", "result"], registry=r)
        self.ingest_lag = Histogram("smartq_hq_ingest_lag_seconds", "Age of the oldest event of each accepted push "
                                    "when HQ stored it (the branch link's lag), by branch", ["branch"],
                                    buckets=LAG_BUCKETS, registry=r)
        self.db_in_flight = Gauge("smartq_hq_db_in_flight", "Database calls queued or running, by kind (read, write)",
                                  ["kind"], registry=r, multiprocess_mode="livesum")
        self.db_seconds = Histogram("smartq_hq_db_call_seconds", "Time of a database call including its wait for "
                                    "a connection or the writer, by kind", ["kind"], buckets=DB_BUCKETS, registry=r)

    def ingested(self, branch: str, accepted: int, duplicates: int, held: int, rejected: int,
                 oldest_ms: int | None, now_ms: int) -> None:
        for result, n in (("accepted", accepted), ("duplicate", duplicates), ("held", held), ("rejected", rejected)):
            if n:
                self.events.labels(branch, result).inc(n)
        if accepted and oldest_ms is not None:
            self.ingest_lag.labels(branch).observe(max(0.0, (now_ms - oldest_ms) / 1000))


class MeteredDatabase:
    """The HQ database with its calls counted (in flight, time including the wait): the same
    figures whichever backend hq.db opened. Everything else is the database's own."""

    def __init__(self, db: Any, metrics: HQMetrics) -> None:
        self._db, self._metrics = db, metrics
        # labels() validates and locks on every call; each kind's children once
        self._children = {kind: (metrics.db_in_flight.labels(kind), metrics.db_seconds.labels(kind))
                          for kind in ("read", "write")}

    async def _call(self, kind: str, call: Callable[[Any], Awaitable[Any]], fn: Any) -> Any:
        gauge, seconds = self._children[kind]
        gauge.inc()
        started = time.perf_counter()
        try:
            return await call(fn)
        finally:
            gauge.dec()
            seconds.observe(time.perf_counter() - started)

    async def read(self, fn: Any) -> Any:
        return await self._call("read", self._db.read, fn)

    async def write(self, fn: Any) -> Any:
        return await self._call("write", self._db.write, fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


# -- scrape-time figures from the database -----------------------------------------------------------
def shared_figures(conn: Any, now: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What every HQ process reads alike from the shared database (portable SQL)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    out["link_age"] = [({"branch": b}, float(max(0, now - heard))) for b, heard in conn.execute(
        "SELECT branch_id, heard_at FROM branch_contact")]
    out["outbox"] = [({"channel": ch, "state": "due" if due else "scheduled"}, float(n)) for ch, due, n in conn.execute(
        "SELECT channel, CASE WHEN next_attempt_at <= ? THEN 1 ELSE 0 END, COUNT(*) FROM notifications"
        " WHERE status = 'pending' GROUP BY 1, 2", (now,))]  # by position: one parameter, same on PostgreSQL
    oldest = conn.execute("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?",
                          (now,)).fetchone()
    out["outbox_age"] = [({}, float(now - oldest[0]) if oldest and oldest[0] is not None else 0.0)]
    out["unchained"] = [({"branch": b}, float(n)) for b, n in conn.execute(
        "SELECT branch_id, COUNT(*) FROM outbox_queue GROUP BY branch_id")]
    out["upcoming"] = [({"branch": b}, float(n)) for b, n in conn.execute(
        "SELECT branch_id, COUNT(*) FROM bookings WHERE status = 'booked' AND slot_start >= ? GROUP BY branch_id", (now,))]
    return out


SHARED = {  # key: (metric name, help, label names)
    "link_age": ("smartq_hq_branch_link_age_seconds", "Seconds since any HQ process last heard from the branch "
                 "over its link", ("branch",)),
    "outbox": ("smartq_hq_notification_outbox", "Notifications waiting to be sent, by channel and state "
               "(due now, or scheduled for a retry or a reminder)", ("channel", "state")),
    "outbox_age": ("smartq_hq_notification_oldest_due_seconds", "How long the oldest due notification has waited", ()),
    "unchained": ("smartq_hq_booking_events_unchained", "Booking events committed and not yet in their "
                  "branch's chain (PostgreSQL chains them after answering)", ("branch",)),
    "upcoming": ("smartq_hq_bookings_upcoming", "Booked slots not yet started, by branch", ("branch",)),
}


def _shared_registry(figures: dict[str, list[tuple[dict[str, str], float]]], db: Any,
                     read_connections: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    for key, (name, help_, labels) in SHARED.items():
        gauge = Gauge(name, help_, labels, registry=registry)
        for values, number in figures.get(key, []):
            (gauge.labels(**values) if labels else gauge).set(number)
    pool = Gauge("smartq_hq_db_pool", "Database connections of this process: configured size, and for a pool "
                 "its idle connections and waiting requests", ["kind"], registry=registry)
    pool.labels("readers").set(read_connections)
    stats = getattr(getattr(db, "pool", None), "get_stats", None)
    if callable(stats):  # psycopg_pool (PostgreSQL backend)
        s = stats()
        for k in ("pool_size", "pool_available", "requests_waiting"):
            if k in s:
                pool.labels(k).set(s[k])
    return registry


# -- the endpoint --------------------------------------------------------------------------------------
def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def refusal(request: web.Request, token: str) -> web.Response | None:
    """None if the caller may read /metrics (module docstring), else the plain-text refusal."""
    if token:
        supplied = request.headers.get("Authorization", "")
        if hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
            return None
        return web.Response(status=401, text="metrics need 'Authorization: Bearer <metrics_token>'\n",
                            headers={"WWW-Authenticate": "Bearer"})
    if _loopback(request.remote) and not any(h in request.headers for h in PROXY_HEADERS):
        return None
    return web.Response(status=403, text="metrics are served to loopback clients only, not through a proxy "
                        "(set metrics_token to scrape from another host)\n")


METRICS_KEY = web.AppKey("hq_metrics", HQMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    from hq.web import hq_of
    hq = hq_of(request)
    refused = refusal(request, hq.settings.metrics_token)
    if refused is not None:
        return refused
    now = hq.now()
    figures = await hq.db.read(lambda c: shared_figures(c, now))
    body = request.app[METRICS_KEY].render() + generate_latest(
        _shared_registry(figures, hq.db, hq.settings.read_connections))
    return text_response(body)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS_KEY].observe(request, status, started)


def setup_metrics(app: web.Application, hq: Any) -> HQMetrics:
    """Count every request (outermost middleware), meter the database, serve GET /metrics."""
    metrics = HQMetrics()
    app[METRICS_KEY] = metrics
    hq.metrics = metrics
    hq.db = MeteredDatabase(hq.db, metrics)
    app.middlewares.insert(0, metrics_middleware)
    app.router.add_get("/metrics", metrics_handler)
    return metrics
