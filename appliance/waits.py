"""Wait estimates: the signals a node reads at issue time and three estimators over them.

- `naive`: today's formula (people ahead x recent mean service time / open counters);
- `les`: the delay of the last ticket of the same service and class to be called
  (Ibrahim & Whitt's last-to-enter-service predictor), naive until the day has one;
- `learned`: a linear model over queue-aware features with calibrated residual quantiles,
  trained nightly on the branch's own history (appliance/waits_train.py). The model is plain
  JSON data, so HQ can ship one down; predicting is a dot product, no numpy in the node.

The learned range shown is the model's, scaled by how today's earlier ranges held (adaptive
conformal inference: `adaptive_range`, counted from the log in `wait_coverage`).

The signals of each ticket a node issues are kept in the node-local table `wait_features`
(not replicated, not in the state hash) so that the nightly job can learn from them once
the ticket has been called. See docs/wait-estimates.md.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import sqlite3
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

from appliance import events as ev
from appliance import queue as q
from appliance.model import Model

logger = logging.getLogger(__name__)

MODEL_FILE = "wait_model.json"
MODEL_VERSION = 2
BOOKED_LATE_S = 45 * 60  # a booking whose slot started this long ago may still check in ahead
SLOT_MIN = 15  # resolution of the usual priority arrivals over the day


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE wait_features (ticket TEXT PRIMARY KEY, day TEXT NOT NULL, service TEXT NOT NULL,"
                 " issued_ms INTEGER NOT NULL, signals TEXT NOT NULL)")
    conn.execute("CREATE INDEX wait_features_by_day ON wait_features (day)")
    # Late booked arrivals are found by slot start: without this each estimate scans every booking.
    conn.execute("CREATE INDEX bookings_by_start ON bookings (json_extract(body, '$.start'))")


# Today's coverage of the shown ranges (adaptive conformal inference, `adaptive_range`): per
# branch day, how many served tickets had a range and how many waited less than its p10 or
# more than its p90. Kept by triggers on the projection's tickets, from each ticket's row and
# the estimate its own `ticket.issued` carries, so it is a function of the replicated log:
# every node with the same events holds the same counts, whichever node issued the ticket.
# A ticket counts once a counter has started serving it (those who never came have no wait).
_SHOWN = ("(SELECT json_extract(payload, '$.estimate.p10') * 1000 AS p10, json_extract(payload, '$.estimate.p90') * 1000"
          " AS p90 FROM events WHERE subject = {t}.id AND type = 'ticket.issued' ORDER BY hlc LIMIT 1)")
_COUNTED = "{t}.started_ms IS NOT NULL AND {t}.called_ms IS NOT NULL"
_ADD = ("INSERT INTO wait_coverage (day, n, low, high) SELECT {t}.day, {sign}, {sign} * ({t}.called_ms - {t}.issued_ms < p10),"
        " {sign} * ({t}.called_ms - {t}.issued_ms > p90) FROM " + _SHOWN + " WHERE " + _COUNTED +
        " AND p10 IS NOT NULL AND p90 IS NOT NULL"
        " ON CONFLICT (day) DO UPDATE SET n = n + excluded.n, low = low + excluded.low, high = high + excluded.high;")
COVERAGE_TRIGGERS = (
    "CREATE TRIGGER wait_coverage_in AFTER INSERT ON tickets WHEN " + _COUNTED.format(t="new") +
    " BEGIN " + _ADD.format(t="new", sign=1) + " END",
    "CREATE TRIGGER wait_coverage_out AFTER DELETE ON tickets WHEN " + _COUNTED.format(t="old") +
    " BEGIN " + _ADD.format(t="old", sign=-1) + " END",
    "CREATE TRIGGER wait_coverage_move AFTER UPDATE OF day, issued_ms, called_ms, started_ms ON tickets WHEN "
    + _COUNTED.format(t="old") + " OR " + _COUNTED.format(t="new") +
    " BEGIN " + _ADD.format(t="old", sign=-1) + " " + _ADD.format(t="new", sign=1) + " END",
)
_ISSUED_ESTIMATE = ("(SELECT json_extract(payload, '$.estimate.{q}') FROM events WHERE subject = t.id"
                    " AND type = 'ticket.issued' ORDER BY hlc LIMIT 1) * 1000")
COUNT_COVERAGE = ("INSERT INTO wait_coverage (day, n, low, high) SELECT day, count(*), sum(w < p10), sum(w > p90) FROM"
                  " (SELECT t.day AS day, t.called_ms - t.issued_ms AS w, " + _ISSUED_ESTIMATE.format(q="p10") + " AS p10, "
                  + _ISSUED_ESTIMATE.format(q="p90") + " AS p90 FROM tickets t WHERE " + _COUNTED.format(t="t") +
                  ") WHERE p10 IS NOT NULL AND p90 IS NOT NULL GROUP BY day")


def recount_coverage(conn: sqlite3.Connection) -> None:
    """Count wait_coverage again from the tickets (after a bulk re-fold that ran without triggers)."""
    conn.execute("DELETE FROM wait_coverage")
    conn.execute(COUNT_COVERAGE)


def _coverage(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE wait_coverage (day TEXT PRIMARY KEY, n INTEGER NOT NULL, low INTEGER NOT NULL,"
                 " high INTEGER NOT NULL)")
    for sql in COVERAGE_TRIGGERS:
        conn.execute(sql)
    recount_coverage(conn)


MIGRATIONS = [_create_tables, _coverage]


@dataclass(frozen=True, slots=True)
class Estimate:
    p10: int
    p50: int
    p90: int

    def as_dict(self) -> dict[str, int]:
        return {"p10": self.p10, "p50": self.p50, "p90": self.p90}


def point(seconds: float) -> Estimate:
    s = max(int(math.ceil(seconds)), 0)
    return Estimate(s, s, s)


# -- what recent days say about today (computed once a day, cached by the caller) -------------
CONTEXT_DAYS = 14
INF_MS = 1 << 62
LATE_EDGES_S = (-900, -600, -300, -120, 0, 120, 300, 600, 900, 1200, 1800, 2700)
GONE_EDGES_S = (300, 600, 1200, 1800, 2700, 3600, 5400, 7200, 10800)
EDGE_MIN = 30  # a counter whose usual day ends this close to the latest one serves until the line is done


@dataclass(frozen=True)
class DayContext:
    """What the branch's last CONTEXT_DAYS days say about today, from history before it:
    each counter's usual open hours (a lunch break, an early close, staff who start later),
    its speed, the spread of each service's times and when priority tickets usually arrive."""

    day: str
    midnight_ms: int
    hours: dict[str, tuple[tuple[int, int], ...]]   # counter -> usual open intervals today (unix ms)
    speed: dict[str, float]                          # counter -> speed (1.0 = the service's mean)
    cv: dict[str, float]                             # service -> coefficient of variation of its times
    prio_rate: dict[str, tuple[float, ...]]          # service -> priority arrivals per minute, per SLOT_MIN
    gone: dict[str, tuple[float, ...]] = field(default_factory=dict)  # service -> P(not there when called) per GONE_EDGES_S bin
    gone_call_s: dict[str, float] = field(default_factory=dict)      # service -> how long calling an absent ticket takes
    late: dict[str, tuple[int, ...]] = field(default_factory=dict)   # service -> bookings checked in per LATE_EDGES_S bin, then never
    mean: dict[str, float] = field(default_factory=dict)             # service -> mean service time (s)
    days: int = 0                                                    # days of history it was read from
    walkin_rate: dict[str, tuple[float, ...]] = field(default_factory=dict)  # service -> other walk-ins per minute, per SLOT_MIN
    _cumulative: dict[tuple[bool, str], list[float]] = field(default_factory=dict, compare=False, repr=False)

    def shows(self, service: str, late_s: float) -> float:
        """How likely a booking not checked in `late_s` after its slot start still comes."""
        counts = self.late.get(service)
        if not counts:
            return 1.0
        after = sum(counts[bisect_right(LATE_EDGES_S, late_s):-1])
        return after / max(after + counts[-1], 1)

    def duration_s(self, service: str, waited_s: float, service_s: float) -> float:
        """Expected counter time of a call after `waited_s`: people who waited longer are more
        likely to have left, and calling one who left takes only the calling time."""
        curve = self.gone.get(service)
        if not curve:
            return service_s
        p = curve[bisect_right(GONE_EDGES_S, waited_s)]
        return p * self.gone_call_s.get(service, 60.0) + (1 - p) * service_s

    def prio_arrivals(self, service: str, t0_ms: float, t1_ms: float) -> float:
        """Expected priority arrivals of `service` between two moments of today."""
        return self._arrived_by(True, service, t1_ms) - self._arrived_by(True, service, t0_ms) if t1_ms > t0_ms else 0.0

    def walkin_arrivals(self, service: str, t0_ms: float, t1_ms: float) -> float:
        """Expected walk-ins (priority 0, no booking) of `service` between two moments of today."""
        return self._arrived_by(False, service, t1_ms) - self._arrived_by(False, service, t0_ms) if t1_ms > t0_ms else 0.0

    def _arrived_by(self, prio: bool, service: str, t_ms: float) -> float:
        cum = self._cumulative.get((prio, service))
        if cum is None:
            rates = (self.prio_rate if prio else self.walkin_rate).get(service)
            if not rates:
                return 0.0
            cum = [0.0]
            for r in rates:
                cum.append(cum[-1] + r * SLOT_MIN)
            self._cumulative[(prio, service)] = cum
        minute = (t_ms - self.midnight_ms) / 60_000
        slot = int(minute // SLOT_MIN)
        if slot < 0:
            return 0.0
        if slot >= len(cum) - 1:
            return cum[-1]
        return cum[slot] + (cum[slot + 1] - cum[slot]) * (minute - slot * SLOT_MIN) / SLOT_MIN


def _midnight_ms(m: Model, day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), time(0), tzinfo=m.tz).timestamp() * 1000)


