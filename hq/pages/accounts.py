"""Citizen accounts (optional for booking): register with e-mail or phone and a password
(Argon2id, as staff accounts), verified by a one-time code sent through the notification
gateway; log in and out; my bookings; change or reset the password; delete the account and its
personal data. Logins are throttled per address (rate limiter) and per account (a lock after
`citizen_max_failures` failures, shared by every HQ process since it lives in the database).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
from typing import Any

from aiohttp import web

from appliance import events as ev
from hq import booking, outbox, tenants
from hq.auth import hash_password, token_digest, verify_password
from hq.errors import ApiError
from hq.pages import data
from hq.pages.i18n import N_
from hq.pages.app import (CITIZEN, CITIZEN_COOKIE, LANG, PageError, citizen_session_cookie, cookie_args,
                          rate_check, redirect, render)
from hq.pages.i18n import translator
from hq.web import LOGIN_LIMITER, client_address, hq_of

PENDING_COOKIE = "smartq_pending"
MIN_PASSWORD = 10
DUMMY_HASH = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$9aEo0mF0m7yH3o1mTnX2bQ"


def parse_contact(value: str, region: str) -> tuple[str, str]:
    """("email", address) or ("phone", E.164); raises ApiError with code bad_email / bad_phone."""
    if "@" in value:
        return "email", booking.normalize_email(value)
    return "phone", booking.normalize_phone(value, region)


def _hash(settings: Any, password: str) -> str:
    return hash_password(password, memory_kib=settings.argon2_memory_kib, iterations=settings.argon2_iterations,
                         lanes=settings.argon2_lanes)


def _code_hash(citizen_id: int, purpose: str, code: str) -> str:
    return hashlib.sha256(f"{citizen_id}:{purpose}:{code}".encode()).hexdigest()


def _send_code(c: sqlite3.Connection, citizen: sqlite3.Row, purpose: str, now: int, ttl_s: int) -> None:
    """A fresh 6-digit code, stored hashed, sent in the citizen's language through the outbox."""
    code = f"{secrets.randbelow(10**6):06d}"
    c.execute("INSERT INTO citizen_codes (citizen_id, purpose, code_hash, expires_at, attempts) VALUES (?, ?, ?, ?, 0)"
              " ON CONFLICT (citizen_id, purpose) DO UPDATE SET code_hash = excluded.code_hash,"
              " expires_at = excluded.expires_at, attempts = 0",
              (citizen["id"], purpose, _code_hash(citizen["id"], purpose, code), now + ttl_s))
    t = translator(citizen["language"])
    subject = t("Your SmartQ code") if purpose == "verify" else t("Reset your SmartQ password")
    body = (t("Your SmartQ code is {code}. It is valid for {n} minutes.", code=code, n=ttl_s // 60) if purpose == "verify"
            else t("Your code to set a new SmartQ password is {code}. It is valid for {n} minutes. If you did not ask"
                   " for it, ignore this message.", code=code, n=ttl_s // 60))
    _notify(c, citizen, f"{purpose}:{citizen['id']}:{now}:{secrets.token_hex(4)}", purpose, subject, body, now)


def _notify(c: sqlite3.Connection, citizen: sqlite3.Row, key: str, kind: str, subject: str, body: str, now: int) -> None:
    channel, recipient = ("email", citizen["email"]) if citizen["email"] else ("sms", citizen["phone"])
    c.execute("INSERT INTO notifications (idem_key, kind, channel, recipient, subject, body, next_attempt_at,"
              " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING", (f"{key}:{channel}", kind, channel, recipient, subject,
                                                               body, now, now))


def _check_code(c: sqlite3.Connection, citizen_id: int, purpose: str, code: str, now: int, max_attempts: int) -> bool:
    row = c.execute("SELECT * FROM citizen_codes WHERE citizen_id = ? AND purpose = ?", (citizen_id, purpose)).fetchone()
    if row is None or row["expires_at"] < now or row["attempts"] >= max_attempts:
        return False
    if hmac.compare_digest(row["code_hash"], _code_hash(citizen_id, purpose, code.strip())):
        c.execute("DELETE FROM citizen_codes WHERE citizen_id = ? AND purpose = ?", (citizen_id, purpose))
        return True
    c.execute("UPDATE citizen_codes SET attempts = attempts + 1 WHERE citizen_id = ? AND purpose = ?", (citizen_id, purpose))
    return False


def _new_session(c: sqlite3.Connection, citizen_id: int, expires_at: int) -> str:
    token = secrets.token_urlsafe(32)
    c.execute("INSERT INTO citizen_sessions (token_hash, citizen_id, expires_at) VALUES (?, ?, ?)",
              (token_digest(token), citizen_id, expires_at))
    return token


def _form_values(form: Any, *names: str) -> dict[str, str]:
    return {n: str(form.get(n, "")).strip()[:254] if n != "password" and not n.endswith("password")
            else str(form.get(n, ""))[:1024] for n in names}


def _logged_in(request: web.Request) -> dict[str, Any]:
    citizen = request[CITIZEN]
    if citizen is None:
        raise PageError(403, "Please log in first.")
    return citizen


# -- register and verify ---------------------------------------------------------------------
async def register(request: web.Request) -> web.Response:
    values, errors = {"contact": "", "password": ""}, {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        values = _form_values(await request.post(), "contact", "password")
        try:
            kind, contact = parse_contact(values["contact"], hq.settings.default_phone_region)
        except ApiError:
            errors["contact"] = N_("Enter an e-mail address, or a phone number with its country code.")
        if len(values["password"]) < MIN_PASSWORD:
            errors["password"] = N_("Choose a password of at least {n} characters.")
        if not errors:
            encoded = await asyncio.to_thread(_hash, hq.settings, values["password"])
            now, lang, ttl = hq.now(), request[LANG], hq.settings.citizen_code_ttl_s

            def write(c: sqlite3.Connection) -> None:
                row = c.execute(f"SELECT * FROM citizens WHERE {kind} = ?", (contact,)).fetchone()
                if row is not None and row["verified"]:
                    # Say nothing on the page (no way to probe who has an account); tell the owner.
                    t = translator(row["language"])
                    _notify(c, row, f"exists:{row['id']}:{now}", "account_exists", t("Your SmartQ account"),
                            t("Someone tried to register with this address, which already has an account. If it was"
                              " you, log in or reset your password."), now)
                    return
                if row is None:
                    cid = c.execute(f"INSERT INTO citizens ({kind}, password_hash, language, created_at)"
                                    " VALUES (?, ?, ?, ?) RETURNING id", (contact, encoded, lang, now)).fetchone()[0]
                else:
                    cid = row["id"]
                    c.execute("UPDATE citizens SET password_hash = ?, language = ? WHERE id = ?", (encoded, lang, cid))
                _send_code(c, c.execute("SELECT * FROM citizens WHERE id = ?", (cid,)).fetchone(), "verify", now, ttl)
            await hq.db.write(write)
            hq.wake_notifier()
            response = redirect("/account/verify")
            response.set_cookie(PENDING_COOKIE, contact, max_age=ttl, **cookie_args(request))
            return response
    return render(request, "account_register.html", status=400 if errors else 200, values={"contact": values["contact"]},
                  errors=errors, min_password=MIN_PASSWORD)


async def verify(request: web.Request) -> web.Response:
    values = {"contact": request.cookies.get(PENDING_COOKIE, "")[:254], "code": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        values = _form_values(await request.post(), "contact", "code")
        now, s = hq.now(), hq.settings

        def write(c: sqlite3.Connection) -> str | None:
            try:
                kind, contact = parse_contact(values["contact"], s.default_phone_region)
            except ApiError:
                return None
            row = c.execute(f"SELECT * FROM citizens WHERE {kind} = ? AND verified = 0", (contact,)).fetchone()
            if row is None or not _check_code(c, row["id"], "verify", values["code"], now, s.citizen_max_failures):
                return None
            c.execute("UPDATE citizens SET verified = 1 WHERE id = ?", (row["id"],))
            return _new_session(c, row["id"], now + s.session_ttl_s)
        token = await hq.db.write(write)
        if token is None:
            errors["code"] = N_("This code is not right or has expired. Check it, or register again for a new one.")
        else:
            response = redirect("/account?welcome=1")
            citizen_session_cookie(request, response, token)
            response.del_cookie(PENDING_COOKIE, path="/")
            return response
    return render(request, "account_verify.html", status=400 if errors else 200, values=values, errors=errors,
                  ttl_minutes=hq_of(request).settings.citizen_code_ttl_s // 60)


# -- log in and out ---------------------------------------------------------------------------
async def login(request: web.Request) -> web.Response:
    values, errors = {"contact": ""}, {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        ok, retry = await request.app[LOGIN_LIMITER].allow(client_address(request))
        if not ok:
            raise PageError(429, "Too many attempts from your network. Please wait {n} seconds and try again.",
                            n=max(1, int(retry + 0.999)))
        form = _form_values(await request.post(), "contact", "password")
        values = {"contact": form["contact"]}
        now, s = hq.now(), hq.settings
        try:
            kind, contact = parse_contact(form["contact"], s.default_phone_region)
        except ApiError:
            kind, contact = "email", ""
        row = await hq.db.read(lambda c: c.execute(f"SELECT * FROM citizens WHERE {kind} = ? AND verified = 1",
                                                   (contact,)).fetchone()) if contact else None
        if row is not None and row["locked_until"] > now:
            errors["contact"] = N_("Too many failed attempts. Try again in {minutes} minutes, or reset your password.")
            minutes = max(1, (row["locked_until"] - now + 59) // 60)
            return render(request, "account_login.html", status=429, values=values, errors=errors, minutes=minutes)
        good = await asyncio.to_thread(verify_password, form["password"], row["password_hash"] if row else DUMMY_HASH)
        if row is not None and good:
            token = await hq.db.write(lambda c: (c.execute("UPDATE citizens SET failed_logins = 0 WHERE id = ?", (row["id"],)),
                                                 _new_session(c, row["id"], now + s.session_ttl_s))[1])
            response = redirect("/account")
            citizen_session_cookie(request, response, token)
            return response
        if row is not None:
            def fail(c: sqlite3.Connection) -> None:
                c.execute("UPDATE citizens SET failed_logins = failed_logins + 1 WHERE id = ?", (row["id"],))
                c.execute("UPDATE citizens SET locked_until = ?, failed_logins = 0 WHERE id = ? AND failed_logins >= ?",
                          (now + s.citizen_lockout_s, row["id"], s.citizen_max_failures))
            await hq.db.write(fail)
        errors["contact"] = N_("The e-mail or phone and password do not match an account.")
    return render(request, "account_login.html", status=400 if errors else 200, values=values, errors=errors, minutes=0)


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(CITIZEN_COOKIE)
    if token:
        await hq_of(request).db.write(lambda c: c.execute("DELETE FROM citizen_sessions WHERE token_hash = ?",
                                                          (token_digest(token),)))
    response = redirect("/")
    citizen_session_cookie(request, response, None)
    return response


# -- my bookings ------------------------------------------------------------------------------
def my_bookings(c: sqlite3.Connection, citizen_id: int, now: int, lang: str) -> list[dict[str, Any]]:
    out = []
    for b in c.execute("SELECT * FROM bookings WHERE citizen_id = ? ORDER BY slot_start DESC LIMIT 100", (citizen_id,)):
        branch = tenants.get_branch(c, b["branch_id"])
        svc = c.execute("SELECT names FROM services WHERE branch_id = ? AND id = ?", (b["branch_id"], b["service_id"])).fetchone()
        tk = c.execute("SELECT issued_ms, no_show_ms, completed_ms, status_token FROM tickets WHERE branch_id = ?"
                      " AND booking_code = ? ORDER BY issued_ms DESC LIMIT 1", (b["branch_id"], b["code"])).fetchone()
        if b["status"] == "cancelled":
            state = "cancelled"
        elif tk is not None and tk["no_show_ms"]:
            state = "no_show"
        elif tk is not None:
            state = "checked_in"
        elif b["slot_end"] > now:
            state = "upcoming"
        else:
            state = "past"
        out.append({"code": b["code"], "branch": branch["name"], "timezone": branch["timezone"], "start": b["slot_start"],
                    "service": data.service_name(svc[0], lang) if svc else b["service_id"], "state": state,
                    "status_token": tk["status_token"] if tk is not None else None})
    return out


async def account(request: web.Request) -> web.Response:
    citizen = _logged_in(request)
    hq = hq_of(request)
    rows = await hq.db.read(lambda c: my_bookings(c, citizen["id"], hq.now(), request[LANG]))
    return render(request, "account.html", bookings=rows, welcome="welcome" in request.query,
                  done=request.query.get("done"))


async def change_password(request: web.Request) -> web.Response:
    citizen = _logged_in(request)
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        form = _form_values(await request.post(), "current_password", "new_password")
        if not await asyncio.to_thread(verify_password, form["current_password"], citizen["password_hash"]):
            errors["current_password"] = N_("Your current password is not right.")
        if len(form["new_password"]) < MIN_PASSWORD:
            errors["new_password"] = N_("Choose a password of at least {n} characters.")
        if not errors:
            encoded = await asyncio.to_thread(_hash, hq.settings, form["new_password"])
            token = request.cookies.get(CITIZEN_COOKIE, "")
            await hq.db.write(lambda c: (
                c.execute("UPDATE citizens SET password_hash = ? WHERE id = ?", (encoded, citizen["id"])),
                # every other session ends: a changed password locks out whoever else had it
                c.execute("DELETE FROM citizen_sessions WHERE citizen_id = ? AND token_hash != ?",
                          (citizen["id"], token_digest(token)))))
            return redirect("/account?done=password")
    return render(request, "account_password.html", status=400 if errors else 200, errors=errors, min_password=MIN_PASSWORD)


# -- forgotten password -------------------------------------------------------------------------
async def forgot(request: web.Request) -> web.Response:
    values, errors = {"contact": ""}, {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        values = _form_values(await request.post(), "contact")
        try:
            kind, contact = parse_contact(values["contact"], hq.settings.default_phone_region)
        except ApiError:
            errors["contact"] = N_("Enter an e-mail address, or a phone number with its country code.")
        if not errors:
            now, ttl = hq.now(), hq.settings.citizen_code_ttl_s

            def write(c: sqlite3.Connection) -> None:
                row = c.execute(f"SELECT * FROM citizens WHERE {kind} = ? AND verified = 1", (contact,)).fetchone()
                if row is not None:  # the page says the same either way
                    _send_code(c, row, "reset", now, ttl)
            await hq.db.write(write)
            hq.wake_notifier()
            response = redirect("/account/reset")
            response.set_cookie(PENDING_COOKIE, contact, max_age=ttl, **cookie_args(request))
            return response
    return render(request, "account_forgot.html", status=400 if errors else 200, values=values, errors=errors)


async def reset(request: web.Request) -> web.Response:
    values = {"contact": request.cookies.get(PENDING_COOKIE, "")[:254], "code": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        form = _form_values(await request.post(), "contact", "code", "new_password")
        values = {"contact": form["contact"], "code": form["code"]}
        if len(form["new_password"]) < MIN_PASSWORD:
            errors["new_password"] = N_("Choose a password of at least {n} characters.")
        else:
            encoded = await asyncio.to_thread(_hash, hq.settings, form["new_password"])
            now, s = hq.now(), hq.settings

            def write(c: sqlite3.Connection) -> bool:
                try:
                    kind, contact = parse_contact(form["contact"], s.default_phone_region)
                except ApiError:
                    return False
                row = c.execute(f"SELECT * FROM citizens WHERE {kind} = ? AND verified = 1", (contact,)).fetchone()
                if row is None or not _check_code(c, row["id"], "reset", form["code"], now, s.citizen_max_failures):
                    return False
                c.execute("UPDATE citizens SET password_hash = ?, failed_logins = 0, locked_until = 0 WHERE id = ?",
                          (encoded, row["id"]))
                c.execute("DELETE FROM citizen_sessions WHERE citizen_id = ?", (row["id"],))
                return True
            if await hq.db.write(write):
                response = redirect("/account/login?reset=1")
                response.del_cookie(PENDING_COOKIE, path="/")
                return response
            errors["code"] = N_("This code is not right or has expired. Check it, or ask for a new one.")
    return render(request, "account_reset.html", status=400 if errors else 200, values=values, errors=errors,
                  min_password=MIN_PASSWORD)


# -- delete the account -------------------------------------------------------------------------
def delete_citizen(c: sqlite3.Connection, citizen_id: int, key: Any, now: int) -> None:
    """Cancel upcoming bookings (the branch is told), erase the personal data of all of them and
    of their messages, and remove the account with its sessions and codes."""
    for b in c.execute("SELECT * FROM bookings WHERE citizen_id = ? AND status = 'booked' AND slot_start > ?",
                       (citizen_id, now)).fetchall():
        if c.execute("UPDATE bookings SET status = 'cancelled', updated_at = ? WHERE id = ? AND status = 'booked'",
                     (now, b["id"])).rowcount != 1:
            continue  # cancelled by a concurrent request
        booking.release_places(c, b["branch_id"], b["service_id"], b["slot_start"])
        outbox.emit(c, key, b["branch_id"], ev.BOOKING_CANCELLED, booking._event_payload(
            {**dict(b), "status": "cancelled"}), now * 1000)
    ids = [r[0] for r in c.execute("SELECT id FROM bookings WHERE citizen_id = ?", (citizen_id,))]
    for bid in ids:
        c.execute("UPDATE notifications SET recipient = NULL, body = '', subject = '' WHERE booking_id = ?", (bid,))
    c.execute("UPDATE bookings SET name = NULL, phone = NULL, email = NULL, purged_at = ?, citizen_id = NULL"
              " WHERE citizen_id = ?", (now, citizen_id))
    row = c.execute("SELECT email, phone FROM citizens WHERE id = ?", (citizen_id,)).fetchone()
    for contact in filter(None, (row["email"], row["phone"])):
        c.execute("UPDATE notifications SET recipient = NULL, body = '', subject = '' WHERE recipient = ?", (contact,))
    c.execute("DELETE FROM citizen_sessions WHERE citizen_id = ?", (citizen_id,))
    c.execute("DELETE FROM citizen_codes WHERE citizen_id = ?", (citizen_id,))
    c.execute("DELETE FROM citizens WHERE id = ?", (citizen_id,))


async def delete_account(request: web.Request) -> web.Response:
    citizen = _logged_in(request)
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        hq = hq_of(request)
        form = _form_values(await request.post(), "password")
        if not await asyncio.to_thread(verify_password, form["password"], citizen["password_hash"]):
            errors["password"] = N_("Your password is not right.")
        else:
            await hq.db.write(lambda c: delete_citizen(c, citizen["id"], hq.key, hq.now()))
            response = redirect("/?deleted=1")
            citizen_session_cookie(request, response, None)
            return response
    return render(request, "account_delete.html", status=400 if errors else 200, errors=errors)


def add_routes(r: web.UrlDispatcher) -> None:
    for path, handler in (("/account/register", register), ("/account/verify", verify), ("/account/login", login),
                          ("/account/password", change_password), ("/account/forgot", forgot),
                          ("/account/reset", reset), ("/account/delete", delete_account)):
        r.add_route("GET", path, handler)
        r.add_route("POST", path, handler)
    r.add_get("/account", account)
    r.add_post("/account/logout", logout)
