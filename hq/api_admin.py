"""Admin API handlers: accounts, organizations, branches and their configuration, analytics.

Every handler resolves the target's tenant first and calls hq.auth.check_org/check_branch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hq import analytics, engine, live, outbox, tenants
from hq.console import audit
from hq.db import IntegrityError
from hq.auth import COOKIE_NAME, ROLES, Principal, check_branch, check_org, create_session, hash_password, \
    token_digest, verify_password
from hq.booking import iso_local
from hq.errors import ApiError, bad_request, check_id, check_obj, check_str, conflict, forbidden, not_found
from hq.web import LOGIN_LIMITER, authed, hq_of, jresp, rate_limited, read_json

# A hash to verify against when the e-mail is unknown, so timing does not reveal accounts.
_DUMMY_HASH: dict[str, str] = {}


def _hash(request: web.Request, password: str) -> str:
    s = hq_of(request).settings
    return hash_password(password, memory_kib=s.argon2_memory_kib, iterations=s.argon2_iterations, lanes=s.argon2_lanes)


async def _check_credentials(request: web.Request, body: Any) -> sqlite3.Row:
    body = check_obj(body)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or len(password) > 1024:
        raise bad_request("email and password are required")
    hq = hq_of(request)
    row = await hq.db.read(lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email.strip().lower(),)).fetchone())
    if "h" not in _DUMMY_HASH:
        _DUMMY_HASH["h"] = await asyncio.to_thread(_hash, request, "dummy-password")
    encoded = row["password_hash"] if row is not None else _DUMMY_HASH["h"]
    ok = await asyncio.to_thread(verify_password, password, encoded)
    if row is None or not ok or row["disabled"]:  # a disabled account cannot log in (docs/console.md)
        raise ApiError(401, "bad_credentials", "wrong e-mail or password")
    return row


@rate_limited(LOGIN_LIMITER)
async def login(request: web.Request) -> web.Response:
    """Web login: a secure session cookie plus the CSRF token the page sends back on writes."""
    user = await _check_credentials(request, await read_json(request))
    hq = hq_of(request)
    expires = hq.now() + hq.settings.session_ttl_s
    token, csrf = await hq.db.write(lambda c: create_session(c, user["id"], "cookie", expires, hq.now()))
    resp = jresp({"user": _user_json(user), "csrf_token": csrf, "expires_at": expires})
    resp.set_cookie(COOKIE_NAME, token, max_age=hq.settings.session_ttl_s, httponly=True,
                    secure=hq.settings.cookie_secure, samesite=hq.settings.cookie_samesite, path="/")
    return resp


@rate_limited(LOGIN_LIMITER)
async def issue_token(request: web.Request) -> web.Response:
    """API login: a bearer token (no cookie, no CSRF needed)."""
    user = await _check_credentials(request, await read_json(request))
    hq = hq_of(request)
    expires = hq.now() + hq.settings.api_token_ttl_s
    token, _ = await hq.db.write(lambda c: create_session(c, user["id"], "bearer", expires, hq.now()))
    return jresp({"token": token, "expires_at": expires, "user": _user_json(user)}, 201)


@authed
async def logout(request: web.Request, p: Principal) -> web.Response:
    token = request.cookies.get(COOKIE_NAME) if p.via == "cookie" else request.headers["Authorization"].split(" ", 1)[1].strip()
    await hq_of(request).db.write(lambda c: c.execute("DELETE FROM sessions WHERE token_hash = ?", (token_digest(token or ""),)))
    resp = web.Response(status=204)
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


@authed
async def me(request: web.Request, p: Principal) -> web.Response:
    return jresp({"user": p.as_json(), "csrf_token": p.csrf or None})


def _user_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "email": row["email"], "name": row["name"], "role": row["role"],
            "org": row["org_id"], "branch": row["branch_id"]}


# -- users ---------------------------------------------------------------------------------
@authed
async def list_users(request: web.Request, p: Principal) -> web.Response:
    if p.role not in ("super_admin", "org_admin"):
        raise forbidden("only admins list accounts")
    sql, args = "SELECT * FROM users", ()
    if p.role == "org_admin":
        sql, args = "SELECT * FROM users WHERE org_id = ?", (p.org_id,)
    rows = await hq_of(request).db.read(lambda c: c.execute(sql + " ORDER BY id", args).fetchall())
    return jresp({"users": [_user_json(r) for r in rows]})


@authed
async def create_user(request: web.Request, p: Principal) -> web.Response:
    body = check_obj(await read_json(request))
    email = check_str(body.get("email"), "email", max_len=254).lower()
    if "@" not in email:
        raise bad_request("email is not an e-mail address")
    password = check_str(body.get("password"), "password", max_len=1024)
    if len(password) < 10:
        raise bad_request("password must have at least 10 characters")
    role = body.get("role")
    if role not in ROLES:
        raise bad_request(f"role must be one of {', '.join(ROLES)}")
    name = check_str(body.get("name", ""), "name", required=False, max_len=120)
    org_id = body.get("org")
    branch_id = body.get("branch")
    hq = hq_of(request)
    if role == "super_admin":
        if p.role != "super_admin":
            raise forbidden("only a super admin creates super admins")
        org_id = branch_id = None
    else:
        if role in ("branch_manager", "staff"):
            branch = await hq.db.read(lambda c: tenants.get_branch(c, check_id(branch_id, "branch")))
            org_id = branch["org_id"]
        else:
            branch_id = None
            await hq.db.read(lambda c: tenants.get_org(c, check_id(org_id, "org")))
        check_org(p, org_id, "admin")
    encoded = await asyncio.to_thread(_hash, request, password)

    def insert(c: sqlite3.Connection) -> sqlite3.Row:
        try:
            new_id = c.execute("INSERT INTO users (email, name, password_hash, role, org_id, branch_id, created_at)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                               (email, name, encoded, role, org_id, branch_id, hq.now())).fetchone()[0]
        except IntegrityError as err:
            raise conflict("an account with this e-mail exists") from err
        return c.execute("SELECT * FROM users WHERE id = ?", (new_id,)).fetchone()

    return jresp(_user_json(await hq.db.write(insert)), 201)


# -- organizations -------------------------------------------------------------------------
@authed
async def list_orgs(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    if p.role == "super_admin":
        rows = await hq.db.read(lambda c: c.execute("SELECT * FROM orgs ORDER BY id").fetchall())
    else:
        rows = await hq.db.read(lambda c: c.execute("SELECT * FROM orgs WHERE id = ?", (p.org_id,)).fetchall())
    return jresp({"orgs": [tenants.org_json(r) for r in rows]})


@authed
async def create_org(request: web.Request, p: Principal) -> web.Response:
    if p.role != "super_admin":
        raise forbidden("only a super admin creates organizations")
    body = await read_json(request)
    hq = hq_of(request)
    data = await hq.db.write(lambda c: tenants.Writer(c, hq.key, hq.now_ms()).create_org(body))
    return jresp(data, 201)


@authed
async def get_org(request: web.Request, p: Principal) -> web.Response:
    org_id = request.match_info["org"]
    check_org(p, org_id, "read")
    row = await hq_of(request).db.read(lambda c: tenants.get_org(c, org_id))
    return jresp(tenants.org_json(row))


@authed
async def list_branches(request: web.Request, p: Principal) -> web.Response:
    org_id = request.match_info["org"]
    check_org(p, org_id, "read")
    hq = hq_of(request)
    rows = await hq.db.read(lambda c: (tenants.get_org(c, org_id),
                                       c.execute("SELECT * FROM branches WHERE org_id = ? ORDER BY id", (org_id,)).fetchall())[1])
    if p.role in ("branch_manager", "staff"):
        rows = [r for r in rows if r["id"] == p.branch_id]
    return jresp({"branches": [tenants.branch_json(r) for r in rows]})


@authed
async def create_branch(request: web.Request, p: Principal) -> web.Response:
    org_id = request.match_info["org"]
    check_org(p, org_id, "admin")
    body = await read_json(request)
    hq = hq_of(request)
    data = await hq.db.write(lambda c: tenants.Writer(c, hq.key, hq.now_ms()).create_branch(org_id, body))
    return jresp(data, 201)


# -- branch-scoped -------------------------------------------------------------------------
async def _branch(request: web.Request, p: Principal, level: str) -> sqlite3.Row:
    branch_id = request.match_info["branch"]
    row = await hq_of(request).db.read(lambda c: c.execute("SELECT * FROM branches WHERE id = ?", (branch_id,)).fetchone())
    if row is None:
        raise not_found("branch")
    check_branch(p, row["org_id"], branch_id, level)  # type: ignore[arg-type]
    return row


def _writer(request: web.Request, c: sqlite3.Connection, p: Principal | None = None, b: sqlite3.Row | None = None,
            action: str = "", target: str = "") -> tenants.Writer:
    """The config writer of this request; with ``p`` and ``b`` the change also goes into the audit
    log (the console's /console/audit), in the same transaction, so a refused change leaves none."""
    hq = hq_of(request)
    if p is not None and b is not None:
        audit.record(c, p, b["org_id"], action, f"{b['id']}/{target}" if target else b["id"], "API", hq.now())
    return tenants.Writer(c, hq.key, hq.now_ms())


@authed
async def get_branch(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        return tenants.branch_json(b) | {"services": tenants.list_services(c, b["id"], withdrawn=True),
                                         "counters": tenants.list_counters(c, b["id"]),
                                         "hours": tenants.hours_json(c, b["id"])}
    return jresp(await hq_of(request).db.read(load))


@authed
async def update_branch(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "admin")
    body = await read_json(request)
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "branch.update").update_branch(b["id"], body)))


