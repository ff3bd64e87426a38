"""Staffing advice, /console/staffing/{branch}: counters needed per service, weekday and hour.

From the last ``weeks`` full weeks before today (branch time zone): arrivals per hour of a
typical week = tickets issued in that weekday-hour / weeks; mean service time per service
(completed - started, default_service_s when none); Erlang C (hq/console/erlang.py) gives the
fewest counters that call ``share`` of people within the target wait, and what one counter
less or more would do.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
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


def advice(c: sqlite3.Connection, branch: sqlite3.Row, now_s: float, weeks: int, target_s: int, share: float,
           default_service_s: int) -> list[dict[str, Any]]:
    tz = ZoneInfo(branch["timezone"])
    today = datetime.fromtimestamp(now_s, tz).date()
    first, last = today - timedelta(days=7 * weeks), today - timedelta(days=1)
    arrivals: dict[tuple[str, int, int], int] = {}
    serve_sum: dict[str, float] = {}
    serve_n: dict[str, int] = {}
    for row in c.execute("SELECT service, issued_ms, started_ms, completed_ms FROM tickets WHERE branch_id = ?"
                       " AND day >= ? AND day <= ? AND issued_ms IS NOT NULL",
                       (branch["id"], first.strftime("%Y%m%d"), last.strftime("%Y%m%d"))):
        local = datetime.fromtimestamp(row["issued_ms"] / 1000, tz)
        if not first <= local.date() <= last:
            continue
        svc = row["service"] or ""
        key = (svc, local.weekday(), local.hour)
        arrivals[key] = arrivals.get(key, 0) + 1
        if row["completed_ms"] and row["started_ms"] and row["completed_ms"] >= row["started_ms"]:
            serve_sum[svc] = serve_sum.get(svc, 0.0) + (row["completed_ms"] - row["started_ms"]) / 1000
            serve_n[svc] = serve_n.get(svc, 0) + 1
    serving: dict[str, int] = {}
    for r in c.execute("SELECT services FROM counters WHERE branch_id = ?", (branch["id"],)):
        for s in json.loads(r[0]):
            serving[s] = serving.get(s, 0) + 1
    names = {r["id"]: r["names"] for r in c.execute("SELECT id, names FROM services WHERE branch_id = ?", (branch["id"],))}
    out = []
    for (svc, wd, hour), n in sorted(arrivals.items()):
        per_hour = n / weeks
        service_s = serve_sum[svc] / serve_n[svc] if serve_n.get(svc) else float(default_service_s)
        traffic = per_hour * service_s / 3600
        need = erlang.counters_needed(traffic, service_s, target_s, share)
        out.append({"service": svc, "names": names.get(svc), "weekday": wd, "hour": hour, "per_hour": per_hour,
                    "service_s": service_s, "traffic": traffic, "needed": need, "configured": serving.get(svc, 0),
                    "levels": {k: erlang.service_level(traffic, k, service_s, target_s) for k in (need - 1, need, need + 1)
                               if k >= 1},
                    "waits": {k: erlang.mean_wait_s(traffic, k, service_s) for k in (need - 1, need, need + 1) if k >= 1}})
    return out


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
                             "counters_needed", "counters_serving", "share_one_less", "share_advised", "share_one_more"],
                            [[r["service"], r["weekday"], r["hour"], round(r["per_hour"], 3), round(r["service_s"], 1),
                              round(r["traffic"], 3), r["needed"], r["configured"],
                              *[round(r["levels"][k], 4) if k in r["levels"] else "" for k in
                                (r["needed"] - 1, r["needed"], r["needed"] + 1)]] for r in rows])
    return crender(request, "console/staffing.html", b=dict(branch), rows=rows, weeks=weeks, share=share,
                   target_s=target)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/staffing/{branch}", staffing_page)
