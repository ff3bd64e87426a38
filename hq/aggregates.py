"""Analytics pre-aggregated as branch events arrive (issue 10): the console's analytics pages
read these rows only, never raw events or tickets.

Each ticket contributes to one row of ``analytics_hours`` (branch, service, local day, local
hour of issue in the branch's time zone), of its daily roll-up ``analytics_days`` (what pages
without hours read: ten times fewer rows) and, once a counter called it, one row of
``analytics_staff`` (branch, staff member, service, local day, hour). Its contribution is a
function of HQ's ticket row (the branch fold's), kept in ``tickets.agg``; whenever the ticket
is re-folded, the old contribution is subtracted and the new one added. So the aggregates are
exactly the sum over the stored tickets, whatever order, duplicates or re-folds the events
came with (ingest stores each event once; a re-fold that changes nothing changes nothing here).

Waits go into fixed buckets (``EDGES``) for the percentiles: p50/p90 are interpolated inside
their bucket, so they are within half a bucket of the exact order statistic (30 s under half an
hour, 2.5 min to an hour, 5 min to two hours); the share within a target wait is exact when the
target is a bucket edge (every whole minute to 30, every 5 to 60, every 10 to 120). All the SQL
is portable (SQLite and PostgreSQL): upserts that add, dates computed here in Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
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


def booking_missed(conn: sqlite3.Connection, branch: str, service: str, slot_start_s: int, sign: int) -> None:
    """A booking became a no-show (+1) or was checked in after all (-1): its slot's hour and day."""
    row = conn.execute("SELECT timezone FROM branches WHERE id = ?", (branch,)).fetchone()
    if row is None:
        return
    day, hour, weekday = local(slot_start_s * 1000, ZoneInfo(row[0]))
    values = [sign if name == "booking_missed" else 0 for name in MEASURES]
    conn.execute(HOUR_SQL, (branch, service, day, hour, weekday, *values))
    conn.execute(DAY_SQL, (branch, service, day, weekday, *values))


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

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._zones: dict[str, ZoneInfo | None] = {}
        # Summed changes to the aggregate rows, written by flush(): a push of 500 events touches
        # a handful of (service, day, hour) rows, so it costs a handful of upserts, not 1,000.
        self._deltas: dict[tuple[Any, ...], list[int]] = {}

    def flush(self) -> None:
        """Write the pending deltas (in the caller's transaction); call before it commits."""
        rows: dict[str, list[tuple[Any, ...]]] = {"h": [], "d": [], "s": []}
        for key, values in self._deltas.items():
            if any(values):
                rows[key[0]].append((*key[1:], *values))
        self._deltas.clear()
        for kind, sql in (("h", HOUR_SQL), ("d", DAY_SQL), ("s", STAFF_SQL)):
            if rows[kind]:
                self.conn.executemany(sql, rows[kind])

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


def rebuild(conn: sqlite3.Connection, branches: Iterable[str] | None = None) -> int:
    """Recompute every ticket's contribution from scratch (migration, repair): returns tickets."""
    where, args = "", []
    if branches is not None:
        ids = list(branches)
        where = f" WHERE branch_id IN ({', '.join('?' * len(ids))})"
        args = ids
    conn.execute(f"DELETE FROM analytics_hours{where}", args)
    conn.execute(f"DELETE FROM analytics_days{where}", args)
    conn.execute(f"DELETE FROM analytics_staff{where}", args)
    conn.execute(f"UPDATE tickets SET agg = NULL{where}", args)
    agg = Aggregator(conn)
    rows = conn.execute(f"SELECT branch_id, id FROM tickets{where}", args).fetchall()
    for branch, ticket in rows:
        agg.ticket(branch, ticket)
    agg.flush()
    for branch, service, start in conn.execute(f"SELECT branch_id, service_id, slot_start FROM bookings{where}"
                                               f"{' AND' if where else ' WHERE'} status = 'no_show'", args).fetchall():
        booking_missed(conn, branch, service, start, 1)
    return len(rows)


def yesterday(now_s: float, tz: ZoneInfo) -> str:
    return (datetime.fromtimestamp(now_s, tz).date() - timedelta(days=1)).isoformat()