@authed
async def list_services(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    return jresp({"services": await hq_of(request).db.read(lambda c: tenants.list_services(c, b["id"], withdrawn=True))})


@authed
async def put_service(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "manage")
    body, sid = await read_json(request), request.match_info["service"]
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "service.put", sid).put_service(b["id"], sid, body)))


@authed
async def list_counters(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    return jresp({"counters": await hq_of(request).db.read(lambda c: tenants.list_counters(c, b["id"]))})


@authed
async def put_counter(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "manage")
    body, cid = await read_json(request), request.match_info["counter"]
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "counter.put", cid).put_counter(b["id"], cid, body)))


@authed
async def get_hours(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    return jresp(await hq_of(request).db.read(lambda c: tenants.hours_json(c, b["id"])))


@authed
async def put_hours(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "manage")
    body = await read_json(request)
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "branch.hours").put_hours(b["id"], body)))


@authed
async def add_closed_day(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "manage")
    body = await read_json(request)
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "branch.closed_day").add_closed_day(b["id"], body)), 201)


@authed
async def remove_closed_day(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "manage")
    day = request.match_info["day"]
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "branch.closed_day", day).remove_closed_day(b["id"], day)))


@authed
async def list_devices(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    rows = await hq_of(request).db.read(
        lambda c: c.execute("SELECT * FROM devices WHERE branch_id = ? ORDER BY id", (b["id"],)).fetchall())
    return jresp({"devices": [tenants.device_json(r) for r in rows]})


@authed
async def add_device(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "admin")
    body = await read_json(request)
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "device.add").add_device(b["id"], body)), 201)