def day_context(conn: sqlite3.Connection, m: Model, day: str) -> DayContext:
    """Read the last CONTEXT_DAYS days before `day` (a few aggregate queries, once a day)."""
    midnight = _midnight_ms(m, day)
    since = (date.fromisoformat(day) - timedelta(days=CONTEXT_DAYS)).isoformat()
    # Usual open hours per counter: the minutes of the day it was open on at least half the days.
    per_day: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for type_, payload, hlc in conn.execute(
            "SELECT type, payload, hlc FROM events WHERE hlc >= ? AND hlc < ? AND type IN (?, ?, ?) ORDER BY hlc",
            ((midnight - CONTEXT_DAYS * 86_400_000) << 16, midnight << 16, *ev.COUNTER_TYPES)):
        local = datetime.fromtimestamp((hlc >> 16) / 1000, m.tz)
        counter = json.loads(payload).get("counter")
        per_day.setdefault(local.date().isoformat(), {}).setdefault(counter, []).append(
            (local.hour * 60 + local.minute, ev.COUNTER_TYPES[type_]))
    days = len(per_day)
    runs: dict[str, list[tuple[int, int]]] = {}
    if days:
        for cid in m.counters:
            diff = [0] * 1441
            for counters in per_day.values():
                status, since_min = "closed", 0
                for minute, new in counters.get(cid, []):
                    if status == "open" and new != "open":
                        diff[since_min] += 1
                        diff[minute] -= 1
                    if new == "open" and status != "open":
                        since_min = minute
                    status = new
                if status == "open":
                    diff[since_min] += 1
                    diff[1440] -= 1
            level, start, out = 0, None, []
            for minute in range(1440):
                level += diff[minute]
                usual = level * 2 >= days and level > 0
                if usual and start is None:
                    start = minute
                elif not usual and start is not None:
                    out.append((start, minute))
                    start = None
            if start is not None:
                out.append((start, 1440))
            runs[cid] = out
    latest = max((r[-1][1] for r in runs.values() if r), default=0)
    hours: dict[str, tuple[tuple[int, int], ...]] = {}
    for cid, rs in runs.items():
        spans = [(midnight + a * 60_000, midnight + b * 60_000) for a, b in rs]
        if spans and rs[-1][1] >= latest - EDGE_MIN:  # open at closing time: serves those still waiting
            spans[-1] = (spans[-1][0], INF_MS)
        hours[cid] = tuple(spans)
    # Speeds and spreads from the served tickets of those days.
    stats: dict[tuple[str, str], tuple[int, float, float]] = {}
    for counter, service, n, total, squares in conn.execute(
            "SELECT counter, service, count(*), sum(finished_ms - started_ms) / 1000.0,"
            " sum((finished_ms - started_ms) / 1000.0 * (finished_ms - started_ms) / 1000.0) FROM tickets"
            " WHERE day >= ? AND day < ? AND status = 'completed' AND started_ms IS NOT NULL AND finished_ms IS NOT NULL"
            " GROUP BY counter, service", (since, day)):
        stats[(counter, service)] = (n, total, squares)
    by_service: dict[str, list[float]] = {}
    for (_, service), (n, total, squares) in stats.items():
        acc = by_service.setdefault(service, [0, 0.0, 0.0])
        acc[0] += n
        acc[1] += total
        acc[2] += squares
    mean = {s: a[1] / a[0] for s, a in by_service.items() if a[0]}
    cv = {}
    for s, (n, total, squares) in by_service.items():
        if n >= 20 and mean[s] > 0:
            cv[s] = round(math.sqrt(max(squares / n - mean[s] ** 2, 0.0)) / mean[s], 3)
    expected: dict[str, list[float]] = {}
    for (counter, service), (n, total, _) in stats.items():
        if counter is not None and service in mean:
            acc = expected.setdefault(counter, [0, 0.0, 0.0])
            acc[0] += n
            acc[1] += n * mean[service]
            acc[2] += total
    speed = {c: round((a[1] + 20 * a[1] / a[0]) / (a[2] + 20 * a[1] / a[0]), 3)  # shrunk towards 1
             for c, a in expected.items() if a[0] >= 10 and a[2] > 0}
    # Priority arrivals per service and slot of the day.
    open_days = {s: n for s, n in conn.execute(
        "SELECT service, count(DISTINCT day) FROM tickets WHERE day >= ? AND day < ? GROUP BY service", (since, day))}
    slots = 24 * 60 // SLOT_MIN
    prio: dict[str, list[float]] = {}
    walkin: dict[str, list[float]] = {}
    # ... and of the other walk-ins: they go before a booking checked in ahead of its slot.
    for service, issued_ms, priority, booking in conn.execute(
            "SELECT service, issued_ms, priority, booking FROM tickets WHERE day >= ? AND day < ?", (since, day)):
        local = datetime.fromtimestamp(issued_ms / 1000, m.tz)
        slot = (local.hour * 60 + local.minute) // SLOT_MIN
        if priority > 0:
            prio.setdefault(service, [0.0] * slots)[slot] += 1.0
        elif booking is None:
            walkin.setdefault(service, [0.0] * slots)[slot] += 1.0
    prio_rate = {s: tuple(round(v / max(open_days.get(s, 1), 1) / SLOT_MIN, 4) for v in row)
                 for s, row in prio.items()}
    walkin_rate = {s: tuple(round(v / max(open_days.get(s, 1), 1) / SLOT_MIN, 4) for v in row)
                   for s, row in walkin.items()}
    # Who is gone when called, by how long they had waited (abandonment and no-shows).
    counts: dict[str, list[list[int]]] = {}
    calls: dict[str, list[float]] = {}
    for service, status, waited, calling in conn.execute(
            "SELECT service, status, called_ms - issued_ms, finished_ms - called_ms FROM tickets WHERE day >= ? AND day < ?"
            " AND status IN ('completed', 'no_show') AND called_ms IS NOT NULL", (since, day)):
        row = counts.setdefault(service, [[0, 0] for _ in range(len(GONE_EDGES_S) + 1)])
        absent = status == "no_show"
        row[bisect_right(GONE_EDGES_S, waited / 1000)][absent] += 1
        if absent and calling is not None:
            acc = calls.setdefault(service, [0.0, 0.0])
            acc[0] += 1
            acc[1] += calling / 1000
    gone, gone_call = {}, {}
    for service, row in counts.items():
        total = sum(a + b for a, b in row)
        base = (sum(b for _, b in row) + 1) / (total + 2)
        # Each bin shrunk towards the overall share (10 pseudo-calls), then made non-decreasing.
        curve, top = [], 0.0
        for a, b in row:
            top = max(top, (b + 10 * base) / (a + b + 10))
            curve.append(round(top, 4))
        gone[service] = tuple(curve)
        if service in calls:
            gone_call[service] = round(calls[service][1] / calls[service][0], 1)
    # When booked people check in against their slot start, and how many never come.
    late: dict[str, list[int]] = {}
    for service, start, checked_in in conn.execute(
            "SELECT json_extract(b.body, '$.service'), json_extract(b.body, '$.start'), t.issued_ms FROM bookings b"
            " LEFT JOIN tickets t ON t.booking = b.code WHERE json_extract(b.body, '$.start') >= ?"
            " AND json_extract(b.body, '$.start') < ? AND b.status = 'booked'",
            ((midnight - CONTEXT_DAYS * 86_400_000) // 1000, midnight // 1000)):
        row = late.setdefault(str(service), [0] * (len(LATE_EDGES_S) + 2))
        if checked_in is None:
            row[-1] += 1
        else:
            row[bisect_right(LATE_EDGES_S, (checked_in - int(start) * 1000) / 1000)] += 1
    return DayContext(day, midnight, hours, speed, cv, prio_rate, gone, gone_call,
                      {s: tuple(row) for s, row in late.items()},
                      {s: round(v, 1) for s, v in mean.items() if by_service[s][0] >= 20}, days, walkin_rate)


def residual_s(mean: float, cv: float, elapsed: float) -> float:
    """Expected remaining service time of a lognormal service (mean, cv) already `elapsed` long:
    a long service is likely a long one, so an overdue counter is not about to be free."""
    if mean <= 0:
        return 0.0
    if elapsed <= 0:
        return mean
    if cv <= 0:
        return max(mean - elapsed, 0.0)
    s2 = math.log(1 + cv * cv)
    s = math.sqrt(s2)
    mu = math.log(mean) - s2 / 2
    le = math.log(elapsed)
    surv = 0.5 * math.erfc(-((mu - le) / s) / math.sqrt(2))
    if surv < 1e-9:
        return elapsed * s2 / max(le - mu, 1e-3)
    partial = mean * 0.5 * math.erfc(-((mu + s2 - le) / s) / math.sqrt(2))
    return max(partial / surv - elapsed, 0.0)


# -- signals ------------------------------------------------------------------------------------
def signals(conn: sqlite3.Connection, m: Model, *, service: str, priority: int, effective_ms: int, ahead: int,
            now_ms: int, day: str, ticket: str | None = None, ctx: DayContext | None = None) -> dict[str, float]:
    """What the node knows at `now_ms` about the wait of one ticket (or a newcomer) of `service`
    with `ahead` people before it in the line (the engine's count). Every read is an index seek
    or a bounded range: the cost does not grow with the length of the lines."""
    open_ids = {r[0] for r in conn.execute("SELECT id FROM counter_status WHERE status = 'open'")}
    serving = [c for c in m.counters.values() if service in c.services and c.id in open_ids]
    open_counters = len(serving)
    ctx = ctx if ctx is not None and ctx.day == day else None
    # Each line's latest services today, read once: the naive mean, the blended one, occupancy.
    latest = {s: _latest_services(conn, m, day, s) for s in {*m.services, service}}
    mean_s = q.mean_service_s(latest[service][0], m.rules_for(service).default_service_s)
    busy = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT counter, service, called_ms, started_ms FROM tickets INDEXED BY tickets_held"
        " WHERE status IN ('called', 'serving') AND counter IS NOT NULL")}
    occupancy = {s: _occupancy_s(conn, m, day, s, latest[s][1]) for s in m.services}
    means = {s: _blended_mean_s(m, ctx, s, latest[s][0]) for s in m.services}
    remaining = _remaining(m, ctx, busy, occupancy, means, now_ms)
    # The time until the first counter of this service is free (0 when one is idle).
    first_free = 0.0
    if serving and all(c.id in busy for c in serving):
        first_free = min(remaining[c.id] for c in serving)
    sched, draw10, draw50, draw90 = schedule_s(conn, m, ctx, open_ids, busy, remaining, occupancy, means, service=service, priority=priority,
                       effective_ms=effective_ms, ahead=ahead, now_ms=now_ms, day=day, ticket=ticket)
    recent = conn.execute(
        "SELECT called_ms - issued_ms, status, priority, called_ms FROM tickets WHERE day = ? AND service = ?"
        " AND called_ms IS NOT NULL ORDER BY called_ms DESC LIMIT 20", (day, service)).fetchall()
    # LES: the latest called of this class, among the recent ones unless they are all of another.
    les_row = next(((r[0], r[3]) for r in recent if r[2] == priority), None)
    if les_row is None and len(recent) >= 20:
        les_row = conn.execute(
            "SELECT called_ms - issued_ms, called_ms FROM tickets WHERE day = ? AND service = ? AND priority = ?"
            " AND called_ms IS NOT NULL ORDER BY called_ms DESC LIMIT 1", (day, service, priority)).fetchone()
    n = max(len(recent), 1)
    local = datetime.fromtimestamp(now_ms / 1000, m.tz)
    return {
        "ahead": float(ahead),
        "open": float(open_counters),
        "serving": float(len(serving)),
        "mean_s": float(mean_s),
        "occupancy_s": occupancy[service],
        "schedule_s": sched,
        "draws_p10_s": draw10,
        "draws_p50_s": draw50,
        "draws_p90_s": draw90,
        "first_free_s": first_free,
        "les_s": les_row[0] / 1000 if les_row else -1.0,
        "les_age_s": (now_ms - les_row[1]) / 1000 if les_row else -1.0,
        "recent_delay_s": sum(r[0] for r in recent[:5]) / 1000 / min(n, 5) if recent else -1.0,
        "noshow_share": sum(1 for r in recent if r[1] == "no_show") / n,
        "prio_share": sum(1 for r in recent if r[2] > 0) / n,
        "priority": float(priority),
        "gap_s": max(effective_ms - now_ms, 0) / 1000,
        "hour": local.hour + local.minute / 60,
        "weekday": float(local.weekday()),
        "context_days": float(ctx.days) if ctx is not None else 0.0,
        **coverage_signals(conn, day),
    }


