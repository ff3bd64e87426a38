"""Analytics pre-aggregated as branch events arrive (issue 10): the console's analytics pages
read these rows only, never raw events or tickets.

Each ticket contributes to one row of ``analytics_hours`` (branch, service, local day, local
hour of issue in the branch's time zone), of its daily roll-up ``analytics_days`` (what pages
without hours read: ten times fewer rows), of the organization's daily roll-up
``analytics_org_days`` (an organization's days without a row per branch), of the running totals
``analytics_running`` (below) and, once a counter called it, one row of ``analytics_staff``
(branch, staff member, service, local day, hour). Its contribution is a
function of HQ's ticket row (the branch fold's), kept in ``tickets.agg``; whenever the ticket
is re-folded, the old contribution is subtracted and the new one added. So the aggregates are
exactly the sum over the stored tickets, whatever order, duplicates or re-folds the events
came with (ingest stores each event once; a re-fold that changes nothing changes nothing here).

Waits go into fixed buckets (``EDGES``) for the percentiles: p50/p90 are interpolated inside
their bucket, so they are within half a bucket of the exact order statistic (30 s under half an
hour, 2.5 min to an hour, 5 min to two hours); the share within a target wait is exact when the
target is a bucket edge (every whole minute to 30, every 5 to 60, every 10 to 120). All the SQL
is portable (SQLite and PostgreSQL): upserts that add, dates computed here in Python.

**Running totals** (``analytics_running``): for each branch, service, local hour and day D, the
sum of ``analytics_hours`` over that branch, service and hour on D and every earlier day of D's
weekday. So any period's figures per (branch, service, weekday, hour) are one row at the period's
last day minus one at the day before it began, per weekday: the heat map and bottlenecks read at
most twice the weekday-hours of the branches, whatever the period (:func:`running_pairs`). Each
branch's days of one weekday run week by week without a gap from its first to its last day with
tickets (``analytics_running_span``): a day reaching past the last copies the last row of every
key forward, and a change on day D is added to D's row and every later week's. A missing row is
a zero total. Rows are exact sums of the same contributions, so the same exactness holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

#: Upper edges of the wait buckets, seconds: bucket i holds EDGES[i-1] < wait <= EDGES[i]; the
#: last bucket (index len(EDGES)) holds longer waits.
EDGES: tuple[int, ...] = (tuple(60 * m for m in range(1, 31)) + tuple(60 * m for m in range(35, 61, 5))
                          + tuple(60 * m for m in range(70, 121, 10)) + (150 * 60, 180 * 60, 240 * 60))
BUCKETS = len(EDGES) + 1
HIST = tuple(f"w{i}" for i in range(BUCKETS))
#: The additive measures of a row (counts, and sums in milliseconds).
COUNTS_V1 = ("tickets", "walkins", "bookings", "called", "served", "no_show_walkin", "no_show_booking", "abandoned",
             "wait_n", "wait_ms", "service_n", "service_ms", "est_n", "est_err_ms", "est_range_n", "est_in_range")
#: booking_missed: bookings nobody checked in, marked no-show after their slot (hq/booking.py),
#: counted at their slot's local day and hour (they have no ticket).
COUNTS = COUNTS_V1 + ("booking_missed",)
MEASURES = COUNTS + HIST
HOUR_KEY = ("branch_id", "service", "day", "hour")
DAY_KEY = ("branch_id", "service", "day")
STAFF_KEY = ("branch_id", "staff", "service", "day", "hour")
ORG_DAY_KEY = ("org_id", "service", "day")
RUNNING_KEY = ("branch_id", "day", "service", "hour")
COUNTER_TYPES = ("counter.opened", "counter.paused", "counter.closed")
DAY_MS = 86_400_000


def bucket(wait_s: float) -> int:
    """The wait bucket of ``wait_s`` seconds."""
    lo, hi = 0, len(EDGES)
    while lo < hi:  # first edge >= wait
        mid = (lo + hi) // 2
        if EDGES[mid] < wait_s:
            lo = mid + 1
        else:
            hi = mid
    return lo


def bounds(i: int) -> tuple[int, int | None]:
    """(lower, upper) seconds of bucket ``i``; upper None for the last, open bucket."""
    return (EDGES[i - 1] if i else 0), (EDGES[i] if i < len(EDGES) else None)


def percentile(hist: Sequence[int], p: float) -> float | None:
    """The ``p`` quantile (0..1) of the waits in ``hist``, linear inside its bucket; the lower
    edge of the open last bucket when it falls there. None without waits."""
    n = sum(hist)
    if n <= 0:
        return None
    rank = p * n
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lo, hi = bounds(i)
            if hi is None:
                return float(lo)
            return lo + (hi - lo) * max(rank - seen, 0) / count
        seen += count
    return float(EDGES[-1])


def within(hist: Sequence[int], target_s: float) -> int:
    """How many waits are <= ``target_s``: exact on a bucket edge, interpolated inside a bucket."""
    total = 0.0
    for i, count in enumerate(hist):
        lo, hi = bounds(i)
        if hi is not None and hi <= target_s:
            total += count
        elif lo < target_s and count:
            total += count * ((target_s - lo) / (hi - lo) if hi is not None else 0)
            break
        else:
            break
    return round(total)


def exact_target(target_s: float) -> bool:
    return target_s in EDGES


def within_columns(target_s: float) -> tuple[str, str | None, float]:
    """SQL to count waits <= ``target_s`` without reading the whole histogram: (sum of the
    buckets wholly inside, the bucket cut by the target or None, the share of it inside)."""
    inside = [HIST[i] for i in range(len(EDGES)) if EDGES[i] <= target_s]
    cut = len(inside)
    lo, hi = bounds(cut)
    if hi is None or lo >= target_s:
        return " + ".join(inside) or "0", None, 0.0
    return " + ".join(inside) or "0", HIST[cut], (target_s - lo) / (hi - lo)


def local(ms: int, tz: ZoneInfo) -> tuple[str, int, int]:
    """(ISO day, hour, weekday Monday=0) of ``ms`` in ``tz``."""
    t = datetime.fromtimestamp(ms / 1000, tz)
    return t.date().isoformat(), t.hour, t.weekday()


def contribution(t: dict[str, Any], tz: ZoneInfo, staff: str | None) -> dict[str, Any] | None:
    """What one ticket row adds: {"k": [service, day, hour, weekday], "s": staff or None, "m": measures}."""
    issued = t.get("issued_ms")
    if issued is None:
        return None
    day, hour, weekday = local(issued, tz)
    m: dict[str, int] = {"tickets": 1}
    booked = bool(t.get("booking_code"))
    m["bookings" if booked else "walkins"] = 1
    called = t.get("called_ms")
    if called is not None:
        m["called"] = 1
        wait = max(called - issued, 0)
        m["wait_n"], m["wait_ms"] = 1, wait
        m[HIST[bucket(wait / 1000)]] = 1
        p50 = t.get("est_p50")
        if p50 is not None:
            m["est_n"], m["est_err_ms"] = 1, abs(p50 * 1000 - wait)
            p10, p90 = t.get("est_p10"), t.get("est_p90")
            if p10 is not None and p90 is not None:
                m["est_range_n"] = 1
                if p10 * 1000 <= wait <= p90 * 1000:
                    m["est_in_range"] = 1
    if t.get("completed_ms") is not None:
        m["served"] = 1
        begin = t.get("started_ms") or called
        if begin is not None and t["completed_ms"] >= begin:
            m["service_n"], m["service_ms"] = 1, t["completed_ms"] - begin
    elif t.get("no_show_ms") is not None:
        m["no_show_booking" if booked else "no_show_walkin"] = 1
    elif t.get("cancelled_ms") is not None and called is None:
        m["abandoned"] = 1
    return {"k": [t.get("service") or "", day, hour, weekday],
            "s": (staff or "") if t.get("counter") and called is not None else None, "m": m}


def _upsert_sql(table: str, key: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    cols = key + extra + MEASURES
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in MEASURES)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")


HOUR_SQL = _upsert_sql("analytics_hours", HOUR_KEY, ("weekday",))
DAY_SQL = _upsert_sql("analytics_days", DAY_KEY, ("weekday",))
STAFF_SQL = _upsert_sql("analytics_staff", STAFF_KEY)
ORG_DAY_SQL = _upsert_sql("analytics_org_days", ORG_DAY_KEY, ("weekday",))
RUNNING_SQL = _upsert_sql("analytics_running", RUNNING_KEY, ("weekday",))
WEEK = timedelta(days=7)


def booking_missed(conn: sqlite3.Connection, branch: str, service: str, slot_start_s: int, sign: int, *,
                   running: bool = True) -> None:
    """A booking became a no-show (+1) or was checked in after all (-1): its slot's hour and day."""
    agg = Aggregator(conn, running=running)
    tz = agg.zone(branch)
    if tz is None:
        return
    day, hour, weekday = local(slot_start_s * 1000, tz)
    _add(agg._deltas, branch, {"k": [service, day, hour, weekday], "s": None, "m": {"booking_missed": 1}}, sign)
    agg.flush()


