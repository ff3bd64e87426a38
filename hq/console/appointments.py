"""A day's appointments of a branch, /console/appointments/{branch}?date=YYYY-MM-DD (printable).

Each booking with what became of it, from the tickets the branch checked it in as: booked,
cancelled, checked in, called, served, missed at the counter (no-show), or a no-show because
nobody checked in before the slot ended.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hq.auth import Principal
from hq.console.live import _branch
from hq.console.views import crender, csv_response, page
from hq.errors import ApiError, check_date
from hq.pages.i18n import N_
from hq.web import hq_of

STATES = {"booked": N_("Booked"), "cancelled": N_("Cancelled"), "checked_in": N_("Checked in"),
          "called": N_("Called"), "served": N_("Served"), "no_show": N_("No-show")}


def state_of(booking: sqlite3.Row, ticket: sqlite3.Row | None, now_s: float) -> str:
    if booking["status"] == "cancelled":
        return "cancelled"
    if ticket is not None and ticket["issued_ms"] is not None:
        if ticket["completed_ms"]:
            return "served"
        if ticket["no_show_ms"]:
            return "no_show"
        if ticket["called_ms"]:
            return "called"
        return "checked_in"
    # status 'no_show' is the scheduler's mark (hq/booking.py mark_no_shows); between the slot's
    # end and the job's next run the page already says so.
    return "no_show" if booking["status"] == "no_show" or booking["slot_end"] <= now_s else "booked"


def day_list(c: sqlite3.Connection, branch: sqlite3.Row, day: date, now_s: float) -> list[dict[str, Any]]:
    tz = ZoneInfo(branch["timezone"])
    lo = int(datetime.combine(day, time.min, tzinfo=tz).timestamp())
    hi = int(datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).timestamp())
    names = {r["id"]: r["names"] for r in c.execute("SELECT id, names FROM services WHERE branch_id = ?", (branch["id"],))}
    out = []
    for b in c.execute("SELECT * FROM bookings WHERE branch_id = ? AND slot_start >= ? AND slot_start < ?"
                       " ORDER BY slot_start, id", (branch["id"], lo, hi)).fetchall():
        ticket = c.execute("SELECT * FROM tickets WHERE branch_id = ? AND booking_code = ? ORDER BY issued_ms LIMIT 1",
                           (branch["id"], b["code"])).fetchone()
        out.append({"code": b["code"], "start": b["slot_start"], "name": b["name"] or "", "service": b["service_id"],
                    "service_names": names.get(b["service_id"]), "state": state_of(b, ticket, now_s),
                    "label": ticket["label"] if ticket else None,
                    "checked_in_ms": ticket["issued_ms"] if ticket else None,
                    "done_ms": (ticket["completed_ms"] or ticket["no_show_ms"]) if ticket else None})
    return out


def _iso(ms: int | None, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds") if ms else ""


@page()
async def appointments_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    hq = hq_of(request)
    tz = ZoneInfo(branch["timezone"])
    today = datetime.fromtimestamp(hq.now(), tz).date()
    raw = request.query.get("date", "")
    try:
        day = check_date(raw, "date") if raw else today
    except ApiError:  # junk or out of range (a year HQ cannot convert): show today, as for no date
        day = today
    rows = await hq.db.read(lambda c: day_list(c, branch, day, hq.now()))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        r["service_names"] = json.loads(r["service_names"]) if r["service_names"] else {}
    if request.query.get("format") == "csv":
        return csv_response(f"appointments-{branch['id']}-{day.isoformat()}.csv",
                            ["start", "name", "service", "booking_code", "ticket", "state", "checked_in_at", "finished_at"],
                            [[datetime.fromtimestamp(r["start"], tz).isoformat(), r["name"], r["service"], r["code"],
                              r["label"] or "", r["state"], _iso(r["checked_in_ms"], tz), _iso(r["done_ms"], tz)]
                             for r in rows])
    return crender(request, "console/appointments.html", b=dict(branch), rows=rows, day=day, states=STATES,
                   counts=counts, prev=(day - timedelta(days=1)).isoformat(), next=(day + timedelta(days=1)).isoformat())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/appointments/{branch}", appointments_page)