def _remaining(m: Model, ctx: DayContext | None, busy: dict[str, tuple[str, int, int | None]],
               occupancy: dict[str, float], means: dict[str, float], now_ms: int) -> dict[str, float]:
    """Per counter, the expected time (s) until its current ticket is done (0 when idle)."""
    out = {}
    for cid in m.counters:
        cur = busy.get(cid)
        if cur is None:
            out[cid] = 0.0
            continue
        svc, called, started = cur
        if started is None:  # called, not come yet
            out[cid] = max(occupancy.get(svc, 0.0) - (now_ms - called) / 1000, 0.0)
            continue
        speed = ctx.speed.get(cid, 1.0) if ctx else 1.0
        cv = ctx.cv.get(svc, DEFAULT_CV) if ctx else DEFAULT_CV
        out[cid] = residual_s(means.get(svc, 0.0) / speed, cv, (now_ms - started) / 1000)
    return out


DEFAULT_CV = 0.5


def _latest_services(conn: sqlite3.Connection, m: Model, day: str,
                     service: str) -> tuple[list[int | None], list[tuple[int, int]]]:
    """The line's latest completed services today, latest first, from one index range: the
    service times (ms) of the latest `estimate_window` started, and (finished_ms, ms the
    counter was taken) of the latest `estimate_window` called."""
    window = m.rules_for(service).estimate_window
    served: list[int | None] = []
    called: list[tuple[int, int]] = []
    for finished_ms, called_ms, started_ms in conn.execute(
            "SELECT finished_ms, called_ms, started_ms FROM tickets WHERE status = 'completed' AND service = ?"
            " AND day = ? ORDER BY finished_ms DESC", (service, day)):
        if started_ms is not None and len(served) < window:
            served.append(finished_ms - started_ms if finished_ms is not None else None)
        if called_ms is not None and finished_ms is not None and len(called) < window:
            called.append((finished_ms, finished_ms - called_ms))
        if len(served) >= window and len(called) >= window:
            break
    return served, called