def _add(deltas: dict[tuple[Any, ...], list[int]], branch: str, c: dict[str, Any], sign: int) -> None:
    """Add ``sign`` times a contribution to the pending deltas (keyed by table and row key)."""
    service, day, hour, weekday = c["k"]
    m = c["m"]
    keys = [("h", branch, service, day, hour, weekday), ("d", branch, service, day, weekday)]
    if c["s"] is not None:
        keys.append(("s", branch, c["s"], service, day, hour))
    for key in keys:
        row = deltas.get(key)
        if row is None:
            row = deltas[key] = [0] * len(MEASURES)
        for i, name in enumerate(MEASURES):
            v = m.get(name)
            if v:
                row[i] += sign * v


UNCHANGED = object()  # Aggregator.row: the ticket's contribution did not change


class Aggregator:
    """Applies ticket contributions for one write transaction (caches time zones and staff)."""

    def __init__(self, conn: sqlite3.Connection, *, running: bool = True) -> None:
        self.conn = conn
        self.running = running  # also the organizations' days and the running totals (migration 30 on)
        self._zones: dict[str, ZoneInfo | None] = {}
        self._orgs: dict[str, str | None] = {}
        # Summed changes to the aggregate rows, written by flush(): a push of 500 events touches
        # a handful of (service, day, hour) rows, so it costs a handful of upserts, not 1,000.
        self._deltas: dict[tuple[Any, ...], list[int]] = {}

    def flush(self) -> None:
        """Write the pending deltas (in the caller's transaction); call before it commits."""
        rows: dict[str, list[tuple[Any, ...]]] = {"h": [], "d": [], "s": []}
        org_days: dict[tuple[Any, ...], list[int]] = {}
        running: dict[tuple[str, int], dict[tuple[str, int], dict[str, list[int]]]] = {}
        for key, values in self._deltas.items():
            if not any(values):
                continue
            rows[key[0]].append((*key[1:], *values))
            if key[0] == "d":
                _, branch, service, day, weekday = key
                org = self.org(branch)
                if org is not None:
                    acc = org_days.setdefault((org, service, day, weekday), [0] * len(MEASURES))
                    for i, v in enumerate(values):
                        acc[i] += v
            elif key[0] == "h":
                _, branch, service, day, hour, weekday = key
                running.setdefault((branch, weekday), {}).setdefault((service, hour), {})[day] = values
        self._deltas.clear()
        for kind, sql in (("h", HOUR_SQL), ("d", DAY_SQL), ("s", STAFF_SQL)):
            if rows[kind]:
                self.conn.executemany(sql, rows[kind])
        if not self.running:
            return
        if org_days:
            self.conn.executemany(ORG_DAY_SQL, [(*k, *v) for k, v in org_days.items() if any(v)])
        for (branch, weekday), keys in running.items():
            add_running(self.conn, branch, weekday, keys)

    def org(self, branch: str) -> str | None:
        if branch not in self._orgs:
            row = self.conn.execute("SELECT org_id FROM branches WHERE id = ?", (branch,)).fetchone()
            self._orgs[branch] = row[0] if row else None
        return self._orgs[branch]

    def zone(self, branch: str) -> ZoneInfo | None:
        if branch not in self._zones:
            row = self.conn.execute("SELECT timezone FROM branches WHERE id = ?", (branch,)).fetchone()
            self._zones[branch] = ZoneInfo(row[0]) if row else None
        return self._zones[branch]

    def staff_at(self, branch: str, counter: str, at_ms: int) -> str | None:
        row = self.conn.execute(
            "SELECT staff FROM analytics_counter_staff WHERE branch_id = ? AND counter = ? AND at_ms <= ?"
            " ORDER BY at_ms DESC LIMIT 1", (branch, counter, at_ms)).fetchone()
        return row[0] if row else None

    def ticket(self, branch: str, ticket: str) -> None:
        """Bring the aggregates in line with the ticket's current row."""
        row = self.conn.execute("SELECT * FROM tickets WHERE branch_id = ? AND id = ?", (branch, ticket)).fetchone()
        if row is None:
            return
        agg = self.row(branch, dict(row))
        if agg is not UNCHANGED:
            self.conn.execute("UPDATE tickets SET agg = ? WHERE branch_id = ? AND id = ?", (agg, branch, ticket))

    def row(self, branch: str, t: dict[str, Any]) -> str | None | object:
        """Count the ticket row ``t`` (as it is now, its ``agg`` as last counted) into the pending
        deltas; returns its new ``agg`` column, or UNCHANGED. The caller writes the column."""
        tz = self.zone(branch)
        new = None
        if tz is not None:
            staff = self.staff_at(branch, t["counter"], t["called_ms"]) if t.get("counter") and t.get("called_ms") else None
            new = contribution(t, tz, staff)
        old = orjson.loads(t["agg"]) if t.get("agg") else None
        if new == old:
            return UNCHANGED
        if old is not None:
            _add(self._deltas, branch, old, -1)
        if new is not None:
            _add(self._deltas, branch, new, 1)
        return orjson.dumps(new).decode("utf-8") if new else None  # compact, as json.dumps with separators

    def counter_event(self, branch: str, type_: str, hlc: int, payload: dict[str, Any]) -> list[tuple[str, str]]:
        """Record who works at a counter from when; returns the tickets whose staff may change."""
        counter = payload.get("counter")
        if not isinstance(counter, str):
            return []
        staff = payload.get("staff") if type_ == "counter.opened" and isinstance(payload.get("staff"), str) else ""
        at_ms = hlc >> 16
        self.conn.execute("INSERT INTO analytics_counter_staff (branch_id, counter, at_ms, staff) VALUES (?, ?, ?, ?)"
                          " ON CONFLICT (branch_id, counter, at_ms) DO UPDATE SET staff = excluded.staff",
                          (branch, counter, at_ms, staff))
        tz = self.zone(branch)
        if tz is None:
            return []
        days = {datetime.fromtimestamp(ms / 1000, tz).strftime("%Y%m%d") for ms in (at_ms - DAY_MS, at_ms, at_ms + DAY_MS)}
        out = []
        for day in sorted(days):
            for r in self.conn.execute("SELECT id FROM tickets WHERE branch_id = ? AND day = ? AND counter = ?"
                                       " AND called_ms >= ?", (branch, day, counter, at_ms)):
                out.append((branch, r[0]))
        return out


