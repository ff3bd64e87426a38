"""Find an office, book (service -> date -> slot -> contact -> confirmation), manage a booking.

One question per page, plain forms, post-redirect-get. Booking writes go through hq.booking
(the single writer counts and inserts together, so the last place is taken once); a lost race
shows the nearest other free slots instead of an error page.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import get_day_names
from cryptography.hazmat.primitives import serialization

from hq import booking, tenants
from hq.booking import BookingContext
from hq.db import read_committed
from hq.errors import MAX_TS, ApiError, check_date
from hq.ics import booking_ics
from hq.pages import data
from hq.pages.i18n import N_
from hq.pages.app import CITIZEN, LANG, T, PageError, cookie_args, rate_check, redirect, render
from hq.pages.qr import qr_svg
from hq.web import HQ_KEY, hq_of
from sync.tokens import TokenError, verify_token

GRANT_COOKIE = "smartq_manage"
GRANT_TTL_S = 1800
CONTACT_ERRORS = {
    "bad_phone": ("phone", N_("Enter a phone number with its country code, like +250 788 123 456.")),
    "bad_email": ("email", N_("Enter an e-mail address like name@example.org.")),
    "contact_required": ("phone", N_("Give a phone number or an e-mail address, so you can change or cancel.")),
}


def _ctx(request: web.Request) -> BookingContext:
    hq = hq_of(request)
    s = hq.settings
    return BookingContext(key=hq.key, now=hq.now(), horizon_days=s.booking_horizon_days,
                          token_grace_s=s.booking_token_grace_s, phone_region=s.default_phone_region, rng=hq.rng)


async def read(request: web.Request, fn: Any) -> Any:
    try:
        return await hq_of(request).db.read(fn)
    except ApiError as err:
        if err.status == 404:
            raise PageError(404, "This page does not exist.") from err
        raise


def _day(value: str | None) -> date:
    try:
        return check_date(value, "date")
    except ApiError as err:  # not a date, or out of range (years beyond 9998 cannot be handled)
        raise PageError(400, "Choose a date from the list.") from err


def _int(value: str | None) -> int:
    """A slot start (unix s) from a form: digits within the range HQ handles, else a form error."""
    if value is None or not value.isdigit() or len(value) > 12 or int(value) > MAX_TS:
        raise PageError(400, "Choose a time from the list.")
    return int(value)


# -- find an office --------------------------------------------------------------------------
async def home(request: web.Request) -> web.Response:
    return render(request, "offices.html", orgs=await read(request, data.offices))


async def branch_page(request: web.Request) -> web.Response:
    hq, lang = hq_of(request), request[LANG]
    b = await read(request, lambda c: data.branch_page(c, request.match_info["branch"], hq.now(), lang,
                                                          hq.settings.default_service_s))
    t = request[T]
    names = get_day_names("wide", locale=t.locale)
    hours = [[names[i].capitalize(), f"{b['week'][i][0]} – {b['week'][i][1]}" if i in b["week"] else t("Closed")]
             for i in range(7)]
    return render(request, "branch.html", b=b, hours=hours)


# -- book -------------------------------------------------------------------------------------
def _service_rows(c: sqlite3.Connection, branch_id: str, service_id: str | None) -> tuple[sqlite3.Row, sqlite3.Row]:
    branch = tenants.get_branch(c, branch_id)
    if not service_id:
        raise PageError(400, "Choose a service.")
    service = tenants.get_service(c, branch_id, service_id)
    if not service["bookable"]:
        raise PageError(409, "This service cannot be booked online.")
    return branch, service


async def book_service(request: web.Request) -> web.Response:
    branch_id, lang = request.match_info["branch"], request[LANG]

    def load(c: sqlite3.Connection) -> tuple[sqlite3.Row, list[dict[str, Any]]]:
        return tenants.get_branch(c, branch_id), [
            {"id": s["id"], "name": data.service_name(s["names"], lang)}
            for s in tenants.list_services(c, branch_id) if s["bookable"]]
    branch, services = await read(request, load)
    error = request.query.get("error") == "service"
    return render(request, "book_service.html", branch=branch, services=services,
                  errors={"service": N_("Choose a service.")} if error else {})


async def book_day(request: web.Request) -> web.Response:
    hq = hq_of(request)
    branch_id, service_id = request.match_info["branch"], request.query.get("service")
    if not service_id:
        return redirect(f"/b/{branch_id}/book?error=service")

    def load(c: sqlite3.Connection) -> Any:
        branch, service = _service_rows(c, branch_id, service_id)
        return branch, service, data.bookable_days(c, branch, service, hq.now(), hq.settings.booking_horizon_days)
    branch, service, days = await read(request, load)
    return render(request, "book_day.html", branch=branch, service_name=data.service_name(service["names"], request[LANG]),
                  days=days, action=f"/b/{branch_id}/book/slot", hidden={"service": service_id},
                  back=f"/b/{branch_id}/book", errors={"date": N_("Choose a date.")} if "error" in request.query else {})


async def book_slot(request: web.Request) -> web.Response:
    hq = hq_of(request)
    branch_id, service_id = request.match_info["branch"], request.query.get("service")
    if not request.query.get("date"):
        return redirect(f"/b/{branch_id}/book/day?service={service_id or ''}&error=date")
    day = _day(request.query.get("date"))

    def load(c: sqlite3.Connection) -> Any:
        branch, service = _service_rows(c, branch_id, service_id)
        return branch, service, data.slots_on(c, branch, service, day, hq.now(), hq.settings.booking_horizon_days)
    branch, service, slots = await read(request, load)
    return render(request, "book_slot.html", branch=branch, service_name=data.service_name(service["names"], request[LANG]),
                  day=day, slots=slots, action=f"/b/{branch_id}/book/contact", hidden={"service": service_id},
                  back=f"/b/{branch_id}/book/day?service={service_id}", lost=None,
                  errors={"start": N_("Choose a time.")} if "error" in request.query else {})


async def book_contact(request: web.Request) -> web.Response:
    branch_id = request.match_info["branch"]
    form = await request.post() if request.method == "POST" else request.query
    service_id = form.get("service")
    if not form.get("start"):
        return redirect(f"/b/{branch_id}/book/slot?service={service_id or ''}&date={form.get('date', '')}&error=start")
    start = _int(form.get("start"))  # type: ignore[arg-type]
    hq = hq_of(request)

    def load(c: sqlite3.Connection) -> Any:
        branch, service = _service_rows(c, branch_id, service_id)  # type: ignore[arg-type]
        now = hq.now()
        if not now < start <= now + (hq.settings.booking_horizon_days + 1) * 86400 or booking.slot_end(
                c, branch, service, datetime.fromtimestamp(start, ZoneInfo(branch["timezone"])).date(), start) is None:
            raise PageError(400, N_("Choose a time from the list."))
        return branch, service
    branch, service = await read(request, load)
    citizen = request[CITIZEN]
    values = {"name": "", "phone": (citizen or {}).get("phone") or "", "email": (citizen or {}).get("email") or ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        values = {k: str(form.get(k, "")).strip()[:254] for k in ("name", "phone", "email")}
        if not values["phone"] and not values["email"]:
            errors["phone"] = N_("Give a phone number or an e-mail address, so you can change or cancel.")
        if not errors:
            outcome = await _book(request, branch, service, start, values)
            if isinstance(outcome, web.Response):
                return outcome
            errors = outcome
    tz = branch["timezone"]
    return render(request, "book_contact.html", status=400 if errors else 200, branch=branch,
                  service_name=data.service_name(service["names"], request[LANG]), start=start,
                  when=request[T].datetime(start, tz, "full"), values=values, errors=errors,
                  hidden={"service": service_id, "start": str(start)},
                  back=f"/b/{branch_id}/book/slot?service={service_id}&date="
                       f"{data.local_today(branch, start) if start > hq.now() else ''}")


async def _book(request: web.Request, branch: sqlite3.Row, service: sqlite3.Row, start: int,
                values: dict[str, str]) -> web.Response | dict[str, str]:
    hq, ctx, lang = hq_of(request), _ctx(request), request[LANG]
    import json
    offered = json.loads(branch["languages"])
    body = {"branch": branch["id"], "service": service["id"], "start": booking.iso_utc(start),
            "name": values["name"] or None, "phone": values["phone"] or None, "email": values["email"] or None,
            "language": lang if lang in offered else offered[0]}
    body = {k: v for k, v in body.items() if v is not None}
    citizen = request[CITIZEN]

    def write(c: sqlite3.Connection) -> booking.Written:
        written = booking.book_row(c, ctx, body)
        if citizen is not None:
            c.execute("UPDATE bookings SET citizen_id = ? WHERE id = ?", (citizen["id"], written.row["id"]))
        return written
    try:
        written = await hq.db.write(read_committed(write))
    except ApiError as err:
        if err.code in CONTACT_ERRORS:
            field, message = CONTACT_ERRORS[err.code]
            return {field: message}
        if err.code in ("slot_full", "slot_past", "slot_unavailable"):
            return await _lost_race(request, branch, service, start)
        raise
    hq.booking_written("created")
    token = booking.render(written, ctx)["token"]
    return redirect(f"/c/{token}")


async def _lost_race(request: web.Request, branch: sqlite3.Row, service: sqlite3.Row, start: int) -> web.Response:
    """Someone took the last place first: say so and offer the nearest free slots (409)."""
    hq = hq_of(request)
    form = await request.post()
    nearest = await hq.db.read(lambda c: data.nearest_slots(c, branch, service, start, hq.now(),
                                                            hq.settings.booking_horizon_days))
    hidden = {"service": service["id"], **{k: str(form.get(k, "")) for k in ("name", "phone", "email")}}
    return render(request, "book_slot.html", status=409, branch=branch,
                  service_name=data.service_name(service["names"], request[LANG]), day=None, slots=nearest,
                  action=f"/b/{branch['id']}/book/contact", hidden=hidden, lost=start,
                  back=f"/b/{branch['id']}/book/day?service={service['id']}", errors={})


# -- confirmation -------------------------------------------------------------------------------
def _claims(request: web.Request) -> dict[str, Any]:
    hq = hq_of(request)
    try:
        claims = verify_token(hq.key.public_key(), request.match_info["token"], now=hq.clock.now())
    except TokenError as err:
        raise PageError(404, "This booking link is not valid any more.") from err
    if claims.get("typ") != "booking":
        raise PageError(404, "This booking link is not valid any more.")
    return claims


def _booking_rows(c: sqlite3.Connection, code: str) -> tuple[sqlite3.Row, sqlite3.Row, sqlite3.Row, str | None]:
    row = c.execute("SELECT * FROM bookings WHERE code = ?", (code,)).fetchone()
    if row is None or row["purged_at"]:
        raise PageError(404, "This booking link is not valid any more.")
    branch = tenants.get_branch(c, row["branch_id"])
    service = tenants.get_service(c, row["branch_id"], row["service_id"])
    t = c.execute("SELECT status_token FROM tickets WHERE branch_id = ? AND booking_code = ? AND status_token IS NOT NULL"
                  " ORDER BY issued_ms DESC LIMIT 1", (row["branch_id"], row["code"])).fetchone()
    return row, branch, service, t[0] if t else None


async def confirmation(request: web.Request) -> web.Response:
    claims = _claims(request)
    hq = hq_of(request)
    row, branch, service, status_token = await hq.db.read(lambda c: _booking_rows(c, claims["code"]))
    token = booking.booking_token(hq.key, row, hq.settings.booking_token_grace_s) if row["status"] == "booked" else None
    t = request[T]
    return render(request, "confirmation.html", row=row, branch=branch,
                  service_name=data.service_name(service["names"], request[LANG]),
                  when=t.datetime(row["slot_start"], branch["timezone"], "full"),
                  qr=qr_svg(token, t("QR code of booking {code}", code=row["code"])) if token else None,
                  ics=f"/c/{request.match_info['token']}/booking.ics", status_token=status_token)


async def confirmation_ics(request: web.Request) -> web.Response:
    claims = _claims(request)
    hq = hq_of(request)
    row, branch, service, _ = await hq.db.read(lambda c: _booking_rows(c, claims["code"]))
    t = request[T]
    body = booking_ics(code=row["code"], start=row["slot_start"], end=row["slot_end"],
                       summary=f"{data.service_name(service['names'], request[LANG])} – {branch['name']}",
                       location=" ".join(filter(None, (branch["name"], branch["address"]))),
                       description=t("Booking code {code}. Show the code or the QR at the kiosk.", code=row["code"]),
                       now=hq.now(), status=row["status"], sequence=max(0, row["updated_at"] - row["created_at"]))
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="booking-{row["code"]}.ics"'})


# -- manage a booking ---------------------------------------------------------------------------
def _grant_key(request: web.Request) -> bytes:
    raw = hq_of(request).key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())
    return hashlib.sha256(b"smartq web manage grant\0" + raw).digest()


def _grant(request: web.Request, code: str) -> str:
    exp = int(time.time()) + GRANT_TTL_S
    sig = hmac.new(_grant_key(request), f"{code}:{exp}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{code}:{exp}:{sig}"


def _granted(request: web.Request, row: sqlite3.Row) -> bool:
    citizen = request[CITIZEN]
    if citizen is not None and row["citizen_id"] == citizen["id"]:
        return True
    parts = request.cookies.get(GRANT_COOKIE, "").split(":")
    if len(parts) != 3 or parts[0] != row["code"] or not parts[1].isdigit() or int(parts[1]) < time.time():
        return False
    sig = hmac.new(_grant_key(request), f"{parts[0]}:{parts[1]}".encode(), hashlib.sha256).hexdigest()[:32]
    return hmac.compare_digest(sig, parts[2])


async def manage_form(request: web.Request) -> web.Response:
    values = {"code": request.query.get("code", "")[:20], "contact": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        await rate_check(request)
        form = await request.post()
        values = {k: str(form.get(k, "")).strip()[:254] for k in ("code", "contact")}
        if not values["code"]:
            errors["code"] = N_("Enter the booking code, like 7KQ2-M9XD.")
        if not values["contact"]:
            errors["contact"] = N_("Enter the phone number or e-mail address you gave when booking.")
        if not errors:
            hq = hq_of(request)
            try:
                row = await hq.db.read(lambda c: booking.get_by_code(c, values["code"], values["contact"],
                                                                     hq.settings.default_phone_region))
            except ApiError:
                errors["code"] = N_("No booking matches this code and contact. Check both and try again.")
            else:
                response = redirect(f"/manage/{row['code']}")
                response.set_cookie(GRANT_COOKIE, _grant(request, row["code"]), max_age=GRANT_TTL_S, **cookie_args(request))
                return response
    return render(request, "manage_form.html", status=400 if errors else 200, values=values, errors=errors)


async def _managed(request: web.Request) -> tuple[sqlite3.Row, sqlite3.Row, sqlite3.Row]:
    hq = hq_of(request)
    try:
        code = booking.normalize_code(request.match_info["code"])
    except ApiError as err:
        raise PageError(404, "This page does not exist.") from err
    row, branch, service, _ = await hq.db.read(lambda c: _booking_rows(c, code))
    if not _granted(request, row):
        raise PageError(403, "To change a booking, enter its code and your phone or e-mail first.")
    return row, branch, service


async def manage_page(request: web.Request) -> web.Response:
    row, branch, service = await _managed(request)
    hq = hq_of(request)
    token = booking.booking_token(hq.key, row, hq.settings.booking_token_grace_s) if row["status"] == "booked" else None
    return render(request, "manage.html", row=row, branch=branch,
                  service_name=data.service_name(service["names"], request[LANG]),
                  when=request[T].datetime(row["slot_start"], branch["timezone"], "full"),
                  done=request.query.get("done"), confirmation=f"/c/{token}" if token else None)


async def manage_day(request: web.Request) -> web.Response:
    row, branch, service = await _managed(request)
    hq = hq_of(request)
    days = await hq.db.read(lambda c: data.bookable_days(c, branch, service, hq.now(), hq.settings.booking_horizon_days))
    return render(request, "book_day.html", branch=branch, service_name=data.service_name(service["names"], request[LANG]),
                  days=days, action=f"/manage/{row['code']}/slot", hidden={}, back=f"/manage/{row['code']}",
                  errors={"date": N_("Choose a date.")} if "error" in request.query else {})


async def manage_slot(request: web.Request) -> web.Response:
    row, branch, service = await _managed(request)
    if not request.query.get("date"):
        return redirect(f"/manage/{row['code']}/day?error=date")
    day = _day(request.query.get("date"))
    hq = hq_of(request)
    slots = await hq.db.read(lambda c: data.slots_on(c, branch, service, day, hq.now(), hq.settings.booking_horizon_days))
    return render(request, "book_slot.html", branch=branch, service_name=data.service_name(service["names"], request[LANG]),
                  day=day, slots=slots, action=f"/manage/{row['code']}/reschedule", hidden={},
                  back=f"/manage/{row['code']}/day", lost=None,
                  errors={"start": N_("Choose a time.")} if "error" in request.query else {})


async def manage_reschedule(request: web.Request) -> web.Response:
    row, branch, service = await _managed(request)
    await rate_check(request)
    form = await request.post()
    if not form.get("start"):
        return redirect(f"/manage/{row['code']}/day")
    start = _int(form.get("start"))  # type: ignore[arg-type]
    hq, ctx = hq_of(request), _ctx(request)
    contact = row["email"] or row["phone"]
    try:
        await hq.db.write(read_committed(lambda c: booking.reschedule_row(
            c, ctx, row["code"], {"contact": contact, "start": booking.iso_utc(start)})))
    except ApiError as err:
        if err.code in ("slot_full", "slot_past", "slot_unavailable"):
            nearest = await hq.db.read(lambda c: data.nearest_slots(c, branch, service, start, hq.now(),
                                                                    hq.settings.booking_horizon_days))
            return render(request, "book_slot.html", status=409, branch=branch,
                          service_name=data.service_name(service["names"], request[LANG]), day=None, slots=nearest,
                          action=f"/manage/{row['code']}/reschedule", hidden={}, lost=start,
                          back=f"/manage/{row['code']}/day", errors={})
        if err.code == "cancelled":
            raise PageError(409, "This booking is cancelled.") from err
        raise
    hq.booking_written("rescheduled")
    return redirect(f"/manage/{row['code']}?done=moved")


async def manage_cancel(request: web.Request) -> web.Response:
    row, _, _ = await _managed(request)
    await rate_check(request)
    hq, ctx = hq_of(request), _ctx(request)
    contact = row["email"] or row["phone"]
    await hq.db.write(read_committed(lambda c: booking.cancel_row(c, ctx, row["code"], {"contact": contact})))
    hq.booking_written("cancelled")
    return redirect(f"/manage/{row['code']}?done=cancelled")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/", home)
    r.add_get("/b/{branch}", branch_page)
    r.add_get("/b/{branch}/book", book_service)
    r.add_get("/b/{branch}/book/day", book_day)
    r.add_get("/b/{branch}/book/slot", book_slot)
    r.add_route("GET", "/b/{branch}/book/contact", book_contact)
    r.add_route("POST", "/b/{branch}/book/contact", book_contact)
    r.add_get("/c/{token}", confirmation)
    r.add_get("/c/{token}/booking.ics", confirmation_ics)
    r.add_route("GET", "/manage", manage_form)
    r.add_route("POST", "/manage", manage_form)
    r.add_get("/manage/{code}", manage_page)
    r.add_get("/manage/{code}/day", manage_day)
    r.add_get("/manage/{code}/slot", manage_slot)
    r.add_post("/manage/{code}/reschedule", manage_reschedule)
    r.add_post("/manage/{code}/cancel", manage_cancel)