MEAN_PRIOR_ROWS = 40  # the recent days' mean counts as this many of today's services


def _blended_mean_s(m: Model, ctx: DayContext | None, service: str, latest_ms: list[int | None]) -> float:
    """The service's mean time: today's latest services (`_latest_services_ms`), shrunk towards
    the recent days' mean (a window of 20 services alone is off by 10-15% often enough to
    shift every estimate)."""
    usable = [d / 1000 for d in latest_ms if d is not None and d >= 0]
    prior = ctx.mean.get(service) if ctx is not None else None
    if prior is None:
        return sum(usable) / len(usable) if usable else float(m.rules_for(service).default_service_s)
    return (sum(usable) + MEAN_PRIOR_ROWS * prior) / (len(usable) + MEAN_PRIOR_ROWS)


def _occupancy_s(conn: sqlite3.Connection, m: Model, day: str, service: str, completed: list[tuple[int, int]]) -> float:
    """How long a counter is taken per call of this service lately: service time for those
    served (`completed`, from _latest_services), the calling time for those who did not come
    (so people who left count less)."""
    rules = m.rules_for(service)
    rows = completed + [tuple(r) for r in conn.execute(
        "SELECT finished_ms, finished_ms - called_ms FROM tickets WHERE status = 'no_show' AND service = ? AND day = ?"
        " AND called_ms IS NOT NULL AND finished_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT ?",
        (service, day, rules.estimate_window)).fetchall()]
    rows.sort(reverse=True)
    usable = [r[1] for r in rows[:rules.estimate_window] if r[1] is not None and r[1] >= 0]
    return sum(usable) / len(usable) / 1000 if usable else float(rules.default_service_s)



SCHEDULE_ROWS = 24  # tickets per service and class played through the virtual schedule; beyond, a fluid rate
SCHEDULE_STEPS = 400
# A line's row: (order key, service, likelihood it is there when called, a booking not checked in yet)
Row = tuple[tuple[int, int, int, str], str, float, bool]
LATE_START_MS = 15 * 60_000
FINISHING_MS = 30 * 60_000  # an open counter this soon after its usual stretch ended is finishing up


def _availability(c_id: str, is_open: bool, ctx: DayContext | None, now_ms: int) -> list[tuple[int, int]]:
    """When a counter will be open from now on: today's usual hours (DayContext), the current
    stretch for an open counter (to its usual end), later stretches for a closed one."""
    spans = list(ctx.hours.get(c_id, ())) if ctx is not None else []
    if not spans:
        return [(now_ms, INF_MS)] if is_open else []
    later = [(a, b) for a, b in spans if a > now_ms]
    if not is_open:
        # A stretch that usually starts about now (the first ticket of the day comes as the
        # counters open) counts from now; one that started long ago without it, does not.
        starting = [(now_ms, b) for a, b in spans if now_ms - LATE_START_MS <= a <= now_ms < b]
        return starting + later
    current = next(((a, b) for a, b in spans if a <= now_ms < b), None)
    if current is None and any(0 <= now_ms - b <= FINISHING_MS for _, b in spans):
        # Its usual stretch has just ended: it is finishing its last ticket before closing (a
        # lunch break, an early close), not open for the rest of the day.
        return later
    if current is None:  # open outside its usual hours: until its next usual stretch ends
        return [(now_ms, later[0][1])] + later[1:] if later else [(now_ms, INF_MS)]
    return [(now_ms, current[1])] + later