def rebuild(conn: sqlite3.Connection, branches: Iterable[str] | None = None, *, running: bool = True) -> int:
    """Recompute every ticket's contribution from scratch (migration, repair): returns tickets.
    ``running`` false: not the tables of migration 30 (migration 24 runs before they exist)."""
    where, args = "", []
    if branches is not None:
        ids = list(branches)
        where = f" WHERE branch_id IN ({', '.join('?' * len(ids))})"
        args = ids
    conn.execute(f"DELETE FROM analytics_hours{where}", args)
    conn.execute(f"DELETE FROM analytics_days{where}", args)
    conn.execute(f"DELETE FROM analytics_staff{where}", args)
    conn.execute(f"UPDATE tickets SET agg = NULL{where}", args)
    orgs = []
    if running:
        conn.execute(f"DELETE FROM analytics_running{where}", args)
        conn.execute(f"DELETE FROM analytics_running_span{where}", args)
        orgs = [r[0] for r in conn.execute(f"SELECT DISTINCT org_id FROM branches{where.replace('branch_id', 'id')}", args)]
    if orgs:  # the organizations' daily roll-ups: from scratch, the other branches' days added back
        marks = ", ".join("?" * len(orgs))
        conn.execute(f"DELETE FROM analytics_org_days WHERE org_id IN ({marks})", orgs)
        others = [r[0] for r in conn.execute(f"SELECT id FROM branches WHERE org_id IN ({marks})", orgs)
                  if r[0] not in set(args)]
        if others:
            backfill_org_days(conn, others)
    agg = Aggregator(conn, running=running)
    rows = conn.execute(f"SELECT branch_id, id FROM tickets{where}", args).fetchall()
    for branch, ticket in rows:
        agg.ticket(branch, ticket)
    agg.flush()
    for branch, service, start in conn.execute(f"SELECT branch_id, service_id, slot_start FROM bookings{where}"
                                               f"{' AND' if where else ' WHERE'} status = 'no_show'", args).fetchall():
        booking_missed(conn, branch, service, start, 1, running=running)
    return len(rows)