@authed
async def list_staff(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    rows = await hq_of(request).db.read(
        lambda c: c.execute("SELECT * FROM staff WHERE branch_id = ? ORDER BY id", (b["id"],)).fetchall())
    return jresp({"staff": [tenants.staff_json(r) for r in rows]})


@authed
async def put_staff(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "admin")
    staff_id = check_id(request.match_info["staff"], "staff id")
    body = check_obj(await read_json(request))
    name = check_str(body.get("name"), "name", max_len=120)
    pin = body.get("pin")
    pin_hash = ""
    if pin is not None:
        if not isinstance(pin, str) or not pin.isdigit() or not 4 <= len(pin) <= 12:
            raise bad_request("pin must be 4-12 digits")
        pin_hash = await asyncio.to_thread(_hash, request, pin)
    return jresp(await hq_of(request).db.write(lambda c: _writer(request, c, p, b, "branch.staff", staff_id).put_staff(b["id"], staff_id, name, pin_hash)))


@authed
async def list_outbox(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "admin")
    after = _int_query(request, "after", 0, 0, 2**62)
    limit = _int_query(request, "limit", 100, 1, 1000)
    await outbox.settle(hq_of(request).db, b["id"])
    events = await hq_of(request).db.read(lambda c: outbox.pending(c, b["id"], after, limit))
    return jresp({"events": events})


@authed
async def list_bookings(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    day = date.fromisoformat(tenants.check_day(request.query.get("date"), "date"))
    tz = ZoneInfo(b["timezone"])
    lo = int(datetime.combine(day, datetime.min.time(), tzinfo=tz).timestamp())
    hi = int(datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz).timestamp())
    rows = await hq_of(request).db.read(lambda c: c.execute(
        "SELECT * FROM bookings WHERE branch_id = ? AND slot_start >= ? AND slot_start < ? ORDER BY slot_start, id",
        (b["id"], lo, hi)).fetchall())
    return jresp({"bookings": [{"code": r["code"], "service": r["service_id"], "start": iso_local(r["slot_start"], b["timezone"]),
                                "end": iso_local(r["slot_end"], b["timezone"]), "status": r["status"], "name": r["name"],
                                "phone": r["phone"], "email": r["email"]} for r in rows]})


@authed
async def branch_live(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    hq = hq_of(request)
    day = datetime.fromtimestamp(hq.now(), ZoneInfo(b["timezone"])).strftime("%Y%m%d")
    return jresp(await hq.db.read(lambda c: live.branch_summary(c, b["id"], day, hq.settings.default_service_s)))


@authed
async def branch_link(request: web.Request, p: Principal) -> web.Response:
    """The branch link's status and HQ's state of the branch, folded by the branch's engine:
    its state hash equals every node's that holds the same events (`vv`)."""
    b = await _branch(request, p, "read")
    hq = hq_of(request)
    database = hq.settings.database_url

    def read(c: sqlite3.Connection) -> dict[str, Any]:
        heard = c.execute("SELECT heard_at FROM branch_contact WHERE branch_id = ?", (b["id"],)).fetchone()
        return {**engine.branch_state(c, b["id"], database=database), "heard_at": heard[0] if heard else None}
    await outbox.settle(hq.db, b["id"])
    return jresp(await hq.db.read(read))


@authed
async def branch_analytics(request: web.Request, p: Principal) -> web.Response:
    b = await _branch(request, p, "read")
    hq = hq_of(request)
    today = datetime.fromtimestamp(hq.now(), ZoneInfo(b["timezone"])).date().isoformat()
    day_from = tenants.check_day(request.query.get("from", today), "from")
    day_to = tenants.check_day(request.query.get("to", day_from), "to")
    if day_to < day_from:
        raise bad_request("'to' is before 'from'")
    if date.fromisoformat(day_to) - date.fromisoformat(day_from) > timedelta(days=366):
        raise bad_request("at most one year per request")
    service = request.query.get("service")
    if service is not None:
        check_id(service, "service")
    target = hq.settings.target_wait_s
    rows = await hq.db.read(lambda c: analytics.compute(c, b["id"], day_from, day_to, service, target))
    return jresp({"branch": b["id"], "from": day_from, "to": day_to, "rows": rows})


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise bad_request(f"{name} must be an integer") from err
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be from {lo} to {hi}")
    return value