def schedule_s(conn: sqlite3.Connection, m: Model, ctx: DayContext | None, open_ids: set[str],
               busy: dict[str, tuple[str, int, int | None]], remaining: dict[str, float], occupancy: dict[str, float],
               means: dict[str, float], *, service: str, priority: int, effective_ms: int, ahead: int, now_ms: int,
               day: str, ticket: str | None = None) -> tuple[float, float, float, float]:
    """Play the waiting line through the counters with the engine's own calling rule: each
    counter starts when its current ticket should end (expected remaining service), takes the
    recent occupancy time per call divided by its speed, and is open when it usually is today
    (breaks, early closes and staff arriving later, from DayContext); priority tickets that
    usually arrive meanwhile go before a normal one. The time at which some counter would
    call this ticket (s), -1 when no counter serves the service today; then, with few
    ahead, the 10th, 50th and 90th percentiles of DRAWS plays with random service times."""
    counters = []
    for c in m.counters.values():
        spans = _availability(c.id, c.id in open_ids, ctx, now_ms)
        if spans:
            speed = ctx.speed.get(c.id, 1.0) if ctx else 1.0
            start = now_ms + remaining.get(c.id, 0.0) * 1000 if c.id in open_ids else spans[0][0]
            counters.append([float(start), spans, 0, c.services, max(speed, 0.2), c.id])
    if not any(service in c[3] for c in counters):
        return -1.0, -1.0, -1.0, -1.0
    wanted = {s for c in counters for s in c[3] if s in m.services}
    rules = {s: m.rules_for(s) for s in m.services}
    lines: dict[str, list[Row]] = {}
    truncated: set[str] = set()
    mine_key = q.order_key(q.Waiting(ticket or "~", service, priority, effective_ms, None), rules[service], now_ms)
    for s in sorted(wanted):  # in a fixed order: the plays draw their random numbers line by line
        seen: dict[str, Row] = {}
        # Per priority class (highest first), the head of the class: bounded index ranges.
        below = 1 << 62
        while True:
            row = conn.execute("SELECT priority FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                               " AND priority < ? ORDER BY priority DESC LIMIT 1", (s, day, below)).fetchone()
            if row is None:
                break
            below = row[0]
            rows = conn.execute("SELECT id, service, priority, effective_ms, reserved_counter FROM tickets"
                                " WHERE status = 'waiting' AND service = ? AND day = ? AND priority = ?"
                                " ORDER BY effective_ms LIMIT ?", (s, day, below, SCHEDULE_ROWS)).fetchall()
            if len(rows) >= SCHEDULE_ROWS:
                truncated.add(s)
            for r in rows:
                w = q.Waiting(*r)
                key = q.order_key(w, rules[s], now_ms)
                if w.reserved_counter is None and key < mine_key and w.id != ticket:
                    seen[w.id] = (key, s, 1.0, False)
        if ctx is not None and s in ctx.late:
            # Bookings of a slot before this ticket's time that have not checked in yet: each
            # takes its place ahead when it comes, as likely as such bookings came lately.
            for code, start in conn.execute(
                    "SELECT code, json_extract(body, '$.start') FROM bookings b WHERE json_extract(body, '$.start')"
                    " BETWEEN ? AND ? AND status = 'booked' AND json_extract(body, '$.service') = ?"
                    " AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.booking = b.code) LIMIT ?",
                    (now_ms // 1000 - BOOKED_LATE_S, effective_ms // 1000, s, SCHEDULE_ROWS)):
                start_ms = int(start) * 1000
                p_show = ctx.shows(s, (now_ms - start_ms) / 1000)
                key = (0, start_ms, 0, code)
                if p_show > 0.02 and key < mine_key:
                    seen[code] = (key, s, p_show, True)
        lines[s] = sorted(seen.values())
    def cost(s: str, waited_s: float, speed: float) -> float:
        if ctx is not None and s in ctx.gone and s in means:
            return ctx.duration_s(s, waited_s, means[s] / speed)
        return occupancy.get(s, 0.0) / speed

    jumps = priority == 0 and ctx is not None
    # Each counter's counter time per call of each line it serves (c[6]), at its speed.
    play = [c[:6] + [{s: (lambda w, s=s, speed=c[4]: cost(s, w, speed)) for s in c[3] if s in lines}]
            for c in counters]
    # Who arrives meanwhile and goes first: priority tickets, and for a booking checked in
    # before its slot, the walk-ins who come before its slot starts.
    expected = (lambda s, t: ctx.prio_arrivals(s, now_ms, t) + ctx.walkin_arrivals(s, now_ms, min(t, effective_ms))
                ) if jumps and ctx is not None else None
    found, same_done = _play(play, lines, truncated, expected, service, now_ms)
    if found is None:
        # Played out what was fetched: the rest of this line at the fluid rate of its counters.
        mine = [c for c in play if service in c[3]]
        rest = max(ahead - same_done, 0)
        end = _fluid_end(mine, rest * occupancy[service] * 1000)  # counter-ms at speed 1
        if rest and end < INF_MS and ctx is not None and service in ctx.gone and service in means:
            # Those still ahead will have waited about as long as this ticket when called.
            end = _fluid_end(mine, rest * cost(service, (end - now_ms) / 1000, 1.0) * 1000)
        found = end
    point_s = (found - now_ms) / 1000 if found < INF_MS else -1.0
    rows = sum(len(v) for v in lines.values())
    if point_s < 0 or truncated or rows > DRAW_ROWS:
        return point_s, point_s, point_s, point_s
    # Few ahead: the same play with random service times (the spread of the order in which
    # counters free up matters more than their means), more times the shorter the play
    # (DRAW_BUDGET rows played in all, DRAWS to DRAWS_MAX plays): with nobody or a few
    # ahead the plays are cheap, and the median of only 24 is noisy enough to add 3-5% to
    # the calm bank's error.
    plays = max(DRAWS, min(DRAWS_MAX, DRAW_BUDGET // max(rows, 1)))
    rng = random.Random(now_ms * 8 + priority)
    cvs = {s: (ctx.cv.get(s, DEFAULT_CV) if ctx else DEFAULT_CV) for s in m.services}
    # What every play draws from is fixed for this ticket: each service's lognormal at each
    # counter's speed, each busy counter's remaining time, each line's arrival rates. Set up
    # once here, a play only draws (the same random numbers in the same order as drawing
    # with the parameters worked out afresh each time).
    draws: dict[tuple[str, float], Callable[[float], float]] = {}
    for s in lines:
        for speed in {c[4] for c in counters if s in c[3]}:
            if ctx is not None and s in ctx.gone and s in means:
                draws[s, speed] = _gone_draw(rng, ctx.gone[s], ctx.gone_call_s.get(s, 60.0), means[s] / speed, cvs[s])
            else:
                draws[s, speed] = _service_draw(rng, occupancy.get(s, 0.0) / speed, cvs[s])

    residuals = []
    for i, c in enumerate(counters):
        cur = busy.get(c[5])
        if cur is not None and cur[2] is not None and c[0] > now_ms:
            svc, started = cur[0], cur[2]
            residuals.append((i, _residual_draw(rng, means.get(svc, 0.0) / c[4], cvs.get(svc, DEFAULT_CV),
                                                (now_ms - started) / 1000)))
    # Who may arrive meanwhile: per line, the priority tickets within the horizon and the
    # walk-ins before this ticket's time (none for a walk-in: their window is empty), one
    # Poisson process at their summed rates, drawn only as far as a play asks (a play mostly
    # ends minutes in, the horizon is an hour) from a generator of their own.
    rates = {}
    if jumps and ctx is not None:
        end_prio = now_ms + ARRIVALS_HORIZON_MS
        end_walkin = min(effective_ms, end_prio)
        for s in lines:
            segments = _arrival_segments(ctx.prio_rate.get(s), ctx.walkin_rate.get(s), ctx.midnight_ms,
                                         now_ms, end_prio, end_walkin)
            if segments:
                rates[s] = segments
    arrivals_random = random.Random(now_ms * 8 + priority + ARRIVALS_SEED).random if rates else None
    # A line's rows as every play has them: a booking that comes is certain once drawn.
    certain = all(row[2] >= 1.0 for rows in lines.values() for row in rows)
    maybe = {} if certain else {s: [(row, row[2], (row[0], row[1], 1.0, row[3])) for row in rows]
                                for s, rows in lines.items()}
    # Every play starts from the same counters but for the busy ones' remaining times: those
    # without are settled once here.
    counters = [c[:6] + [{s: draws[s, c[4]] for s in c[3] if s in lines}] for c in counters]
    drawn_at = {i for i, _ in residuals}
    settled = [(c[0], i) for i, c in enumerate(counters) if i not in drawn_at and _settle(c)]
    outcomes = []
    for _ in range(plays):
        play = [c[:] for c in counters]
        free = settled[:]
        for i, residual in residuals:
            c = play[i]
            c[0] = now_ms + residual() * 1000
            if _settle(c):
                free.append((c[0], i))
        arrivals = None
        if arrivals_random is not None:
            arrivals = _Arrivals(rates, now_ms, arrivals_random, lines)
        drawn_lines = lines if certain else {
            s: [row if p >= 1.0 else sure for row, p, sure in rows if p >= 1.0 or rng.random() < p]
            for s, rows in maybe.items()}
        t, _ = _play(play, drawn_lines, truncated, arrivals.by if arrivals else None, service, now_ms, free,
                     arrivals.lines if arrivals else None)
        outcomes.append((t - now_ms) / 1000 if t is not None and t < INF_MS else point_s)
    outcomes.sort()
    # The point: the mean of the middle third of the plays, a steadier median than the middle one.
    middle = outcomes[plays // 3:plays - plays // 3]
    return point_s, outcomes[plays // 10], sum(middle) / len(middle), outcomes[-1 - plays // 10]


DRAWS = 24
DRAWS_MAX = 96
DRAW_BUDGET = 192
DRAW_ROWS = 24


def _service_draw(rng: random.Random, mean: float, cv: float) -> Callable[[float], float]:
    """Draws of a lognormal service time (mean, cv) from `rng`, its parameters worked out once
    (the argument, how long the person waited, does not matter here)."""
    if mean <= 0 or cv <= 0:
        fixed = max(mean, 0.0)
        return lambda _waited_s: fixed
    s2 = math.log(1 + cv * cv)
    mu, sigma = math.log(mean) - s2 / 2, math.sqrt(s2)
    random_, log, exp, magic = rng.random, math.log, math.exp, random.NV_MAGICCONST

    def draw(_waited_s: float) -> float:
        # rng.lognormvariate(mu, sigma) with its normalvariate (Kinderman and Monahan) inline:
        # the same numbers from the same draws, two Python calls fewer at every step of a play
        while True:
            u1 = random_()
            u2 = 1.0 - random_()
            z = magic * (u1 - 0.5) / u2
            if z * z / 4.0 <= -log(u2):
                return exp(mu + z * sigma)
    return draw


def _gone_draw(rng: random.Random, curve: tuple[float, ...], call_s: float, mean: float,
               cv: float) -> Callable[[float], float]:
    """Draws of a call's counter time after the person waited `waited_s`: the calling time if
    they are gone (by `curve`, DayContext.gone), else a service time (`_service_draw`'s)."""
    random_ = rng.random
    if mean <= 0 or cv <= 0:
        service = _service_draw(rng, mean, cv)

        def draw_fixed(waited_s: float) -> float:
            return call_s if random_() < curve[bisect_right(GONE_EDGES_S, waited_s)] else service(waited_s)
        return draw_fixed
    s2 = math.log(1 + cv * cv)
    mu, sigma = math.log(mean) - s2 / 2, math.sqrt(s2)
    log, exp, magic, edges = math.log, math.exp, random.NV_MAGICCONST, GONE_EDGES_S

    def draw(waited_s: float) -> float:
        if random_() < curve[bisect_right(edges, waited_s)]:
            return call_s
        while True:  # _service_draw's lognormal, inline: this runs at every step of a play
            u1 = random_()
            u2 = 1.0 - random_()
            z = magic * (u1 - 0.5) / u2
            if z * z / 4.0 <= -log(u2):
                return exp(mu + z * sigma)
    return draw


def _residual_draw(rng: random.Random, mean: float, cv: float, elapsed: float) -> Callable[[], float]:
    """Draws of the remaining service time of a lognormal (mean, cv) that has lasted `elapsed`."""
    if mean <= 0:
        return lambda: 0.0
    if cv <= 0 or elapsed <= 0:
        service = _service_draw(rng, mean, cv)
        return lambda: max(service(0.0) - max(elapsed, 0.0), 0.0)
    s2 = math.log(1 + cv * cv)
    sd = math.sqrt(s2)
    mu = math.log(mean) - s2 / 2
    surv = 0.5 * math.erfc(-((mu - math.log(elapsed)) / sd) / math.sqrt(2))
    if surv < 1e-6:
        fixed = residual_s(mean, cv, elapsed)
        return lambda: fixed
    random_, inv_cdf = rng.random, _NORMAL.inv_cdf

    def draw() -> float:
        u = 1 - random_() * surv  # a quantile of S beyond `elapsed`, kept within (1e-9, 1 - 1e-9)
        u = 1e-9 if u < 1e-9 else (1 - 1e-9 if u > 1 - 1e-9 else u)
        left = math.exp(mu + sd * inv_cdf(u)) - elapsed
        return left if left >= 0.0 else 0.0  # max(left, 0.0)
    return draw


_NORMAL = NormalDist()
ARRIVALS_HORIZON_MS = 3_600_000


def _arrival_segments(prio: tuple[float, ...] | None, walkin: tuple[float, ...] | None, midnight_ms: int,
                      now_ms: int, end_ms: int, walkin_end_ms: int) -> list[tuple[float, float]]:
    """The usual arrival rate (per ms) of one line and the end (ms) of each stretch it holds,
    from `now_ms` to `end_ms`: priority tickets per SLOT_MIN of the day, plus the walk-ins
    until `walkin_end_ms`. Empty when nobody is expected."""
    out: list[tuple[float, float]] = []
    t = float(now_ms)
    slot = int((t - midnight_ms) // 60_000 // SLOT_MIN)
    while t < end_ms:
        edge = min(float(midnight_ms + (slot + 1) * SLOT_MIN * 60_000), float(end_ms))
        rate = prio[slot] if prio and 0 <= slot < len(prio) else 0.0
        if walkin and t < walkin_end_ms and 0 <= slot < len(walkin):
            if walkin_end_ms < edge:  # the walk-ins' window ends inside this slot
                out.append(((rate + walkin[slot]) / 60_000, float(walkin_end_ms)))
                t = float(walkin_end_ms)
                continue
            rate += walkin[slot]
        out.append((rate / 60_000, edge))
        t = edge
        slot += 1
    return out if any(rate > 0 for rate, _ in out) else []


class _Arrivals:
    """One play's arrivals: per line a Poisson process at the rates of `_arrival_segments`,
    its moments drawn in order and only as far as the play asks (`by`: how many by then);
    a line's first moment is drawn when the play first asks about it."""

    __slots__ = ("rates", "now_ms", "random", "lines")

    def __init__(self, rates: dict[str, list[tuple[float, float]]], now_ms: int,
                 random_: Callable[[], float], quiet: Iterable[str] = ()) -> None:
        self.rates, self.now_ms, self.random = rates, float(now_ms), random_
        # line -> [next moment, how many before it, stretch]; the `quiet` lines (nobody
        # expected) are there from the start, never to come: a play reads them without a call.
        self.lines: dict[str, list[Any]] = {s: [math.inf, 0, 0] for s in quiet if s not in rates}

    def by(self, s: str, t: float) -> float:
        line = self.lines.get(s)
        if line is None:
            if s not in self.rates:
                return 0.0
            line = self.lines[s] = [0.0, 0, 0]
            self._next(s, line, self.now_ms)
        while line[0] <= t:
            line[1] += 1
            if line[1] < MAX_ARRIVALS:
                self._next(s, line, line[0])
            else:
                line[0] = math.inf
        return float(line[1])

    def _next(self, s: str, line: list[Any], t: float) -> None:
        segments, k, log, random_ = self.rates[s], line[2], math.log, self.random
        while k < len(segments):
            rate, edge = segments[k]
            if rate > 0:
                t_next = t - log(1.0 - random_()) / rate
                if t_next < edge:
                    line[0], line[2] = t_next, k
                    return
            t = edge  # memoryless: start again at the stretch's edge with the next rate
            k += 1
        line[0], line[2] = math.inf, k


MAX_ARRIVALS = 60  # per line and play: beyond, the line's future is not what decides this ticket
ARRIVALS_SEED = 1 << 62  # the arrivals' generator's seed is the plays' one plus this: never another's


def _play(counters: list[list[Any]], lines: dict[str, list[Row]], truncated: set[str],
          arrived: Callable[[str, float], float] | None, service: str, now_ms: int,
          free: list[tuple[float, int]] | None = None,
          upcoming: dict[str, list[Any]] | None = None) -> tuple[float | None, int]:
    """One play of the virtual schedule: (when this ticket is called (ms), INF_MS if never, or
    None when a truncated line ran out first; how many of its own line were called before).
    A counter is [free at (ms), open stretches, index of the current one, services, speed, id,
    {line: its counter time (s) for a call of that line after waiting w: f(w)}]. `arrived(s, t)`:
    how many jump the line `s` by `t`; `upcoming`: its lines as `_Arrivals` keeps them, read
    without a call while their next moment is later. `free`: the counters still open as
    (when next free, index), already settled (`_settle`), when the caller has them."""
    heads = dict.fromkeys(lines, 0)
    taken: set[tuple[str, int]] = set()
    jumps = dict.fromkeys(lines, 0.0) if arrived is not None else {}
    same_done = 0
    # The counters still open, by when each is next free (ties: the first in their order).
    if free is None:
        free = [(c[0], i) for i, c in enumerate(counters) if _settle(c)]
    heapq.heapify(free)
    soon = upcoming if upcoming is not None else {}
    heappop, heapreplace = heapq.heappop, heapq.heapreplace
    for _ in range(SCHEDULE_STEPS):
        if not free:
            return float(INF_MS), same_done
        best_t, best_i = free[0]
        best_c = counters[best_i]
        # A counter free now calls who is here now: bookings not checked in are not (yet).
        now_free = best_t <= now_ms
        pick, at = None, 0
        for s in best_c[3]:
            rows = lines.get(s)
            if rows is None:
                continue
            j, n = heads[s], len(rows)
            if taken or now_free:
                while j < n and ((s, j) in taken or (rows[j][3] and now_free)):
                    j += 1
            if j < n and (pick is None or rows[j][0] < pick[0]):
                pick, at = rows[j], j
        t = -1.0  # when this counter is free again: not known yet
        if (pick is None or pick[0][0] == 0) and arrived is not None:
            # Priority arrivals expected by now for this counter's services go first.
            for s in best_c[3]:
                if s not in jumps:
                    continue
                line = soon.get(s)
                if (line[1] if line is not None and line[0] > best_t else arrived(s, best_t)) - jumps[s] >= 1.0:
                    jumps[s] += 1.0
                    t = best_t + best_c[6][s](0.0) * 1000
                    pick = None
                    break
        if t < 0:
            if pick is None:
                if service in best_c[3]:  # the first counter free for this service finds nobody ahead
                    return best_t, same_done
                best_c[1] = []  # nothing left for this counter
                heappop(free)
                continue
            s = pick[1]
            if at == heads[s]:
                at += 1
                while (s, at) in taken:
                    at += 1
                heads[s] = at
            else:
                taken.add((s, at))
            if pick[2] < 1.0:  # a booking that may come (by its likelihood): it has just arrived
                t = best_t + pick[2] * best_c[6][s](0.0) * 1000
            else:
                t = best_t + best_c[6][s]((best_t - pick[0][1]) / 1000) * 1000
            if s == service:
                same_done += 1
        # Queue the counter again at its new time, settled as `_settle` does (inline: this
        # runs at every step of every play).
        spans, k = best_c[1], best_c[2]
        n = len(spans)
        while k < n and t >= spans[k][1]:
            k += 1
        best_c[2] = k
        if k >= n:
            best_c[0] = t
            heappop(free)
        else:
            if spans[k][0] > t:
                t = float(spans[k][0])
            best_c[0] = t
            heapreplace(free, (t, best_i))
        if pick is not None and s in truncated and heads[s] >= len(lines[s]):
            return None, same_done
    return None, same_done


def _settle(c: list[Any]) -> bool:
    """Move a play's counter (free at c[0]) past its open stretches that ended by then and to
    the start of the next one (c[2] indexes its stretches c[1]); false when none is left."""
    t, spans, k = c[0], c[1], c[2]
    n = len(spans)
    while k < n and t >= spans[k][1]:
        k += 1
    c[2] = k
    if k >= n:
        return False
    if spans[k][0] > t:
        c[0] = float(spans[k][0])
    return True


def _fluid_end(counters: list[list[Any]], work: float) -> float:
    """When `work` (ms at speed 1) is done by these counters from their current times, each
    at its speed while open."""
    points = []
    for c in counters:
        t, spans, k, _, speed = c[:5]
        for a, b in spans[k:]:
            a = max(a, t)
            if a < b:
                points.append((a, speed))
                points.append((min(b, INF_MS), -speed))
    if not points:
        return float(INF_MS)
    points.sort()
    rate, last = 0.0, points[0][0]
    for at, d in points:
        if rate > 0 and work <= rate * (at - last):
            return last + work / rate
        work -= rate * (at - last)
        rate += d
        last = at
    return float(last)


# -- estimators ---------------------------------------------------------------------------------
def naive(sig: dict[str, float]) -> Estimate:
    return point(q.estimate_wait_s(int(sig["ahead"]), int(sig["open"]), sig["mean_s"]))


def les(sig: dict[str, float]) -> Estimate:
    """Last-to-enter-service: the delay of the latest ticket of this service and class called."""
    if sig["les_s"] < 0:
        return naive(sig)
    return point(sig["les_s"])


def features(sig: dict[str, float]) -> list[float]:
    """The learned model's inputs: the median of the virtual schedule's plays (the physics of
    the line, DRAWS times), or its expected play when many are ahead, and an intercept.

    Richer inputs were tried (the people ahead times the mean, LES, recent delays, priority
    jumps, late bookings, hour of day x schedule, ...) as correction terms: out of fold they
    looked better on some regimes and did worse on the later days, as a few weeks of history
    hold only a few dozen independent days (a day's errors are shared by its tickets). Their
    information now enters the schedule itself."""
    no_counter = sig["schedule_s"] < 0
    sched = (sig["ahead"] + 1) * sig["occupancy_s"] if no_counter else sig["schedule_s"]
    draw = sig.get("draws_p50_s", sched)
    return [1.0, sched if draw < 0 else draw]


FEATURE_NAMES = ("intercept", "draws_p50_s")
# The trainer chooses, per model, what predicts best out of fold: the schedule's median as it
# is, or a least-absolute-error line through it (waits_train.fit).
FEATURE_SETS = ((0, 1),)


@dataclass(frozen=True)
class WaitModel:
    """A trained model: coefficients, then residual quantiles per bin of the linear prediction."""

    coef: tuple[float, ...]
    edges: tuple[float, ...]          # bin edges of the linear prediction (len = bins - 1)
    q10: tuple[float, ...]
    q50: tuple[float, ...]
    q90: tuple[float, ...]
    meta: dict[str, Any]

    def predict(self, sig: dict[str, float]) -> Estimate:
        x = features(sig)
        base = sum(c * v for c, v in zip(self.coef, x))
        b = bisect_right(self.edges, base)
        p50 = max(base + self.q50[b], 0.0)
        p10 = min(max(base + self.q10[b], 0.0), p50)
        p90 = max(base + self.q90[b], p50)
        return Estimate(int(round(p10)), int(round(p50)), int(round(p90)))

    def to_json(self) -> dict[str, Any]:
        return {"version": MODEL_VERSION, "features": list(FEATURE_NAMES), "coef": list(self.coef),
                "edges": list(self.edges), "q10": list(self.q10), "q50": list(self.q50), "q90": list(self.q90),
                "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WaitModel:
        if data.get("version") != MODEL_VERSION or list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError("wait model of another version or feature set")
        bins = len(data["edges"]) + 1
        if len(data["coef"]) != len(FEATURE_NAMES) or not all(len(data[k]) == bins for k in ("q10", "q50", "q90")):
            raise ValueError("wait model arrays have the wrong lengths")
        return cls(tuple(map(float, data["coef"])), tuple(map(float, data["edges"])), tuple(map(float, data["q10"])),
                   tuple(map(float, data["q50"])), tuple(map(float, data["q90"])), dict(data.get("meta") or {}))


def regime(sig: dict[str, float]) -> str:
    """Which of the branch's models answers: waits with nobody ahead (a counter free, or the
    first of the busy ones to free up), with few, some or many ahead behave differently (a
    residual service, a sum of a few services, a fluid line)."""
    ahead = sig["ahead"]
    if ahead <= 0:
        return "none"
    return "few" if ahead <= 3 else ("some" if ahead <= 10 else "many")


REGIMES = ("none", "few", "some", "many")
ANY = "*"

# -- adaptive conformal inference within the branch day -------------------------------------
# Gibbs & Candes (NeurIPS 2021): the level is moved after each outcome by gamma x (target miss
# rate - miss), so the share of misses is driven to the target whatever the shift between the
# days the model learnt from and today. Here the moved quantity is the log of a factor
# scaling the range around its point; summed over today's served tickets the updates are
# order-free, so the factor is a function of today's counts (wait_coverage), the same on
# every node. Yesterday's end carries over at half weight.
ACI_GAMMA = 0.16
ACI_TARGET_MISS = 0.2
ACI_CARRY = 0.5
ACI_DAYS = 14
ACI_MIN, ACI_MAX = 0.25, 4.0


def aci_log_factor(n: float, missed: float, carried: float = 0.0) -> float:
    """The range's log width factor after `n` served tickets with a range today, `missed` of
    them outside it, from `carried` at the day's start."""
    return carried + ACI_GAMMA * (missed - ACI_TARGET_MISS * n)


def aci_carried(days: list[tuple[int, int]]) -> float:
    """The log factor a day starts from: each earlier day's end (counts (n, missed), oldest
    first) carried at ACI_CARRY per day."""
    carried = 0.0
    for n, missed in days:
        carried = ACI_CARRY * aci_log_factor(n, missed, carried)
    return carried


def adaptive_range(est: Estimate, sig: dict[str, float]) -> Estimate:
    """The model's range scaled about its point by today's factor: a day on which the shown
    ranges missed more than 20% of waits widens them, one on which they held more narrows them.
    A range 0-0 (a counter free) stays 0-0."""
    log_f = aci_log_factor(sig.get("cov_n", 0.0), sig.get("cov_missed", 0.0), sig.get("cov_carried", 0.0))
    f = min(max(math.exp(log_f), ACI_MIN), ACI_MAX)
    if f == 1.0:
        return est
    p10 = max(est.p50 - f * (est.p50 - est.p10), 0.0)
    p90 = est.p50 + f * (est.p90 - est.p50)
    return Estimate(int(round(p10)), est.p50, int(round(p90)))


def coverage_signals(conn: sqlite3.Connection, day: str) -> dict[str, float]:
    """Today's served tickets with a range and those it missed, and the factor carried from the
    days before (wait_coverage: one primary-key range of at most ACI_DAYS + 1 rows)."""
    rows = conn.execute("SELECT day, n, low + high FROM wait_coverage WHERE day <= ? ORDER BY day DESC LIMIT ?",
                        (day, ACI_DAYS + 1)).fetchall()
    today = rows[0] if rows and rows[0][0] == day else None
    before = [(n, missed) for d, n, missed in reversed(rows) if d != day][-ACI_DAYS:]
    return {"cov_n": float(today[1]) if today else 0.0, "cov_missed": float(today[2]) if today else 0.0,
            "cov_carried": round(aci_carried(before), 6)}


@dataclass(frozen=True)
class BranchModel:
    """The branch's models: per regime (waits.regime) a pooled one and one per service with
    enough history; a pooled and per-service model over all regimes for the rest. Each
    model's range is calibrated on its own out-of-fold residuals."""

    pooled: WaitModel
    services: dict[str, WaitModel]
    regimes: dict[str, dict[str, WaitModel]] = field(default_factory=dict)

    def pick(self, sig: dict[str, float], service: str) -> WaitModel:
        by = self.regimes.get(regime(sig))
        if by:
            found = by.get(service) or by.get(ANY)
            if found is not None:
                return found
        return self.services.get(service, self.pooled)

    def predict(self, sig: dict[str, float], service: str, *, adaptive: bool = True) -> Estimate:
        """The ticket's estimate: the model's range, widened or narrowed by today's coverage
        (`adaptive_range`) unless `adaptive` is false (the model's own range)."""
        est = self.pick(sig, service).predict(sig)
        return adaptive_range(est, sig) if adaptive else est

    def to_json(self) -> dict[str, Any]:
        return {"version": MODEL_VERSION, "pooled": self.pooled.to_json(),
                "services": {s: m.to_json() for s, m in sorted(self.services.items())},
                "regimes": {r: {s: m.to_json() for s, m in sorted(by.items())} for r, by in sorted(self.regimes.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchModel:
        if data.get("version") != MODEL_VERSION:
            raise ValueError("wait model of another version")
        regimes = {str(r): {str(s): WaitModel.from_json(m) for s, m in by.items()}
                   for r, by in (data.get("regimes") or {}).items()}
        return cls(WaitModel.from_json(data["pooled"]),
                   {str(s): WaitModel.from_json(m) for s, m in (data.get("services") or {}).items()},
                   regimes)

    @property
    def size_bytes(self) -> int:
        return len(json.dumps(self.to_json(), separators=(",", ":")))


def load_model(data_dir: Path) -> BranchModel | None:
    path = data_dir / MODEL_FILE
    if not path.exists():
        return None
    try:
        return BranchModel.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring %s: %s", path, err)
        return None


def save_model(data_dir: Path, model: BranchModel) -> None:
    path = data_dir / MODEL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(model.to_json(), separators=(",", ":")))
    tmp.replace(path)


def learned(sig: dict[str, float], model: BranchModel | None, service: str) -> Estimate:
    """The learned estimate, or naive until a model has been trained."""
    return model.predict(sig, service) if model is not None else naive(sig)


def shown(sig: dict[str, float], model: BranchModel | None, service: str) -> tuple[int, list[int] | None]:
    """(point s, [p10, p90] or None) from a ticket's signals: naive with no range until trained."""
    if model is None:
        return naive(sig).p50, None
    est = model.predict(sig, service)
    return est.p50, [est.p10, est.p90]


def estimate(conn: sqlite3.Connection, m: Model, model: BranchModel | None, *, service: str, priority: int,
             effective_ms: int, ahead: int, now_ms: int, day: str, ticket: str | None = None,
             record_issued_ms: int | None = None, ctx: DayContext | None = None) -> tuple[int, list[int] | None]:
    """The node's estimate for one ticket (or a newcomer): (point s, [p10, p90] or None).

    Until a model has been trained it is the naive formula, with no range. With
    `record_issued_ms` (at issue, on the writer) the signals are kept for training."""
    sig = signals(conn, m, service=service, priority=priority, effective_ms=effective_ms, ahead=ahead,
                  now_ms=now_ms, day=day, ticket=ticket, ctx=ctx)
    if record_issued_ms is not None and ticket is not None:
        record(conn, ticket, day, service, record_issued_ms, sig)
    return shown(sig, model, service)


def record(conn: sqlite3.Connection, ticket: str, day: str, service: str, issued_ms: int,
           sig: dict[str, float]) -> None:
    """Keep a new ticket's signals for the nightly training (writer thread, in the issue transaction)."""
    conn.execute("INSERT OR REPLACE INTO wait_features (ticket, day, service, issued_ms, signals) VALUES (?, ?, ?, ?, ?)",
                 (ticket, day, service, issued_ms, json.dumps(sig, separators=(",", ":"))))
