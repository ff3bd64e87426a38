"""The calendar of a branch's bookable services in the console (docs/console.md, "Calendar").

- /console/calendar/{branch}?service=S&week=YYYY-MM-DD: a week of slots, booked / capacity;
- /console/calendar/{branch}/{service}/{day}: one day's slots, with forms to block slots or the
  whole day, unblock them, and set the capacity of that date.

The rules live in hq/slotrules.py and govern online booking (hq/booking.py). Blocking keeps the
bookings already in a slot (their holders have a signed token a kiosk accepts); the day page
lists them, and the block form can cancel them and send each holder the cancellation message.
Branch managers and up; staff get the 403 page.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance import events as ev
from hq import booking, notifications, outbox, slotrules
from hq.auth import Principal, check_branch
from hq.console import audit
from hq.console.live import _branch
from hq.console.views import _text, crender, page
from hq.errors import ApiError, check_date
from hq.pages.app import LANG, PageError, redirect
from hq.pages.i18n import N_
from hq.web import hq_of

MANAGERS = ("super_admin", "org_admin", "branch_manager")
MAX_CAPACITY = 1000


def _services(c: sqlite3.Connection, branch_id: str) -> list[sqlite3.Row]:
    return c.execute("SELECT * FROM services WHERE branch_id = ? AND bookable = 1 AND enabled = 1 ORDER BY position, id",
                     (branch_id,)).fetchall()


def _name(row: sqlite3.Row, lang: str) -> str:
    names = json.loads(row["names"]) if row["names"] else {}
    return names.get(lang) or names.get("en") or row["id"]


def _counts(c: sqlite3.Connection, branch_id: str, service_id: str, lo: int, hi: int) -> dict[int, int]:
    """Bookings per slot start in [lo, hi): every booking not cancelled (a no-show held its place)."""
    return {r[0]: r[1] for r in c.execute(
        "SELECT slot_start, COUNT(*) FROM bookings WHERE branch_id = ? AND service_id = ? AND slot_start >= ?"
        " AND slot_start < ? AND status != 'cancelled' GROUP BY slot_start", (branch_id, service_id, lo, hi))}


def _bounds(branch: sqlite3.Row, first: date, days: int) -> tuple[int, int]:
    tz = ZoneInfo(branch["timezone"])
    lo = int(datetime.combine(first, datetime.min.time(), tzinfo=tz).timestamp())
    hi = int(datetime.combine(first + timedelta(days=days), datetime.min.time(), tzinfo=tz).timestamp())
    return lo, hi


def week_view(c: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, monday: date,
              now: int) -> dict[str, Any]:
    """Rows by local slot time (HH:MM), one cell per day: None (no slot) or
    {start, booked, capacity, blocked, past}; and per day whether it is closed or blocked."""
    tz = ZoneInfo(branch["timezone"])
    days = [monday + timedelta(days=i) for i in range(7)]
    blocks = slotrules.blocks_between(c, branch["id"], service["id"], days[0], days[-1])
    caps = slotrules.capacities_between(c, branch["id"], service["id"], days[0], days[-1])
    counts = _counts(c, branch["id"], service["id"], *_bounds(branch, monday, 7))
    cells: dict[str, list[dict[str, Any] | None]] = {}
    heads = []
    for i, day in enumerate(days):
        day_blocks = blocks.get(day.isoformat(), {})
        capacity = caps.get(day.isoformat(), service["capacity"])
        slots = booking.grid(c, branch, service, day)
        heads.append({"day": day, "open": bool(slots), "blocked": slotrules.WHOLE_DAY in day_blocks,
                      "capacity": capacity, "own_capacity": day.isoformat() in caps,
                      "booked": sum(counts.get(s, 0) for s, _ in slots)})
        for start, _end in slots:
            key = datetime.fromtimestamp(start, tz).strftime("%H:%M")
            row = cells.setdefault(key, [None] * 7)
            row[i] = {"start": start, "booked": counts.get(start, 0), "capacity": capacity,
                      "blocked": start in day_blocks or slotrules.WHOLE_DAY in day_blocks, "past": start <= now}
    return {"days": heads, "rows": sorted(cells.items())}


def day_view(c: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date, now: int) -> dict[str, Any]:
    blocks = slotrules.blocks_between(c, branch["id"], service["id"], day, day).get(day.isoformat(), {})
    caps = slotrules.capacities_between(c, branch["id"], service["id"], day, day)
    capacity = caps.get(day.isoformat(), service["capacity"])
    lo, hi = _bounds(branch, day, 1)
    counts = _counts(c, branch["id"], service["id"], lo, hi)
    whole = slotrules.WHOLE_DAY in blocks
    slots = [{"start": s, "end": e, "booked": counts.get(s, 0), "capacity": capacity, "past": s <= now,
              "blocked": whole or s in blocks, "reason": blocks.get(s, blocks.get(slotrules.WHOLE_DAY, ""))}
             for s, e in booking.grid(c, branch, service, day)]
    blocked_starts = {s["start"] for s in slots if s["blocked"]}
    held = [dict(r) for r in c.execute(
        "SELECT code, name, slot_start, status FROM bookings"
        " WHERE branch_id = ? AND service_id = ? AND slot_start >= ? AND slot_start < ? AND status = 'booked'"
        " ORDER BY slot_start, id", (branch["id"], service["id"], lo, hi)) if r["slot_start"] in blocked_starts]
    return {"slots": slots, "whole": whole, "whole_reason": blocks.get(slotrules.WHOLE_DAY, ""),
            "capacity": capacity, "own_capacity": day.isoformat() in caps, "held": held}


def cancel_held(c: sqlite3.Connection, key: Any, branch: sqlite3.Row, service: sqlite3.Row, day: date,
                starts: set[int], now: int) -> int:
    """Cancel the 'booked' bookings of ``starts`` (nobody checked in yet) and queue each holder's
    cancellation message; the branch is told by booking.cancelled (its kiosks refuse the code)."""
    lo, hi = _bounds(branch, day, 1)
    n = 0
    for row in c.execute("SELECT * FROM bookings WHERE branch_id = ? AND service_id = ? AND slot_start >= ?"
                         " AND slot_start < ? AND status = 'booked'", (branch["id"], service["id"], lo, hi)).fetchall():
        if row["slot_start"] not in starts or c.execute(
                "SELECT 1 FROM tickets WHERE branch_id = ? AND booking_code = ?", (branch["id"], row["code"])).fetchone():
            continue
        row = c.execute("UPDATE bookings SET status = 'cancelled', updated_at = ? WHERE id = ? AND status = 'booked'"
                        " RETURNING *", (now, row["id"])).fetchone()
        if row is None:  # cancelled by a concurrent request
            continue
        booking.release_places(c, row["branch_id"], row["service_id"], row["slot_start"])
        outbox.emit(c, key, branch["id"], ev.BOOKING_CANCELLED, booking._event_payload(row), now * 1000)
        notifications.enqueue_for_booking(c, row, branch, "cancellation", f"cancel:{row['code']}", now)
        n += 1
    return n


# -- pages -------------------------------------------------------------------------------------
def _day(raw: str) -> date | None:
    """A date of the URL, inside the range HQ converts (hq.errors.check_date): 9999-12-31 was a 500."""
    try:
        return check_date(raw)
    except ApiError:
        return None


async def _service(request: web.Request, branch: sqlite3.Row, service_id: str | None) -> tuple[list[sqlite3.Row],
                                                                                               sqlite3.Row | None]:
    services = await hq_of(request).db.read(lambda c: _services(c, branch["id"]))
    if service_id is None:
        return services, services[0] if services else None
    for s in services:
        if s["id"] == service_id:
            return services, s
    raise PageError(404, N_("This page does not exist."))


@page(MANAGERS)
async def week_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    hq = hq_of(request)
    wanted = request.query.get("service")
    services, service = await _service(request, branch, wanted if wanted else None)
    today = datetime.fromtimestamp(hq.now(), ZoneInfo(branch["timezone"])).date()
    shown = _day(request.query.get("week", "")) or today
    monday = shown - timedelta(days=shown.weekday())
    lang = request.get(LANG) or "en"
    view = await hq.db.read(lambda c: week_view(c, branch, service, monday, hq.now())) if service else None
    return crender(request, "console/calendar.html", b=dict(branch), view=view, monday=monday,
                   sunday=monday + timedelta(days=6), service=dict(service) if service else None,
                   options=[(s["id"], _name(s, lang)) for s in services],
                   service_name=_name(service, lang) if service else "",
                   prev=(monday - timedelta(days=7)).isoformat(), next=(monday + timedelta(days=7)).isoformat(),
                   this_week=(today - timedelta(days=today.weekday())).isoformat())


def _require_day(request: web.Request) -> date:
    day = _day(request.match_info["day"])
    if day is None:
        raise PageError(404, N_("This page does not exist."))
    return day


async def _day_page(request: web.Request, p: Principal, branch: sqlite3.Row, service: sqlite3.Row, day: date,
                    errors: dict[str, str] | None = None, values: dict[str, str] | None = None) -> web.Response:
    hq = hq_of(request)
    view = await hq.db.read(lambda c: day_view(c, branch, service, day, hq.now()))
    monday = day - timedelta(days=day.weekday())
    return crender(request, "console/calendar_day.html", status=400 if errors else 200, b=dict(branch),
                   service=dict(service), service_name=_name(service, request.get(LANG) or "en"), day=day, view=view,
                   monday=monday.isoformat(), errors=errors or {}, values=values or {}, done=request.query.get("done", ""),
                   max_capacity=MAX_CAPACITY)


@page(MANAGERS)
async def day_page(request: web.Request, p: Principal) -> web.Response:
    branch = await _branch(request, p)
    _, service = await _service(request, branch, request.match_info["service"])
    assert service is not None
    return await _day_page(request, p, branch, service, _require_day(request))


@page(MANAGERS)
async def day_action(request: web.Request, p: Principal) -> web.Response:
    """POST .../{day}/{action}: block, unblock (chosen slots or the whole day), capacity."""
    branch = await _branch(request, p)
    try:
        check_branch(p, branch["org_id"], branch["id"], "manage")
    except ApiError as err:
        raise PageError(403, N_("Your role may not use this page.")) from err
    _, service = await _service(request, branch, request.match_info["service"])
    assert service is not None
    day = _require_day(request)
    action = request.match_info["action"]
    form = await request.post()
    hq = hq_of(request)
    now = hq.now()
    base = f"/console/calendar/{branch['id']}/{service['id']}/{day.isoformat()}"
    if action in ("block", "unblock"):
        whole = form.get("whole") == "yes"
        raw = [v for v in form.getall("slot", []) if isinstance(v, str)][:500]
        starts = [int(v) for v in raw if v.isdigit() and len(v) < 12]
        reason = _text(form, "reason", 120) or _text(form, "day-reason", 120)
        cancel = action == "block" and form.get("cancel") == "yes"

        def write(c: sqlite3.Connection) -> int:
            grid = {s for s, _ in booking.grid(c, branch, service, day)}
            chosen = [slotrules.WHOLE_DAY] if whole else [s for s in starts if s in grid]
            if not chosen:
                return -1
            if action == "block":
                slotrules.block(c, branch["id"], service["id"], day, chosen, reason, now)
            else:
                slotrules.unblock(c, branch["id"], service["id"], day, chosen)
            cancelled = cancel_held(c, hq.key, branch, service, day, grid if whole else set(chosen), now) if cancel else 0
            what = "the whole day" if whole else ", ".join(datetime.fromtimestamp(
                s, ZoneInfo(branch["timezone"])).strftime("%H:%M") for s in sorted(chosen))
            audit.record(c, p, branch["org_id"], f"calendar.{action}", f"{branch['id']}/{service['id']}/{day.isoformat()}",
                         f"{what}{'; ' + reason if reason else ''}{f'; {cancelled} bookings cancelled' if cancel else ''}",
                         now)
            return cancelled
        result = await hq.db.write(write)
        if result < 0:
            return await _day_page(request, p, branch, service, day,
                                   {"slot": N_("Choose at least one slot, or the whole day.")})
        if result:
            hq.wake_notifier()
        return redirect(f"{base}?done={action}{'-cancelled' if result else ''}")
    if action == "capacity":
        raw_cap = _text(form, "capacity", 6)
        if raw_cap and not (raw_cap.isdigit() and 0 <= int(raw_cap) <= MAX_CAPACITY):
            return await _day_page(request, p, branch, service, day,
                                   {"capacity": N_("Enter a whole number from 0 to 1000, or leave it empty.")},
                                   {"capacity": raw_cap})
        capacity = int(raw_cap) if raw_cap else None

        def set_cap(c: sqlite3.Connection) -> None:
            slotrules.set_capacity(c, branch["id"], service["id"], day, capacity)
            audit.record(c, p, branch["org_id"], "calendar.capacity", f"{branch['id']}/{service['id']}/{day.isoformat()}",
                         f"capacity={capacity if capacity is not None else 'default'}", now)
        await hq.db.write(set_cap)
        return redirect(f"{base}?done=capacity")
    raise PageError(404, N_("This page does not exist."))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/console/calendar/{branch}", week_page)
    r.add_get("/console/calendar/{branch}/{service}/{day}", day_page)
    r.add_post("/console/calendar/{branch}/{service}/{day}/{action}", day_action)
