"""The console's live page of a branch, /console/live/{branch}, and its server-sent events.

Built from what the branch link delivered (the tickets projection and the counter events of
the day), so it lags the branch by the link's delay. The stream shares the citizens' status
page mechanism (hq.pages.status.LiveHub): ingest wakes every stream of the branch at once; a
stream also re-reads every KEEPALIVE_S so durations move on and other HQ workers' ingests show.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import orjson
from aiohttp import web

from hq import live
from hq.auth import Principal, check_branch
from hq.console.views import ME, crender, current, page
from hq.pages import data
from hq.pages.app import PageError, context
from hq.pages.i18n import N_
from hq.pages.status import HUB
from hq.web import hq_of

COUNTER_EVENTS = ("counter.opened", "counter.paused", "counter.closed")
STATES = {"counter.opened": "open", "counter.paused": "paused", "counter.closed": "closed"}
STATE_NAMES = {"open": N_("Open"), "paused": N_("Paused"), "closed": N_("Closed")}


def snapshot(c: sqlite3.Connection, branch: sqlite3.Row, now_ms: int, default_target_s: int) -> dict[str, Any]:
    """Counters (state, who, current ticket and since when), waiting per service, longest waits,
    and how many have waited longer than their service's target (``default_target_s`` for a
    service without its own)."""
    tz = ZoneInfo(branch["timezone"])
    today = datetime.fromtimestamp(now_ms / 1000, tz).date()
    day = today.strftime("%Y%m%d")
    since = int(datetime.combine(today, time.min, tzinfo=tz).timestamp() * 1000) << 16
    counters = {r["id"]: {"id": r["id"], "name": r["name"], "state": "closed", "staff": None, "label": None,
                          "ticket_status": None, "since_s": None}
                for r in c.execute("SELECT id, name FROM counters WHERE branch_id = ? ORDER BY position, id",
                                   (branch["id"],))}
    # The counter's status: last writer wins (docs/events.md), today's events only.
    for r in c.execute("SELECT type, envelope FROM events WHERE branch = ? AND hlc >= ? AND type IN (?, ?, ?)"
                       " ORDER BY hlc", (branch["id"], since, *COUNTER_EVENTS)):
        p = json.loads(r["envelope"]).get("payload", {})
        cid = p.get("counter")
        if isinstance(cid, str):
            entry = counters.setdefault(cid, {"id": cid, "name": cid, "state": "closed", "staff": None, "label": None,
                                              "ticket_status": None, "since_s": None})
            entry["state"] = STATES[r["type"]]
            entry["staff"] = p.get("staff") if isinstance(p.get("staff"), str) else None
    staff_names = {r["id"]: r["name"] for r in c.execute("SELECT id, name FROM staff WHERE branch_id = ?", (branch["id"],))}
    for r in c.execute("SELECT counter, label, called_ms, started_ms FROM tickets WHERE branch_id = ? AND day = ?"
                       " AND called_ms IS NOT NULL AND completed_ms IS NULL AND no_show_ms IS NULL"
                       " AND counter IS NOT NULL ORDER BY called_ms", (branch["id"], day)):
        entry = counters.setdefault(r["counter"], {"id": r["counter"], "name": r["counter"], "state": "open",
                                                   "staff": None, "label": None, "ticket_status": None, "since_s": None})
        entry["label"] = r["label"]
        entry["ticket_status"] = "serving" if r["started_ms"] else "called"
        entry["since_s"] = max(0, (now_ms - (r["started_ms"] or r["called_ms"])) // 1000)
    for entry in counters.values():
        entry["staff_name"] = staff_names.get(entry["staff"] or "", entry["staff"])
    services: dict[str, dict[str, Any]] = {
        r["id"]: {"id": r["id"], "names": json.loads(r["names"]), "waiting": 0, "longest_s": None, "over": 0,
                  "target_s": r["target_wait_minutes"] * 60 if r["target_wait_minutes"] else default_target_s}
        for r in c.execute("SELECT id, names, target_wait_minutes FROM services WHERE branch_id = ?"
                           " ORDER BY position, letter, id", (branch["id"],))}
    for w in live.waiting_in_order(c, branch["id"], day):
        sid = w["service"] or ""
        s = services.setdefault(sid, {"id": sid, "names": {}, "waiting": 0, "longest_s": None, "over": 0,
                                      "target_s": default_target_s})
        waited = max(0, (now_ms - w["issued_ms"]) // 1000)
        s["waiting"] += 1
        s["longest_s"] = max(s["longest_s"] or 0, waited)
        s["over"] += waited > s["target_s"]
    targets = {s["target_s"] for s in services.values()} or {default_target_s}
    return {"counters": list(counters.values()), "services": list(services.values()),
            "waiting": sum(s["waiting"] for s in services.values()),
            "longest_s": max((s["longest_s"] or 0 for s in services.values()), default=0),
            "over": sum(s["over"] for s in services.values()),
            # one target for every service: the page names it; else each service's is in its row
            "target_s": targets.pop() if len(targets) == 1 else None}


async def _branch(request: web.Request, p: Principal) -> sqlite3.Row:
    branch_id = request.match_info["branch"]
    row = await hq_of(request).db.read(lambda c: c.execute("SELECT * FROM branches WHERE id = ?", (branch_id,)).fetchone())
    if row is None:
        if p.role == "super_admin":
            raise PageError(404, N_("This page does not exist."))
        raise PageError(403, N_("This branch belongs to another organization, or your role may not see it."))
    try:
        check_branch(p, row["org_id"], branch_id, "read")
    except Exception as err:
        raise PageError(403, N_("This branch belongs to another organization, or your role may not see it.")) from err
    return row


async def _view(request: web.Request, branch: sqlite3.Row) -> dict[str, Any]:
    hq = hq_of(request)
    now = hq.now()

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        snap = snapshot(c, branch, hq.now_ms(), hq.settings.target_wait_s)
        snap["heard_at"] = data.last_heard(c, branch["id"], now)
        return snap
    view = await hq.db.read(load)
    heard = view["heard_at"]
    view["offline"] = heard is None or now - heard > hq.settings.branch_silent_after_s
    return view


def _fragment(request: web.Request, branch: sqlite3.Row, view: dict[str, Any]) -> str:
    return aiohttp_jinja2.render_string("console/live_body.html", request, context(
        request, b=dict(branch), v=view, state_names=STATE_NAMES))


@page()
async def live_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    view = await _view(request, branch)
    return crender(request, "console/live.html", b=dict(branch), v=view, state_names=STATE_NAMES,
                   body=_fragment(request, branch, view))


@page()
async def live_index(request: web.Request, p: Principal) -> web.Response:
    if p.branch_id:
        raise web.HTTPSeeOther(f"/console/live/{p.branch_id}")
    raise web.HTTPSeeOther("/console")


async def live_events(request: web.Request) -> web.StreamResponse:
    p = await current(request)
    if p is None:
        raise PageError(403, N_("Your role may not use this page."))
    request[ME] = p
    branch = await _branch(request, p)

    async def body() -> bytes | None:
        if await current(request) is None:  # logged out or disabled meanwhile: the stream ends
            return None
        view = await _view(request, branch)
        return orjson.dumps({"html": _fragment(request, branch, view), "waiting": view["waiting"]})

    return await request.app[HUB].stream(request, branch["id"], b"live", body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/live", live_index)
    app.router.add_get("/console/live/{branch}", live_page)
    app.router.add_get("/console/live/{branch}/events", live_events)

