"""Staffing advice, /console/staffing/{branch}: counters needed per service, weekday and hour.

From the last ``weeks`` full weeks before today (branch time zone), read from the analytics
pre-aggregates: arrivals per hour of a typical week = tickets issued in that weekday-hour /
weeks; mean service time per service (default_service_s when none); Erlang C, or Erlang A where
people give up materially (hq/console/erlang.py), gives the fewest counters that call ``share``
of people within the target wait, what one counter less or more would do, and what the
counters actually open (from counter events) achieve.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hq.auth import Principal
from hq.console import erlang
from hq.console.live import _branch
from hq.console.views import crender, csv_response, page
from hq.pages.app import LANG
from hq.web import hq_of

MANAGERS = ("super_admin", "org_admin", "branch_manager")


MATERIAL = 0.05  # Erlang A when at least this share of a service's people gave up...
MIN_ABANDONED = 5  # ...and at least this many did (fewer say little about patience)


def advice(c: sqlite3.Connection, branch: sqlite3.Row, now_s: float, weeks: int, target_s: int, share: float,
           default_service_s: int) -> list[dict[str, Any]]:
    """One row per service, weekday and hour with arrivals, from the pre-aggregated analytics
    (hq/aggregates.py) of the last ``weeks`` full weeks; counters open from the counter events.
    Each service is advised against its own target wait (``target_s`` when it has none)."""
    tz = ZoneInfo(branch["timezone"])
    today = datetime.fromtimestamp(now_s, tz).date()
    first, last = today - timedelta(days=7 * weeks), today - timedelta(days=1)
    cells: dict[tuple[str, int, int], int] = {}
    per_service: dict[str, dict[str, int]] = {}
    for r in c.execute("SELECT service, weekday, hour, SUM(tickets), SUM(abandoned), SUM(wait_n), SUM(wait_ms),"
                       " SUM(service_n), SUM(service_ms) FROM analytics_hours WHERE branch_id = ? AND day >= ?"
                       " AND day <= ? GROUP BY service, weekday, hour",
                       (branch["id"], first.isoformat(), last.isoformat())):
        svc = r[0] or ""
        if r[3]:
            cells[(svc, r[1], r[2])] = r[3]
        tot = per_service.setdefault(svc, {"tickets": 0, "abandoned": 0, "wait_n": 0, "wait_ms": 0, "service_n": 0,
                                           "service_ms": 0})
        for i, k in enumerate(("tickets", "abandoned", "wait_n", "wait_ms", "service_n", "service_ms"), start=3):
            tot[k] += r[i] or 0
    serving: dict[str, int] = {}
    counter_services: dict[str, list[str]] = {}
    for r in c.execute("SELECT id, services FROM counters WHERE branch_id = ?", (branch["id"],)):
        counter_services[r[0]] = json.loads(r[1])
        for s in counter_services[r[0]]:
            serving[s] = serving.get(s, 0) + 1
    open_s = counters_open(c, branch, first, last, counter_services)
    names, targets = {}, {}
    for r in c.execute("SELECT id, names, target_wait_minutes FROM services WHERE branch_id = ?", (branch["id"],)):
        names[r["id"]] = r["names"]
        if r["target_wait_minutes"]:
            targets[r["id"]] = r["target_wait_minutes"] * 60  # the service's own target wait
    models = {svc: _model(tot, default_service_s) for svc, tot in per_service.items()}
    out = []
    for (svc, wd, hour), n in sorted(cells.items()):
        m = models[svc]
        target = targets.get(svc, target_s)
        per_hour = n / weeks
        traffic = per_hour * m["service_s"] / 3600
        level = _level(per_hour, m, target)
        need = (erlang.counters_needed_a(per_hour / 3600, m["service_s"], m["patience_s"], target, share)
                if m["patience_s"] else erlang.counters_needed(traffic, m["service_s"], target, share))
        opened = open_s.get((svc, wd, hour), 0.0) / (3600 * weeks)
        out.append({"service": svc, "names": names.get(svc), "weekday": wd, "hour": hour, "per_hour": per_hour,
                    "service_s": m["service_s"], "traffic": traffic, "target_s": target, "needed": need, "configured": serving.get(svc, 0),
                    "model": "A" if m["patience_s"] else "C", "patience_s": m["patience_s"],
                    "abandon_share": m["abandon_share"], "open": opened,
                    "level_open": level(round(opened)) if round(opened) >= 1 else 0.0,
                    "levels": {k: level(k) for k in (need - 1, need, need + 1) if k >= 1}})
    return out


def _model(tot: dict[str, int], default_service_s: int) -> dict[str, Any]:
    """Mean service time; and patience for Erlang A when abandonment is material: with
    exponential patience, P(give up) = theta x mean wait (Little's law on the queue), so mean
    patience = mean wait / share who gave up (the waits of those called stand in for all)."""
    service_s = tot["service_ms"] / 1000 / tot["service_n"] if tot["service_n"] else float(default_service_s)
    abandon = tot["abandoned"] / tot["tickets"] if tot["tickets"] else 0.0
    patience = None
    if abandon >= MATERIAL and tot["abandoned"] >= MIN_ABANDONED and tot["wait_n"] and tot["wait_ms"]:
        patience = max(tot["wait_ms"] / 1000 / tot["wait_n"] / abandon, 1.0)
    return {"service_s": service_s, "abandon_share": abandon, "patience_s": patience}


def _level(per_hour: float, m: dict[str, Any], target_s: int) -> Any:
    traffic = per_hour * m["service_s"] / 3600
    if m["patience_s"]:
        return lambda k: erlang.erlang_a(per_hour / 3600, m["service_s"], m["patience_s"], k, target_s).service_level
    return lambda k: erlang.service_level(traffic, k, m["service_s"], target_s)


def counters_open(c: sqlite3.Connection, branch: sqlite3.Row, first: date, last: date,
                  counter_services: dict[str, list[str]]) -> dict[tuple[str, int, int], float]:
    """Counter-seconds open per (service, weekday, hour) over first..last: a counter is open from
    its counter.opened to its next counter.paused / counter.closed (or the local midnight) and
    counts for every service it is configured to serve."""
    tz = ZoneInfo(branch["timezone"])
    lo = int(datetime.combine(first, time.min, tzinfo=tz).timestamp())
    hi = int(datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz).timestamp())
    per_counter: dict[str, list[tuple[int, str]]] = {}
    for r in c.execute("SELECT type, hlc, envelope FROM events WHERE branch = ? AND hlc >= ? AND hlc < ?"
                       " AND type IN ('counter.opened', 'counter.paused', 'counter.closed') ORDER BY hlc",
                       (branch["id"], (lo * 1000) << 16, (hi * 1000) << 16)):
        counter = json.loads(r[2]).get("payload", {}).get("counter")
        if isinstance(counter, str):
            per_counter.setdefault(counter, []).append((r[1] >> 16, r[0]))
    out: dict[tuple[str, int, int], float] = {}
    for counter, evs in per_counter.items():
        since: float | None = None
        for ms, kind in evs + [(hi * 1000, "counter.closed")]:
            at = ms / 1000
            if since is not None:
                _spread(since, at, tz, counter_services.get(counter, []), out)
            since = at if kind == "counter.opened" else None
    return out


def _spread(a: float, b: float, tz: ZoneInfo, services: list[str], out: dict[tuple[str, int, int], float]) -> None:
    """Add the open interval [a, b) to each local hour it covers, never past the local midnight."""
    start = datetime.fromtimestamp(a, tz)
    midnight = datetime.combine(start.date() + timedelta(days=1), time.min, tzinfo=tz).timestamp()
    b = min(b, midnight)
    while a < b:
        local = datetime.fromtimestamp(a, tz)
        step = min(b, a - local.minute * 60 - local.second - local.microsecond / 1e6 + 3600)
        for svc in services:
            key = (svc, local.weekday(), local.hour)
            out[key] = out.get(key, 0.0) + (step - a)
        a = step


def _int(raw: str | None, default: int, lo: int, hi: int) -> int:
    return int(raw) if raw and raw.isdigit() and lo <= int(raw) <= hi else default


@page(MANAGERS)
async def staffing_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    hq = hq_of(request)
    weeks = _int(request.query.get("weeks"), 4, 1, 26)
    share = _int(request.query.get("share"), 80, 50, 99)
    target = hq.settings.target_wait_s
    rows = await hq.db.read(lambda c: advice(c, branch, hq.clock.now(), weeks, target, share / 100,
                                             hq.settings.default_service_s))
    lang = request.get(LANG) or "en"
    for r in rows:
        names = json.loads(r["names"]) if r["names"] else {}
        r["name"] = names.get(lang) or names.get("en") or r["service"]
    if request.query.get("format") == "csv":
        return csv_response(f"staffing-{branch['id']}.csv",
                            ["service", "weekday", "hour", "arrivals_per_hour", "mean_service_s", "traffic_erlangs",
                             "counters_needed", "counters_serving", "share_one_less", "share_advised", "share_one_more",
                             "counters_open", "share_with_open", "model", "mean_patience_s", "abandon_share",
                             "target_wait_s"],
                            [[r["service"], r["weekday"], r["hour"], round(r["per_hour"], 3), round(r["service_s"], 1),
                              round(r["traffic"], 3), r["needed"], r["configured"],
                              *[round(r["levels"][k], 4) if k in r["levels"] else "" for k in
                                (r["needed"] - 1, r["needed"], r["needed"] + 1)],
                              round(r["open"], 2), round(r["level_open"], 4), f"erlang_{r['model'].lower()}",
                              round(r["patience_s"], 1) if r["patience_s"] else "", round(r["abandon_share"], 4),
                              r["target_s"]]
                             for r in rows])
    targets = {r["target_s"] for r in rows} or {target}
    return crender(request, "console/staffing.html", b=dict(branch), rows=rows, weeks=weeks, share=share,
                   target_s=targets.pop() if len(targets) == 1 else None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/staffing/{branch}", staffing_page)