def backfill_org_days(conn: sqlite3.Connection, branches: list[str] | None = None) -> None:
    """Add the branches' ``analytics_days`` rows to their organizations' daily roll-up."""
    where, args = "", []
    if branches is not None:
        where, args = f" WHERE d.branch_id IN ({', '.join('?' * len(branches))})", branches
    sums = ", ".join(f"SUM(d.{m})" for m in MEASURES)
    for row in conn.execute(f"SELECT b.org_id, d.service, d.day, d.weekday, {sums} FROM analytics_days d"
                            f" JOIN branches b ON b.id = d.branch_id{where}"
                            f" GROUP BY b.org_id, d.service, d.day, d.weekday", args).fetchall():
        conn.execute(ORG_DAY_SQL, tuple(row[:4]) + tuple(int(v or 0) for v in row[4:]))


def add_running(conn: sqlite3.Connection, branch: str, weekday: int,
                keys: dict[tuple[str, int], dict[str, list[int]]]) -> None:
    """Add hour-row deltas of one branch and weekday ({(service, hour): {day: values}}) to the
    running totals: carry every key forward to a new last day, then add each delta to its day's
    row and every later week's up to the last day."""
    days = sorted({d for per in keys.values() for d in per})
    span = conn.execute("SELECT first_day, last_day FROM analytics_running_span WHERE branch_id = ? AND weekday = ?",
                        (branch, weekday)).fetchone()
    cols = ", ".join(MEASURES)
    if span is None:
        first, last = days[0], days[-1]
        conn.execute("INSERT INTO analytics_running_span (branch_id, weekday, first_day, last_day) VALUES (?, ?, ?, ?)",
                     (branch, weekday, first, last))
    else:
        first, last = span[0], span[1]
        if days[-1] > last:
            d = date.fromisoformat(last) + WEEK
            while d.isoformat() <= days[-1]:
                conn.execute(f"INSERT INTO analytics_running (branch_id, day, service, hour, weekday, {cols})"
                             f" SELECT branch_id, ?, service, hour, weekday, {cols} FROM analytics_running"
                             f" WHERE branch_id = ? AND day = ?", (d.isoformat(), branch, last))
                d += WEEK
            last = days[-1]
        first = min(first, days[0])
        if (first, last) != (span[0], span[1]):
            conn.execute("UPDATE analytics_running_span SET first_day = ?, last_day = ? WHERE branch_id = ? AND weekday = ?",
                         (first, last, branch, weekday))
    out = []
    n = len(MEASURES)
    for (service, hour), per in keys.items():
        acc = [0] * n
        d = date.fromisoformat(min(per))
        while (day := d.isoformat()) <= last:
            v = per.get(day)
            if v is not None:
                acc = [a + b for a, b in zip(acc, v)]
            if any(acc):
                out.append((branch, day, service, hour, weekday, *acc))
            d += WEEK
    if out:
        conn.executemany(RUNNING_SQL, out)


