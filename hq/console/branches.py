"""A branch's settings in the console, /console/branches/{branch}: its details (name, address,
time zone), opening hours, closed days and holidays, the display's notices and the counters'
names in each of its languages, each service's target wait, staff and their counter PINs.

Every change goes through hq.tenants.Writer, so it becomes the signed config event the branch
link carries to the branch (config.branch, config.hours, config.staff), in the same
transaction as the row and the audit entry. Details and staff: org admins and up; hours and
closed days, notices, counter names and target waits: branch managers too (docs/hq.md, "Roles").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from aiohttp import web

from hq import catalogue, tenants
from hq.auth import Principal, check_branch
from hq.console import audit
from hq.console.live import _branch
from hq.console.views import _hash, _text, crender, page
from hq.errors import ApiError
from hq.pages.app import PageError, redirect
from hq.pages.i18n import N_
from hq.web import hq_of

MANAGERS = ("super_admin", "org_admin", "branch_manager")


def _may(p: Principal, branch: sqlite3.Row, level: str) -> bool:
    try:
        check_branch(p, branch["org_id"], branch["id"], level)  # type: ignore[arg-type]
    except ApiError:
        return False
    return True


def _require(p: Principal, branch: sqlite3.Row, level: str) -> None:
    if not _may(p, branch, level):
        raise PageError(403, N_("Your role may not use this page."))


async def _page(request: web.Request, p: Principal, branch: sqlite3.Row, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None) -> web.Response:
    hq = hq_of(request)

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        staff = [dict(r) for r in c.execute("SELECT id, name, pin_hash != '' AS has_pin FROM staff WHERE branch_id = ?"
                                            " ORDER BY id", (branch["id"],))]
        return {"hours": tenants.hours_json(c, branch["id"]), "staff": staff,
                "counters": tenants.list_counters(c, branch["id"]),
                "targets": catalogue.branch_targets(c, branch["id"], hq.settings.target_wait_s),
                "b": dict(c.execute("SELECT * FROM branches WHERE id = ?", (branch["id"],)).fetchone())}
    data = await hq.db.read(load)
    week = {wd: data["hours"]["weekdays"].get(str(wd), {"opens": "", "closes": ""}) for wd in range(7)}
    languages = json.loads(data["b"]["languages"])
    stored = json.loads(data["b"]["notices"])
    # A list holds for every language: each language's box starts with it.
    notices = {lang: "\n".join(stored.get(lang, []) if isinstance(stored, dict) else stored) for lang in languages}
    return crender(request, "console/branch.html", status=400 if errors else 200, week=week,
                   closed=data["hours"]["closed_days"], staff=data["staff"], b=data["b"], errors=errors or {},
                   values=values or {}, may_admin=_may(p, branch, "admin"), done=request.query.get("done", ""),
                   branch_languages=languages, notices=notices, counters=data["counters"], targets=data["targets"])


@page(MANAGERS)
async def branch_page(request: web.Request, p: Principal) -> web.Response:
    return await _page(request, p, await _branch(request, p))


async def _write(request: web.Request, p: Principal, branch: sqlite3.Row, action: str, detail: str,
                 fn: Any) -> None:
    hq = hq_of(request)
    now = hq.now()

    def write(c: sqlite3.Connection) -> None:
        fn(tenants.Writer(c, hq.key, hq.now_ms()))
        audit.record(c, p, branch["org_id"], action, branch["id"], detail, now)
    await hq.db.write(write)


async def _form(request: web.Request, p: Principal, level: str) -> tuple[sqlite3.Row, Any]:
    """The branch of a form post the principal may change at ``level``, and the posted form."""
    branch = await _branch(request, p)
    _require(p, branch, level)
    return branch, await request.post()


async def _save(request: web.Request, p: Principal, branch: sqlite3.Row, errors: dict[str, str],
                values: dict[str, Any], done: str, action: str, detail: str, fn: Any) -> web.Response:
    """Every form's ending: with errors, the page again (400) keeping what was typed; else the
    change written with its audit line, and back to the page saying what was saved."""
    if errors:
        return await _page(request, p, branch, errors, values)
    await _write(request, p, branch, action, detail, fn)
    return redirect(f"/console/branches/{branch['id']}?done={done}")


@page(MANAGERS)
async def branch_details(request: web.Request, p: Principal) -> web.Response:
    branch, form = await _form(request, p, "admin")
    values = {k: _text(form, k, 300) for k in ("name", "address", "timezone")}
    errors = {}
    if not values["name"]:
        errors["name"] = N_("Enter the branch's name.")
    try:
        tenants.check_timezone(values["timezone"])
    except ApiError:
        errors["timezone"] = N_("Enter a time zone like Africa/Kigali or Europe/Zurich.")
    return await _save(request, p, branch, errors, values, "details", "branch.update",
                       f"name={values['name']}, timezone={values['timezone']}",
                       lambda w: w.update_branch(branch["id"], values))


@page(MANAGERS)
async def branch_hours(request: web.Request, p: Principal) -> web.Response:
    branch, form = await _form(request, p, "manage")
    week: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    for wd in range(7):
        opens, closes = _text(form, f"opens{wd}", 5), _text(form, f"closes{wd}", 5)
        values[f"opens{wd}"], values[f"closes{wd}"] = opens, closes
        if not opens and not closes:
            continue  # closed that weekday
        if not (tenants.TIME_RE.match(opens) and tenants.TIME_RE.match(closes)) or opens >= closes:
            errors[f"opens{wd}"] = N_("Enter the opening and closing times as HH:MM, opening first, or leave both empty.")
            continue
        week[str(wd)] = {"opens": opens, "closes": closes}
    return await _save(request, p, branch, errors, values, "hours", "branch.hours",
                       ", ".join(f"{k}:{v['opens']}-{v['closes']}" for k, v in week.items()),
                       lambda w: w.put_hours(branch["id"], {"weekdays": week}))


@page(MANAGERS)
async def branch_closed_add(request: web.Request, p: Principal) -> web.Response:
    branch, form = await _form(request, p, "manage")
    values = {"day": _text(form, "day", 10), "reason": _text(form, "reason", 120)}
    errors = {}
    try:
        tenants.check_day(values["day"])
    except ApiError:
        errors["day"] = N_("Enter the date as YYYY-MM-DD.")
    return await _save(request, p, branch, errors, values, "closed", "branch.closed_day",
                       f"+{values['day']} {values['reason']}", lambda w: w.add_closed_day(branch["id"], values))


@page(MANAGERS)
async def branch_closed_remove(request: web.Request, p: Principal) -> web.Response:
    branch, _ = await _form(request, p, "manage")
    day = request.match_info["day"]
    try:
        await _write(request, p, branch, "branch.closed_day", f"-{day}",
                     lambda w: w.remove_closed_day(branch["id"], day))
    except ApiError as err:
        raise PageError(404, N_("This page does not exist.")) from err
    return redirect(f"/console/branches/{branch['id']}?done=closed")


async def _languages(request: web.Request, branch: sqlite3.Row) -> list[str]:
    row = await hq_of(request).db.read(lambda c: c.execute("SELECT languages FROM branches WHERE id = ?",
                                                           (branch["id"],)).fetchone())
    return list(json.loads(row[0]))


@page(MANAGERS)
async def branch_notices(request: web.Request, p: Principal) -> web.Response:
    """The display's ticker lines, one box per language of the branch (one line per notice)."""
    branch, form = await _form(request, p, "manage")
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    notices: dict[str, list[str]] = {}
    for lang in await _languages(request, branch):
        raw = form.get(f"notices_{lang}", "")
        text = raw if isinstance(raw, str) else ""
        values[f"notices_{lang}"] = text[:20 * 210]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 20 or any(len(line) > 200 for line in lines):
            errors[f"notices_{lang}"] = N_("Enter at most 20 notices of at most 200 characters each.")
        elif lines:
            notices[lang] = lines
    return await _save(request, p, branch, errors, values, "notices", "branch.notices",
                       ", ".join(f"{k}:{len(v)}" for k, v in notices.items()),
                       lambda w: w.update_branch(branch["id"], {"notices": notices or []}))


