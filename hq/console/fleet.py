"""Fleet health, /console/fleet: every device of every branch the account may see, with when it
was last heard, events it holds that HQ lacks, its printer, app version and clock, and a list of
what needs attention (hq/fleet.py; docs/console.md). Admins and branch managers; staff 403."""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from hq import fleet
from hq.auth import Principal
from hq.console.views import crender, csv_response, page
from hq.pages.app import T
from hq.pages.i18n import DEFAULT, N_, translator
from hq.web import hq_of

MANAGERS = ("super_admin", "org_admin", "branch_manager")
PRINTER_NAMES = {"ok": N_("OK"), "paper_low": N_("Paper low"), "paper_out": N_("Out of paper"),
                 "cover_open": N_("Cover open"), "offline": N_("Offline"), "error": N_("Error"),
                 "unknown": N_("Unknown")}
#: A device's role as the page names it (the data and the CSV keep the code).
ROLE_NAMES = {"kiosk": N_("Kiosk"), "counter": N_("Counter"), "display": N_("Display")}
PROBLEMS = {"never": N_("Never heard from"), "silent": N_("Not heard from for {time}"),
            "pending": N_("Events not yet at HQ: {n}"), "printer": N_("Printer: {state}"),
            "clock": N_("Clock off by {seconds} s"), "version": N_("Older app version (newest: {newest})")}


def _branches(c: sqlite3.Connection, p: Principal) -> list[str]:
    if p.role == "super_admin":
        return [r[0] for r in c.execute("SELECT id FROM branches ORDER BY id")]
    if p.role == "org_admin":
        return [r[0] for r in c.execute("SELECT id FROM branches WHERE org_id = ? ORDER BY id", (p.org_id,))]
    return [p.branch_id] if p.branch_id else []


@page(MANAGERS)
async def fleet_page(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    now = hq.now()
    silent = hq.settings.fleet_silent_after_s
    devices = await hq.db.read(lambda c: fleet.fleet(c, _branches(c, p), now, silent))
    if request.query.get("format") == "csv":
        return csv_response("fleet.csv", ["branch", "device", "role", "last_heard", "last_report", "last_heard_by_peer",
                                          "pending_events", "printer", "app_version", "clock_offset_ms", "attention"],
                            [[d["branch_id"], d["id"], d["role"], d["heard"] or "", d["reported_at"] or "",
                              d["peer_heard"] or "", "" if d["pending"] is None else d["pending"], d["printer"] or "",
                              d["app_version"] or "", "" if d["clock_offset_ms"] is None else d["clock_offset_ms"],
                              " ".join(code for code, _ in d["problems"])] for d in devices])
    t = request.get(T) or translator(DEFAULT)
    for d in devices:
        d["problem_texts"] = [t(PROBLEMS[code], **_shown(t, code, values)) for code, values in d["problems"]]
    attention = [d for d in devices if d["problems"]]
    return crender(request, "console/fleet.html", devices=devices, attention=attention, now=now,
                   printer_names=PRINTER_NAMES, device_roles=ROLE_NAMES, silent_after_s=silent)


def _shown(t: Any, code: str, values: dict[str, Any]) -> dict[str, Any]:
    """A problem's values as the page shows them: a printer state's name, a duration in hours and
    minutes, numbers in the visitor's language."""
    if code == "printer":
        return {**values, "state": t(PRINTER_NAMES[values["state"]])}
    if code == "silent":
        return {"time": t.minutes(values["minutes"] * 60)}
    if code == "pending":
        return {"n": t.number(values["n"])}
    return values


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/fleet", fleet_page)