def build_running(conn: sqlite3.Connection, branches: list[str] | None = None) -> int:
    """The running totals from ``analytics_hours`` (migration, rebuild): one pass per branch and
    weekday in day order, every key carried week by week to the branch's last day of that weekday."""
    where, args = "", []
    if branches is not None:
        where, args = f" WHERE branch_id IN ({', '.join('?' * len(branches))})", branches
    cols = ", ".join(MEASURES)
    n = len(MEASURES)
    written = 0
    todo = conn.execute(f"SELECT branch_id, weekday, MIN(day), MAX(day) FROM analytics_hours{where}"
                        f" GROUP BY branch_id, weekday", args).fetchall()
    for branch, weekday, first, last in todo:
        conn.execute("INSERT INTO analytics_running_span (branch_id, weekday, first_day, last_day) VALUES (?, ?, ?, ?)",
                     (branch, weekday, first, last))
        acc: dict[tuple[str, int], list[int]] = {}
        rows = conn.execute(f"SELECT day, service, hour, {cols} FROM analytics_hours WHERE branch_id = ? AND weekday = ?"
                            f" ORDER BY day", (branch, weekday)).fetchall()
        i = 0
        d = date.fromisoformat(first)
        out = []
        while (day := d.isoformat()) <= last:
            while i < len(rows) and rows[i][0] <= day:
                key = (rows[i][1], rows[i][2])
                prev = acc.get(key)
                values = [int(v or 0) for v in rows[i][3:]]
                acc[key] = values if prev is None else [a + b for a, b in zip(prev, values)]
                i += 1
            out.extend((branch, day, s, h, weekday, *v) for (s, h), v in acc.items() if any(v))
            d += WEEK
        if out:
            conn.executemany(f"INSERT INTO analytics_running (branch_id, day, service, hour, weekday, {cols})"
                             f" VALUES ({', '.join('?' * (5 + n))})", out)
        written += len(out)
    return written