@page(MANAGERS)
async def branch_counter_names(request: web.Request, p: Principal) -> web.Response:
    """Each counter's name in each language of the branch; an empty box: its default name."""
    branch, form = await _form(request, p, "manage")
    languages = await _languages(request, branch)
    counters = await hq_of(request).db.read(lambda c: tenants.list_counters(c, branch["id"]))
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    changed: list[dict[str, Any]] = []
    for counter in counters:
        names = {}
        for lang in languages:
            key = f"name_{counter['id']}_{lang}"
            raw = form.get(key, "")
            values[key] = text = raw.strip() if isinstance(raw, str) else ""
            if len(text) > 120:
                errors[key] = N_("A name has at most 120 characters.")
            elif text:
                names[lang] = text
        # Names of languages the branch no longer offers are kept.
        names = {**{k: v for k, v in counter["names"].items() if k not in languages}, **names}
        if names != counter["names"]:
            changed.append({**counter, "names": names})

    def put(w: tenants.Writer) -> None:
        for c in changed:
            w.put_counter(branch["id"], c["id"], {"name": c["name"], "names": c["names"], "services": c["services"],
                                                  "order": c["order"]})
    return await _save(request, p, branch, errors, values, "counters", "branch.counter_names",
                       ", ".join(c["id"] for c in changed), put)


