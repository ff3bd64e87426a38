"""Reassign between offices, /console/reassign/{branch} (branch managers and up): the branch's
coming bookings and today's waiting tickets, each with a form to move it to another branch or
service of the organization, keeping its place (hq/reassign.py, docs/console.md)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hq import live, reassign
from hq.auth import Principal
from hq.console import audit
from hq.console.branches import MANAGERS, _require
from hq.console.live import _branch
from hq.console.views import _text, crender, page
from hq.errors import ID_RE, ApiError
from hq.pages import data
from hq.booking import BookingContext
from hq.pages.app import T, PageError, redirect
from hq.pages.i18n import N_
from hq.web import hq_of

LIMIT = 200
REFUSALS = {
    "no_slot": N_("That branch has no slot at this time (closed, blocked, or another slot length). Choose another place."),
    "slot_full": N_("That slot is fully booked at that branch. Choose another place."),
    "not_offered": N_("That service is not offered at that branch."),
    "checked_in": N_("The booking is already checked in: move its ticket instead."),
    "not_booked": N_("Only a booked appointment can be moved."),
    "not_waiting": N_("Only a ticket waiting today can be moved; it was called or has left the line meanwhile."),
    "same_place": N_("Choose another branch or service."),
    "same_branch": N_("To move a ticket to another service of this branch, transfer it at a counter."),
}


def _load(c: sqlite3.Connection, branch: sqlite3.Row, now: int, lang: str) -> dict[str, Any]:
    tz = ZoneInfo(branch["timezone"])
    today = datetime.fromtimestamp(now, tz).strftime("%Y%m%d")
    names = {r["id"]: data.service_name(json.loads(r["names"]), lang)
             for r in c.execute("SELECT id, names FROM services WHERE branch_id = ?", (branch["id"],))}
    bookings = [dict(r) | {"service_name": names.get(r["service_id"], r["service_id"])} for r in c.execute(
        "SELECT b.* FROM bookings b WHERE b.branch_id = ? AND b.status = 'booked' AND b.slot_end > ?"
        " AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.branch_id = b.branch_id AND t.booking_code = b.code)"
        " ORDER BY b.slot_start, b.code LIMIT ?", (branch["id"], now, LIMIT))]
    waiting = [w | {"service_name": names.get(w["service"], w["service"] or "")}
               for w in live.waiting_in_order(c, branch["id"], today)][:LIMIT]
    places = []
    for b in c.execute("SELECT id, name FROM branches WHERE org_id = ? ORDER BY name, id", (branch["org_id"],)):
        for s in c.execute("SELECT id, names FROM services WHERE branch_id = ? AND enabled = 1 ORDER BY position, id",
                           (b["id"],)):
            places.append((f"{b['id']}/{s['id']}", f"{b['name']} – {data.service_name(json.loads(s['names']), lang)}",
                           b["id"]))
    return {"bookings": bookings, "waiting": waiting, "places": places}


async def _page(request: web.Request, branch: sqlite3.Row, errors: dict[str, str] | None = None,
                chosen: dict[str, str] | None = None) -> web.Response:
    """The page; after a refusal, ``chosen`` keeps the destination that was picked in its list."""
    hq = hq_of(request)
    lang = request[T].language
    loaded = await hq.db.read(lambda c: _load(c, branch, hq.now(), lang))
    return crender(request, "console/reassign.html", status=400 if errors else 200, b=dict(branch), errors=errors or {},
                   chosen=chosen or {}, done=request.query.get("done", ""), new_code=request.query.get("code", "")[:9], **loaded)


@page(MANAGERS)
async def reassign_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    _require(p, branch, "manage")
    return await _page(request, branch)


def _place(form: Any) -> tuple[str, str] | None:
    raw = _text(form, "to", 90)
    parts = raw.split("/")
    if len(parts) != 2 or not all(ID_RE.match(x) for x in parts):
        return None
    return parts[0], parts[1]


async def _move(request: web.Request, p: Principal, kind: str) -> web.Response:
    branch = await _branch(request, p)
    _require(p, branch, "manage")
    item = request.match_info["item"]
    form = await request.post()
    field = f"to-{item}"
    place = _place(form)
    if place is None:
        return await _page(request, branch, {field: N_("Choose where to move it.")})
    hq = hq_of(request)
    s = hq.settings
    ctx = BookingContext(key=hq.key, now=hq.now(), horizon_days=s.booking_horizon_days,
                         token_grace_s=s.booking_token_grace_s, phone_region=s.default_phone_region, rng=hq.rng)

    def write(c: sqlite3.Connection) -> dict[str, Any]:
        if kind == "booking":
            out = reassign.move_booking(c, ctx, branch["id"], item, *place)
        else:
            out = reassign.move_ticket(c, ctx, branch["id"], item, *place)
        audit.record(c, p, branch["org_id"], f"{kind}.reassign", f"{branch['id']}/{item}",
                     f"to {place[0]}/{place[1]}" + (f" as {out['code']}" if kind == "ticket" else ""), ctx.now)
        return out
    try:
        out = await hq.db.write(write)
    except ApiError as err:
        if err.status == 404:
            # an unknown item, or a branch of another organization: not revealed
            raise PageError(404, N_("This page does not exist.")) from err
        return await _page(request, branch, {field: REFUSALS.get(err.code, N_("That did not work"))},
                           {field: f"{place[0]}/{place[1]}"})
    hq.branches_changed({branch["id"], place[0]})
    code = f"&code={out['code']}" if kind == "ticket" else ""  # staff tell it when no SMS could
    return redirect(f"/console/reassign/{branch['id']}?done={kind}{code}")


@page(MANAGERS)
async def move_booking(request: web.Request, p: Principal) -> web.Response:
    return await _move(request, p, "booking")


@page(MANAGERS)
async def move_ticket(request: web.Request, p: Principal) -> web.Response:
    return await _move(request, p, "ticket")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/console/reassign/{branch}", reassign_page)
    r.add_post("/console/reassign/{branch}/bookings/{item}", move_booking)
    r.add_post("/console/reassign/{branch}/tickets/{item}", move_ticket)
