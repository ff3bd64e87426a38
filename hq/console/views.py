"""Console pages: log in and out, home, accounts, my password, the audit log (docs/console.md).

Every page goes through :func:`page`, which finds the logged-in account from HQ's session
cookie (the same sessions as the JSON API's web login), sends visitors without one to the
login page, and shows a 403 page in the visitor's language when the role may not use the
page or the thing belongs to another tenant. CSRF, the language and the security headers come
from the pages middleware (hq/pages/app.py) like every other HTML page.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hq import booking
from hq.auth import COOKIE_NAME, ROLES, Principal, create_session, hash_password, lookup_session, token_digest, \
    verify_password
from hq.console import audit, passwords
from hq.errors import ApiError
from hq.pages.app import T, PageError, cookie_args, local_path, redirect, render
from hq.pages.i18n import DEFAULT, N_, translator
from hq.web import LOGIN_LIMITER, client_address, hq_of

ME = web.RequestKey("console_me", Principal)
ROLE_NAMES = {"super_admin": N_("Super admin"), "org_admin": N_("Organization admin"),
              "branch_manager": N_("Branch manager"), "staff": N_("Staff")}
ADMINS = ("super_admin", "org_admin")
EVERYONE = ROLES
AUDIT_PAGE = 100
# A hash to check unknown e-mails against, so the login's timing does not reveal accounts.
_DUMMY: dict[str, str] = {}

ConsoleHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


# -- plumbing --------------------------------------------------------------------------------
def nav_for(p: Principal) -> list[tuple[str, str]]:
    """(href, msgid) of the menu: only what the role may use."""
    items = [("/console", N_("Console home"))]
    if p.branch_id:
        items.append((f"/console/live/{p.branch_id}", N_("Live queues")))
        items.append((f"/console/appointments/{p.branch_id}", N_("Appointments")))
        if p.role == "branch_manager":
            items.append((f"/console/calendar/{p.branch_id}", N_("Calendar")))
            items.append(("/console/analytics", N_("Analytics")))
            items.append((f"/console/staffing/{p.branch_id}", N_("Staffing advice")))
            items.append(("/console/fleet", N_("Fleet health")))
            items.append((f"/console/branches/{p.branch_id}", N_("Settings")))
            items.append((f"/console/reassign/{p.branch_id}", N_("Reassign")))
    if p.role == "super_admin":
        items.append(("/console/orgs", N_("Organizations")))
    if p.role == "org_admin" and p.org_id:
        items.append((f"/console/orgs/{p.org_id}/catalogue", N_("Service catalogue")))
    if p.role in ADMINS:
        items.append(("/console/analytics", N_("Analytics")))
        items.append(("/console/fleet", N_("Fleet health")))
        items += [("/console/accounts", N_("Accounts")), ("/console/audit", N_("Audit log"))]
    items += [("/console/password", N_("My password"))]
    return items


def crender(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    p = request.get(ME)
    if "roles" in values:
        t = request.get(T) or translator(DEFAULT)
        values["role_options"] = [(r, t(ROLE_NAMES[r])) for r in values.pop("roles")]
    return render(request, template, status=status, me=p, nav=nav_for(p) if p else [], role_names=ROLE_NAMES,
                  min_password=passwords.MIN_LENGTH, **values)


def console_error(request: web.Request, status: int, message: str, **values: Any) -> web.Response:
    titles = {400: N_("The request was not understood"), 403: N_("Not allowed"), 404: N_("Page not found"),
              409: N_("That did not work"), 429: N_("Too many attempts")}
    text = (request.get(T) or translator(DEFAULT)).gettext(message, **values)
    return crender(request, "console/error.html", status=status, title=titles.get(status, N_("Something went wrong")),
                   message=text)


async def current(request: web.Request) -> Principal | None:
    token = request.cookies.get(COOKIE_NAME)
    if not token or len(token) > 100:
        return None
    hq = hq_of(request)
    now = hq.now()
    return await hq.db.read(lambda c: lookup_session(c, token, "cookie", now))


def page(roles: tuple[str, ...] = EVERYONE) -> Callable[[ConsoleHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A console page for ``roles``: others get the 403 page, visitors the login page."""
    def deco(handler: ConsoleHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            p = await current(request)
            if p is None:
                return redirect("/console/login?next=" + quote(request.path_qs if request.method == "GET" else "/console"))
            request[ME] = p
            try:
                if p.role not in roles:
                    raise PageError(403, N_("Your role may not use this page."))
                return await handler(request, p)
            except PageError as err:
                return console_error(request, err.status, err.message, **err.values)
            except ApiError as err:  # a tenant check in shared code: the same 403 page
                status = 403 if err.status in (403, 404) else 400
                return console_error(request, status, N_("Your role may not use this page.") if status == 403
                                     else N_("This request could not be handled."))
        return wrapper
    return deco


def csv_response(filename: str, header: list[str], rows: list[list[Any]]) -> web.Response:
    """A table as CSV (UTF-8 with BOM for spreadsheets); cells that a spreadsheet would run as a
    formula (=, +, -, @ first) are quoted with a leading apostrophe."""
    def cell(v: Any) -> Any:
        return "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    w.writerows([cell(v) for v in r] for r in rows)
    return web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _hash(request: web.Request, password: str) -> str:
    s = hq_of(request).settings
    return hash_password(password, memory_kib=s.argon2_memory_kib, iterations=s.argon2_iterations, lanes=s.argon2_lanes)


def _text(form: Any, name: str, limit: int = 254) -> str:
    value = form.get(name, "")
    return str(value).strip()[:limit] if isinstance(value, str) else ""


def _secret(form: Any, name: str) -> str:
    value = form.get(name, "")
    return str(value)[:passwords.MAX_LENGTH + 1] if isinstance(value, str) else ""


# -- log in and out ----------------------------------------------------------------------------
async def login(request: web.Request) -> web.Response:
    values: dict[str, str] = {"email": ""}
    errors: dict[str, str] = {}
    nxt = local_path(request.query.get("next"))
    if not nxt.startswith("/console"):
        nxt = "/console"
    if request.method == "POST":
        ok, retry = await request.app[LOGIN_LIMITER].allow(client_address(request))
        if not ok:
            return console_error(request, 429, N_("Too many attempts from your network. Please wait {n} seconds and"
                                                  " try again."), n=max(1, int(retry + 0.999)))
        form = await request.post()
        values["email"] = _text(form, "email")
        password = _secret(form, "password")
        hq = hq_of(request)
        email = values["email"].lower()
        row = await hq.db.read(lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone())
        if "h" not in _DUMMY:
            _DUMMY["h"] = await asyncio.to_thread(_hash, request, "dummy-password-for-timing")
        ok = await asyncio.to_thread(verify_password, password, row["password_hash"] if row else _DUMMY["h"])
        if row is None or not ok or row["disabled"]:
            errors["email"] = N_("Wrong e-mail address or password.")
        else:
            now = hq.now()
            expires = now + hq.settings.session_ttl_s

            def start(c: sqlite3.Connection) -> str:
                token, _ = create_session(c, row["id"], "cookie", expires, now)
                audit.record(c, None, row["org_id"], "session.login", row["email"], "", now, actor_email=row["email"])
                return token
            token = await hq.db.write(start)
            response = redirect(nxt)
            response.set_cookie(COOKIE_NAME, token, max_age=hq.settings.session_ttl_s, **cookie_args(request))
            return response
    if request.method == "GET" and await current(request) is not None:
        return redirect(nxt)
    return crender(request, "console/login.html", status=400 if errors else 200, values=values, errors=errors,
                   action="/console/login?next=" + quote(nxt))


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(COOKIE_NAME)
    if token:
        hq = hq_of(request)
        await hq.db.write(lambda c: c.execute("DELETE FROM sessions WHERE token_hash = ?", (token_digest(token),)))
    response = redirect("/console/login")
    response.del_cookie(COOKIE_NAME, path="/")
    return response


# -- home ----------------------------------------------------------------------------------------
@page()
async def home(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        if p.role == "super_admin":
            rows = c.execute("SELECT b.*, o.name AS org_name FROM branches b JOIN orgs o ON o.id = b.org_id"
                             " ORDER BY o.name, b.name").fetchall()
        elif p.role == "org_admin":
            rows = c.execute("SELECT b.*, o.name AS org_name FROM branches b JOIN orgs o ON o.id = b.org_id"
                             " WHERE b.org_id = ? ORDER BY b.name", (p.org_id,)).fetchall()
        else:
            rows = c.execute("SELECT b.*, o.name AS org_name FROM branches b JOIN orgs o ON o.id = b.org_id"
                             " WHERE b.id = ?", (p.branch_id,)).fetchall()
        org = c.execute("SELECT name FROM orgs WHERE id = ?", (p.org_id,)).fetchone() if p.org_id else None
        return {"branches": [dict(r) for r in rows], "org_name": org[0] if org else ""}
    return crender(request, "console/home.html", **await hq.db.read(load))


# -- accounts -----------------------------------------------------------------------------------
def may_manage(p: Principal, user: sqlite3.Row | dict[str, Any]) -> bool:
    if p.role == "super_admin":
        return True
    return p.role == "org_admin" and user["org_id"] == p.org_id and user["role"] != "super_admin"


def assignable_roles(p: Principal) -> tuple[str, ...]:
    return ROLES if p.role == "super_admin" else ("org_admin", "branch_manager", "staff")


def _places(c: sqlite3.Connection, p: Principal) -> dict[str, list[tuple[str, str]]]:
    """The organizations and branches ``p`` may put an account in, as (id, label)."""
    if p.role == "super_admin":
        orgs = c.execute("SELECT id, name FROM orgs ORDER BY name").fetchall()
        branches = c.execute("SELECT b.id, o.name || ' – ' || b.name FROM branches b JOIN orgs o ON o.id = b.org_id"
                             " ORDER BY o.name, b.name").fetchall()
    else:
        orgs = c.execute("SELECT id, name FROM orgs WHERE id = ?", (p.org_id,)).fetchall()
        branches = c.execute("SELECT id, name FROM branches WHERE org_id = ? ORDER BY name", (p.org_id,)).fetchall()
    return {"orgs": [(r[0], r[1]) for r in orgs], "branches": [(r[0], r[1]) for r in branches]}


def _user(c: sqlite3.Connection, p: Principal, user_id: str) -> sqlite3.Row:
    """The account ``user_id`` if ``p`` may manage it; else the 403 page (whether it exists or not)."""
    row = c.execute("SELECT * FROM users WHERE id = ?", (int(user_id),)).fetchone() if user_id.isdigit() and \
        len(user_id) < 12 else None
    if row is None and p.role == "super_admin":
        raise PageError(404, N_("This page does not exist."))
    if row is None or not may_manage(p, row):
        raise PageError(403, N_("This account belongs to another organization, or your role may not manage it."))
    return row


def _check_account(c: sqlite3.Connection, p: Principal, form: Any, *, self_edit: bool,
                   current: sqlite3.Row | None) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """Validate the account form; returns (values, errors, columns to write)."""
    values = {k: _text(form, k, 254 if k == "email" else 120) for k in ("email", "name", "role", "org", "branch")}
    errors: dict[str, str] = {}
    try:
        email = booking.normalize_email(values["email"])
    except ApiError:
        errors["email"] = N_("Enter a valid e-mail address, like name@example.org.")
        email = ""
    if email and c.execute("SELECT 1 FROM users WHERE email = ? AND id != ?",
                           (email, current["id"] if current else 0)).fetchone():
        errors["email"] = N_("Another account has this e-mail address.")
    cols: dict[str, Any] = {"email": email, "name": values["name"]}
    if self_edit:  # nobody changes their own role or place (no self-promotion, no lock-out)
        return values, errors, cols
    places = _places(c, p)
    role = values["role"]
    org_id = branch_id = None
    if role not in assignable_roles(p):
        errors["role"] = N_("Choose a role.")
    elif role == "org_admin":
        if values["org"] not in {o for o, _ in places["orgs"]}:
            errors["org"] = N_("Choose the organization.")
        org_id = values["org"]
    elif role in ("branch_manager", "staff"):
        if values["branch"] not in {b for b, _ in places["branches"]}:
            errors["branch"] = N_("Choose the branch.")
        else:
            branch_id = values["branch"]
            org_id = c.execute("SELECT org_id FROM branches WHERE id = ?", (branch_id,)).fetchone()[0]
    cols.update(role=role, org_id=org_id, branch_id=branch_id)
    return values, errors, cols


def _describe(cols: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cols.items() if v is not None and k != "password_hash")


@page(ADMINS)
async def accounts(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    now = hq.now()

    def load(c: sqlite3.Connection) -> list[dict[str, Any]]:
        sql = ("SELECT u.*, (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at > ?) AS sessions,"
               " b.name AS branch_name, o.name AS org_name FROM users u LEFT JOIN branches b ON b.id = u.branch_id"
               " LEFT JOIN orgs o ON o.id = u.org_id")
        if p.role == "super_admin":
            rows = c.execute(sql + " ORDER BY u.email", (now,)).fetchall()
        else:
            rows = c.execute(sql + " WHERE u.org_id = ? AND u.role != 'super_admin' ORDER BY u.email",
                             (now, p.org_id)).fetchall()
        return [dict(r) for r in rows]
    return crender(request, "console/accounts.html", users=await hq.db.read(load), done=request.query.get("done", ""))


@page(ADMINS)
async def account_new(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    values = {"email": "", "name": "", "role": "staff", "org": p.org_id or "", "branch": p.branch_id or ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.post()
        password = _secret(form, "password")

        def check(c: sqlite3.Connection) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
            return _check_account(c, p, form, self_edit=False, current=None)
        values, errors, cols = await hq.db.read(check)
        why = passwords.problem(password, cols["email"])
        if why:
            errors["password"] = why
        if not errors:
            encoded = await asyncio.to_thread(_hash, request, password)
            now = hq.now()

            def insert(c: sqlite3.Connection) -> int | None:
                row = c.execute("INSERT INTO users (email, name, password_hash, role, org_id, branch_id, created_at)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email) DO NOTHING RETURNING id",
                                (cols["email"], cols["name"], encoded, cols["role"], cols["org_id"], cols["branch_id"], now)
                                ).fetchone()
                if row is None:
                    return None
                audit.record(c, p, cols["org_id"], "account.create", cols["email"], _describe(cols), now)
                return row[0]
            new_id = await hq.db.write(insert)
            if new_id is None:
                errors["email"] = N_("Another account has this e-mail address.")
            else:
                return redirect(f"/console/accounts/{new_id}?done=created")
    places = await hq.db.read(lambda c: _places(c, p))
    return crender(request, "console/account_new.html", status=400 if errors else 200, values=values, errors=errors,
                   roles=assignable_roles(p), **places)


@page(ADMINS)
async def account(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    uid = request.match_info["id"]
    user = await hq.db.read(lambda c: _user(c, p, uid))
    self_edit = user["id"] == p.user_id
    values = {"email": user["email"], "name": user["name"], "role": user["role"], "org": user["org_id"] or "",
              "branch": user["branch_id"] or ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.post()
        now = hq.now()

        def update(c: sqlite3.Connection) -> tuple[dict[str, str], dict[str, str]]:
            row = _user(c, p, uid)
            vals, errs, cols = _check_account(c, p, form, self_edit=self_edit, current=row)
            if not errs:
                sets = ", ".join(f"{k} = ?" for k in cols)
                c.execute(f"UPDATE users SET {sets} WHERE id = ?", (*cols.values(), row["id"]))
                if not self_edit and (cols["role"], cols["org_id"], cols["branch_id"]) != \
                        (row["role"], row["org_id"], row["branch_id"]):
                    c.execute("DELETE FROM sessions WHERE user_id = ?", (row["id"],))  # new rights: log in again
                audit.record(c, p, cols.get("org_id", row["org_id"]), "account.update", row["email"], _describe(cols), now)
            return vals, errs
        values, errors = await hq.db.write(update)
        if not errors:
            return redirect(f"/console/accounts/{uid}?done=saved")
    return await _account_page(request, p, user, values, errors)


async def _account_page(request: web.Request, p: Principal, user: sqlite3.Row, values: dict[str, str],
                        errors: dict[str, str], status: int | None = None) -> web.Response:
    hq = hq_of(request)
    now = hq.now()

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        n = c.execute("SELECT COUNT(*) FROM sessions WHERE user_id = ? AND expires_at > ?", (user["id"], now)).fetchone()[0]
        return {"sessions": n, **_places(c, p)}
    return crender(request, "console/account.html", status=status or (400 if errors else 200), user=dict(user),
                   values=values, errors=errors, roles=assignable_roles(p), self_edit=user["id"] == p.user_id,
                   done=request.query.get("done", ""), **await hq.db.read(load))


@page(ADMINS)
async def account_action(request: web.Request, p: Principal) -> web.Response:
    """POST /console/accounts/{id}/{action}: password, disable, enable, sessions, delete."""
    hq = hq_of(request)
    uid, action = request.match_info["id"], request.match_info["action"]
    user = await hq.db.read(lambda c: _user(c, p, uid))
    form = await request.post()
    now = hq.now()
    if user["id"] == p.user_id and action in ("disable", "delete"):
        raise PageError(409, N_("You cannot disable or delete your own account."))
    if action == "password":
        password = _secret(form, "password")
        why = passwords.problem(password, user["email"])
        if why:
            values = {"email": user["email"], "name": user["name"], "role": user["role"],
                      "org": user["org_id"] or "", "branch": user["branch_id"] or ""}
            return await _account_page(request, p, user, values, {"password": why})
        encoded = await asyncio.to_thread(_hash, request, password)

        def reset(c: sqlite3.Connection) -> None:
            c.execute("UPDATE users SET password_hash = ? WHERE id = ?", (encoded, user["id"]))
            if user["id"] != p.user_id:
                c.execute("DELETE FROM sessions WHERE user_id = ?", (user["id"],))
            audit.record(c, p, user["org_id"], "account.password_reset", user["email"], "", now)
        await hq.db.write(reset)
        return redirect(f"/console/accounts/{uid}?done=password")
    if action in ("disable", "enable"):
        def toggle(c: sqlite3.Connection) -> None:
            c.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(action == "disable"), user["id"]))
            if action == "disable":
                c.execute("DELETE FROM sessions WHERE user_id = ?", (user["id"],))
            audit.record(c, p, user["org_id"], f"account.{action}", user["email"], "", now)
        await hq.db.write(toggle)
        return redirect(f"/console/accounts/{uid}?done={action}d")
    if action == "sessions":
        token = token_digest(request.cookies.get(COOKIE_NAME, ""))

        def end(c: sqlite3.Connection) -> None:
            n = c.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash != ?", (user["id"], token)).rowcount
            audit.record(c, p, user["org_id"], "account.sessions_end", user["email"], f"{n}", now)
        await hq.db.write(end)
        return redirect(f"/console/accounts/{uid}?done=sessions")
    if action == "delete":
        if form.get("confirm") != "yes":
            raise PageError(400, N_("Tick the box to confirm that the account is to be deleted."))

        def delete(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM sessions WHERE user_id = ?", (user["id"],))
            c.execute("DELETE FROM users WHERE id = ?", (user["id"],))
            audit.record(c, p, user["org_id"], "account.delete", user["email"], "", now)
        await hq.db.write(delete)
        return redirect("/console/accounts?done=deleted")
    raise PageError(404, N_("This page does not exist."))


# -- my password ---------------------------------------------------------------------------------
@page()
async def my_password(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.post()
        old, new, again = _secret(form, "current"), _secret(form, "password"), _secret(form, "confirm")
        row = await hq.db.read(lambda c: c.execute("SELECT * FROM users WHERE id = ?", (p.user_id,)).fetchone())
        if not await asyncio.to_thread(verify_password, old, row["password_hash"]):
            errors["current"] = N_("This is not your current password.")
        why = passwords.problem(new, p.email)
        if why:
            errors["password"] = why
        elif new != again:
            errors["confirm"] = N_("The two new passwords are not the same.")
        elif new == old:
            errors["password"] = N_("Choose a password different from the current one.")
        if not errors:
            encoded = await asyncio.to_thread(_hash, request, new)
            now = hq.now()
            token = token_digest(request.cookies.get(COOKIE_NAME, ""))

            def change(c: sqlite3.Connection) -> None:
                c.execute("UPDATE users SET password_hash = ? WHERE id = ?", (encoded, p.user_id))
                # Every other session and API token of mine ends: a stolen one stops working.
                c.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash != ?", (p.user_id, token))
                audit.record(c, p, p.org_id, "password.change", p.email, "", now)
            await hq.db.write(change)
            return redirect("/console/password?done=1")
    return crender(request, "console/password.html", status=400 if errors else 200, errors=errors,
                   done=request.query.get("done") == "1")


# -- audit log -----------------------------------------------------------------------------------
@page(ADMINS)
async def audit_log(request: web.Request, p: Principal) -> web.Response:
    raw = request.query.get("before", "")
    before = int(raw) if raw.isdigit() and len(raw) < 15 else None
    org = None if p.role == "super_admin" else p.org_id
    rows = await hq_of(request).db.read(lambda c: audit.entries(c, org, before, AUDIT_PAGE + 1))
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    return crender(request, "console/audit.html", entries=rows, older=rows[-1]["id"] if more and rows else None)


def add_routes(app: web.Application) -> None:
    r = app.router
    for path, handler in (("/console/login", login), ("/console/accounts/new", account_new),
                          ("/console/accounts/{id}", account), ("/console/password", my_password)):
        r.add_get(path, handler)
        r.add_post(path, handler)
    r.add_post("/console/logout", logout)
    r.add_get("/console", home)
    r.add_get("/console/accounts", accounts)
    r.add_post("/console/accounts/{id}/{action}", account_action)
    r.add_get("/console/audit", audit_log)


def setup_console(app: web.Application) -> None:
    from hq.console import analytics, appointments, branches, calendar, catalogue, fleet, live, orgs, reassign, staffing
    add_routes(app)
    catalogue.add_routes(app)
    analytics.add_routes(app)
    reassign.add_routes(app)
    orgs.add_routes(app)
    appointments.add_routes(app)
    branches.add_routes(app)
    live.add_routes(app)
    staffing.add_routes(app)
    calendar.add_routes(app)
    fleet.add_routes(app)