def as_of(span: tuple[str, str] | None, day: date, weekday: int) -> str | None:
    """The running-total row that holds a branch's weekday up to ``day``: the last day of that
    weekday on or before it, clipped to the span (None: nothing before)."""
    if span is None:
        return None
    d = (day - timedelta(days=(day.weekday() - weekday) % 7)).isoformat()
    if d < span[0]:
        return None
    return min(d, span[1])


def running_pairs(conn: sqlite3.Connection, branches: Sequence[str], day_from: date,
                  day_to: date) -> tuple[list[str], list[str]]:
    """For a period, the (branch, day) rows of ``analytics_running`` to add and to subtract, as
    "branch day" strings: per branch and weekday, the row at the period's end minus the row
    before its start. At most 7 of each per branch, whatever the period."""
    if not branches:
        return [], []
    spans = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
        f"SELECT branch_id, weekday, first_day, last_day FROM analytics_running_span"
        f" WHERE branch_id IN ({', '.join('?' * len(branches))})", list(branches))}
    plus, minus = [], []
    before = day_from - timedelta(days=1)
    for b in branches:
        for w in range(7):
            span = spans.get((b, w))
            hi, lo = as_of(span, day_to, w), as_of(span, before, w)
            if hi is None or hi == lo:
                continue
            plus.append(f"{b} {hi}")
            if lo is not None:
                minus.append(f"{b} {lo}")
    return plus, minus


def yesterday(now_s: float, tz: ZoneInfo) -> str:
    return (datetime.fromtimestamp(now_s, tz).date() - timedelta(days=1)).isoformat()
