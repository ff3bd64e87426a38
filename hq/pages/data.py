"""What the citizens' pages read: offices, a branch's day, bookable days and slots, live queues.

Plain functions of a SQLite connection (run on HQ's reader threads). Nothing here returns a
person's name, phone or e-mail: the public pages never show them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hq import booking, live, slotrules, tenants

MAX_DAYS_LISTED = 14  # bookable days offered on one page


def crowd_level(wait_s: int | None) -> str:
    """low / medium / high from the estimated wait (under 10 min, under 30 min, more)."""
    if not wait_s or wait_s < 600:
        return "low"
    return "medium" if wait_s < 1800 else "high"


def offices(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for org in conn.execute("SELECT * FROM orgs ORDER BY name, id"):
        branches = [{"id": b["id"], "name": b["name"], "address": b["address"]}
                    for b in conn.execute("SELECT * FROM branches WHERE org_id = ? ORDER BY name, id", (org["id"],))]
        if branches:
            out.append({"id": org["id"], "name": org["name"], "branches": branches})
    return out


def service_name(names_json: str | dict[str, str], lang: str) -> str:
    names = json.loads(names_json) if isinstance(names_json, str) else names_json
    return names.get(lang) or names.get("en") or next(iter(names.values()), "")


def local_today(branch: sqlite3.Row, now: int) -> date:
    return datetime.fromtimestamp(now, ZoneInfo(branch["timezone"])).date()


def hours_on(conn: sqlite3.Connection, branch_id: str, day: date) -> tuple[str, str] | None:
    if conn.execute("SELECT 1 FROM closed_days WHERE branch_id = ? AND day = ?", (branch_id, day.isoformat())).fetchone():
        return None
    row = conn.execute("SELECT opens, closes FROM hours WHERE branch_id = ? AND weekday = ?",
                       (branch_id, day.weekday())).fetchone()
    return (row[0], row[1]) if row else None


def branch_page(conn: sqlite3.Connection, branch_id: str, now: int, lang: str, default_s: int) -> dict[str, Any]:
    branch = tenants.get_branch(conn, branch_id)
    today = local_today(branch, now)
    week = {r["weekday"]: (r["opens"], r["closes"])
            for r in conn.execute("SELECT * FROM hours WHERE branch_id = ?", (branch_id,))}
    closed = [{"day": date.fromisoformat(r["day"]), "reason": r["reason"]} for r in conn.execute(
        "SELECT * FROM closed_days WHERE branch_id = ? AND day >= ? ORDER BY day LIMIT 10", (branch_id, today.isoformat()))]
    summary = {s["service"]: s for s in live.branch_summary(conn, branch_id, today.strftime("%Y%m%d"), default_s)["services"]}
    services = []
    for s in tenants.list_services(conn, branch_id):
        q = summary.get(s["id"], {"waiting": 0, "estimated_wait_s": 0})
        services.append({"id": s["id"], "name": service_name(s["names"], lang), "bookable": s["bookable"],
                         "waiting": q["waiting"], "wait_s": q["estimated_wait_s"],
                         "crowd": crowd_level(q["estimated_wait_s"])})
    return {"id": branch["id"], "name": branch["name"], "address": branch["address"], "timezone": branch["timezone"],
            "org": tenants.get_org(conn, branch["org_id"])["name"], "today": today,
            "today_hours": hours_on(conn, branch_id, today), "week": week, "closed": closed, "services": services}


@dataclass(frozen=True, slots=True)
class Slot:
    start: int
    end: int
    left: int


def slots_on(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date, now: int,
             horizon_days: int) -> list[Slot]:
    """Future slots of ``day`` with the places left (0 included: shown as full)."""
    today = local_today(branch, now)
    if not today <= day <= today + timedelta(days=horizon_days):
        return []
    slots = [s for s in booking.day_slots(conn, branch, service, day) if s[0] > now]
    if not slots:
        return []
    counts = booking._booked_counts(conn, branch["id"], service["id"], slots[0][0], slots[-1][0])
    capacity = slotrules.capacity_on(conn, branch["id"], service, day)
    return [Slot(a, b, max(0, capacity - counts.get(a, 0))) for a, b in slots]


def bookable_days(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, now: int,
                  horizon_days: int, limit: int = MAX_DAYS_LISTED) -> list[tuple[date, int]]:
    """(day, places left that day) of the next days with at least one free place."""
    today = local_today(branch, now)
    out = []
    for i in range(horizon_days + 1):
        day = today + timedelta(days=i)
        left = sum(s.left for s in slots_on(conn, branch, service, day, now, horizon_days))
        if left:
            out.append((day, left))
            if len(out) >= limit:
                break
    return out


def nearest_slots(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, around: int, now: int,
                  horizon_days: int, count: int = 5) -> list[Slot]:
    """The free slots closest in time to ``around`` (a slot just lost): that day, then the next ones."""
    day = datetime.fromtimestamp(around, ZoneInfo(branch["timezone"])).date()
    found: list[Slot] = []
    for i in range(MAX_DAYS_LISTED):
        found += [s for s in slots_on(conn, branch, service, day + timedelta(days=i), now, horizon_days)
                  if s.left and s.start != around]
        if len(found) >= count:
            break
    return sorted(sorted(found, key=lambda s: abs(s.start - around))[:count], key=lambda s: s.start)


def now_serving(conn: sqlite3.Connection, branch_id: str, day: str) -> list[dict[str, Any]]:
    """Per counter, the ticket it called last today and still holds: (counter name, label)."""
    names = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM counters WHERE branch_id = ?", (branch_id,))}
    held: dict[str, tuple[int, str]] = {}
    for r in conn.execute("SELECT counter, label, called_ms FROM tickets WHERE branch_id = ? AND day = ?"
                          " AND called_ms IS NOT NULL AND completed_ms IS NULL AND no_show_ms IS NULL"
                          " AND counter IS NOT NULL", (branch_id, day)):
        if r["counter"] not in held or r["called_ms"] > held[r["counter"]][0]:
            held[r["counter"]] = (r["called_ms"], r["label"] or "")
    return [{"counter": names.get(c, c), "label": label} for c, (_, label) in sorted(held.items())]


def last_heard(conn: sqlite3.Connection, branch_id: str, now: int) -> int | None:
    """Unix s HQ last heard from the branch: a link request (any HQ process) or a received event
    (events of the last day, via the hlc index)."""
    since = (now - 86400) * 1000 << 16
    row = conn.execute("SELECT max(received_at) FROM events WHERE branch = ? AND hlc >= ?", (branch_id, since)).fetchone()
    contact = conn.execute("SELECT heard_at FROM branch_contact WHERE branch_id = ?", (branch_id,)).fetchone()
    return max(filter(None, (row[0] if row else None, contact[0] if contact else None)), default=None)


def moved_to(conn: sqlite3.Connection, branch_id: str, ticket_id: str) -> dict[str, str] | None:
    """{branch, code} when HQ moved the ticket to another branch (its ticket.moved), else None."""
    row = conn.execute("SELECT envelope FROM outbox WHERE branch_id = ? AND subject = ? AND type = 'ticket.moved'"
                       " ORDER BY seq DESC LIMIT 1", (branch_id, ticket_id)).fetchone()
    if row is None:
        return None
    p = json.loads(row[0])["payload"]
    to = conn.execute("SELECT name FROM branches WHERE id = ?", (p.get("to_branch"),)).fetchone()
    return {"branch": to[0] if to else str(p.get("to_branch")), "code": str(p.get("booking"))}


def ticket_view(conn: sqlite3.Connection, token: str, now: int, lang: str, default_s: int,
                heard: int | None) -> dict[str, Any] | None:
    """Everything the live status page shows of the ticket with this status token, or None."""
    found = live.ticket_by_token(conn, token)
    if found is None:
        return None
    branch_id, ticket_id = found
    st = live.ticket_status(conn, branch_id, ticket_id, default_s)
    if st is None:
        return None
    branch = tenants.get_branch(conn, branch_id)
    row = conn.execute("SELECT day, counter FROM tickets WHERE branch_id = ? AND id = ?", (branch_id, ticket_id)).fetchone()
    svc = conn.execute("SELECT names FROM services WHERE branch_id = ? AND id = ?", (branch_id, st["service"])).fetchone()
    counter = None
    if row["counter"]:
        c = conn.execute("SELECT name FROM counters WHERE branch_id = ? AND id = ?", (branch_id, row["counter"])).fetchone()
        counter = c[0] if c else row["counter"]
    heard_at = max(filter(None, (heard, last_heard(conn, branch_id, now))), default=None)
    status, moved = st["status"], None
    if status == "cancelled":  # moved to another branch by the console (hq/reassign.py)?
        moved = moved_to(conn, branch_id, ticket_id)
        if moved is not None:
            status = "moved"
    return {"branch": branch["name"], "timezone": branch["timezone"], "label": st["label"],
            "service": service_name(svc[0], lang) if svc else st["service"], "status": status, "moved": moved,
            "position": st["position"], "people_ahead": st["people_ahead"], "wait_s": st["estimated_wait_s"],
            "counter": counter, "serving": now_serving(conn, branch_id, row["day"]), "heard_at": heard_at}