@page(MANAGERS)
async def branch_targets(request: web.Request, p: Principal) -> web.Response:
    """Each service's target wait in this branch (minutes; empty: the catalogue's or HQ's)."""
    branch, form = await _form(request, p, "manage")
    hq = hq_of(request)
    services = await hq.db.read(lambda c: catalogue.branch_targets(c, branch["id"], hq.settings.target_wait_s))
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    chosen: dict[str, int | None] = {}
    lo, hi = tenants.TARGET_MINUTES
    for s in services:
        key = f"target_{s['id']}"
        values[key] = raw = _text(form, key, 6)
        if raw == "":
            chosen[s["id"]] = None
        elif raw.isdigit() and lo <= int(raw) <= hi:
            chosen[s["id"]] = int(raw)
        else:
            errors[key] = N_("Enter a target wait from 1 to 240 minutes, or leave it empty.")
    changed = {sid: m for sid, m in chosen.items() if m != next(s["own"] for s in services if s["id"] == sid)}

    def put(w: tenants.Writer) -> None:
        for sid, minutes in changed.items():
            catalogue.set_branch_target(w.conn, branch["id"], sid, minutes)
    return await _save(request, p, branch, errors, values, "targets", "branch.targets",
                       ", ".join(f"{sid}={m if m is not None else '-'}" for sid, m in changed.items()), put)


@page(MANAGERS)
async def branch_staff(request: web.Request, p: Principal) -> web.Response:
    branch, form = await _form(request, p, "admin")
    values = {"staff_id": _text(form, "staff_id", 40).lower(), "staff_name": _text(form, "staff_name", 120),
              "pin": _text(form, "pin", 12)}
    errors = {}
    try:
        tenants.check_id(values["staff_id"], "staff id")
    except ApiError:
        errors["staff_id"] = N_("Use lowercase letters, digits, - and _ (up to 40).")
    if not values["staff_name"]:
        errors["staff_name"] = N_("Enter the person's name.")
    if not (values["pin"].isdigit() and 4 <= len(values["pin"]) <= 12):
        errors["pin"] = N_("The PIN is 4 to 12 digits.")
    if errors:
        values["pin"] = ""
        return await _page(request, p, branch, errors, values)
    pin_hash = await asyncio.to_thread(_hash, request, values["pin"])
    await _write(request, p, branch, "branch.staff", f"{values['staff_id']} ({values['staff_name']}): PIN set",
                 lambda w: w.put_staff(branch["id"], values["staff_id"], values["staff_name"], pin_hash))
    return redirect(f"/console/branches/{branch['id']}?done=staff")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/console/branches/{branch}", branch_page)
    r.add_post("/console/branches/{branch}/details", branch_details)
    r.add_post("/console/branches/{branch}/hours", branch_hours)
    r.add_post("/console/branches/{branch}/closed-days", branch_closed_add)
    r.add_post("/console/branches/{branch}/closed-days/{day}/delete", branch_closed_remove)
    r.add_post("/console/branches/{branch}/staff", branch_staff)
    r.add_post("/console/branches/{branch}/notices", branch_notices)
    r.add_post("/console/branches/{branch}/counter-names", branch_counter_names)
    r.add_post("/console/branches/{branch}/targets", branch_targets)
