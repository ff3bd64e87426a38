"""Public API: branch info, availability, booking/reschedule/cancel, .ics, live status, HQ key.

No login: a booking is changed with its code plus the phone or e-mail given when booking;
the .ics and status links carry the HQ-signed booking token instead (no personal data in URLs).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from aiohttp import web

from hq import booking, live, tenants
from hq.booking import BookingContext
from hq.db import autocommit, batchable, read_committed
from hq.errors import ApiError, bad_request, not_found
from hq.ics import booking_ics
from hq.signing import public_key_b64, public_key_hex
from hq.web import BOOKING_LIMITER, hq_of, jresp, rate_limited, read_json
from sync.tokens import TokenError, verify_token


def _ctx(request: web.Request) -> BookingContext:
    hq = hq_of(request)
    s = hq.settings
    return BookingContext(key=hq.key, now=hq.now(), horizon_days=s.booking_horizon_days,
                          token_grace_s=s.booking_token_grace_s, phone_region=s.default_phone_region, rng=hq.rng)


async def branch_info(request: web.Request) -> web.Response:
    branch_id = request.match_info["branch"]

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        b = tenants.get_branch(c, branch_id)
        services = [s for s in tenants.list_services(c, branch_id) if s["bookable"]]
        return {"id": b["id"], "name": b["name"], "timezone": b["timezone"], "languages": json.loads(b["languages"]),
                "services": services, "hours": tenants.hours_json(c, branch_id)}
    return jresp(await hq_of(request).db.read(load))


@rate_limited(BOOKING_LIMITER)
async def availability(request: web.Request) -> web.Response:
    hq = hq_of(request)
    branch_id, service, day = request.match_info["branch"], request.query.get("service"), request.query.get("date")
    if service is None or day is None:
        raise bad_request("query parameters service and date are required")
    now, horizon = hq.now(), hq.settings.booking_horizon_days
    return jresp(await hq.db.read(lambda c: booking.availability(c, branch_id, service, day, now, horizon)))


@rate_limited(BOOKING_LIMITER)
async def create_booking(request: web.Request) -> web.Response:
    body = await read_json(request)
    ctx = _ctx(request)
    hq = hq_of(request)
    slot = (str(body.get("branch")), str(body.get("service")), str(body.get("start"))) if isinstance(body, dict) else ()
    data = booking.render(await hq.db.write(batchable(autocommit(lambda c: booking.book_row(c, ctx, body)), slot)), ctx)
    hq.booking_written("created")
    return jresp(_with_links(request, data), 201)


@rate_limited(BOOKING_LIMITER)
async def lookup_booking(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    hq, ctx = hq_of(request), _ctx(request)
    code = request.match_info["code"]

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        row = booking.get_by_code(c, code, body.get("contact"), ctx.phone_region)
        tz = tenants.get_branch(c, row["branch_id"])["timezone"]
        return booking.booking_json(row, tz, ctx.key, ctx.token_grace_s)
    return jresp(_with_links(request, await hq.db.read(load)))


@rate_limited(BOOKING_LIMITER)
async def reschedule_booking(request: web.Request) -> web.Response:
    body, ctx, code = await read_json(request), _ctx(request), request.match_info["code"]
    hq = hq_of(request)
    data = booking.render(await hq.db.write(read_committed(lambda c: booking.reschedule_row(c, ctx, code, body))), ctx)
    hq.booking_written("rescheduled")
    return jresp(_with_links(request, data))


@rate_limited(BOOKING_LIMITER)
async def cancel_booking(request: web.Request) -> web.Response:
    body, ctx, code = await read_json(request), _ctx(request), request.match_info["code"]
    hq = hq_of(request)
    data = booking.render(await hq.db.write(read_committed(lambda c: booking.cancel_row(c, ctx, code, body))), ctx)
    hq.booking_written("cancelled")
    return jresp(data)


def _with_links(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    if "token" in data:
        base = f"/api/v1/public/bookings/{data['code']}"
        data["links"] = {"ics": f"{base}/ics?token={data['token']}", "status": f"{base}/status?token={data['token']}"}
    return data


def _token_claims(request: web.Request) -> dict[str, Any]:
    hq = hq_of(request)
    try:
        claims = verify_token(hq.key.public_key(), request.query.get("token", ""), now=hq.clock.now())
    except TokenError as err:
        raise ApiError(404, "not_found", f"booking not found ({err.reason})") from err
    if claims.get("typ") != "booking" or booking.normalize_code(request.match_info["code"]) != claims.get("code"):
        raise not_found("booking")
    return claims


async def booking_ics_file(request: web.Request) -> web.Response:
    claims = _token_claims(request)
    hq = hq_of(request)

    def load(c: sqlite3.Connection) -> tuple[sqlite3.Row, sqlite3.Row, sqlite3.Row]:
        row = c.execute("SELECT * FROM bookings WHERE code = ?", (claims["code"],)).fetchone()
        if row is None:
            raise not_found("booking")
        return row, tenants.get_branch(c, row["branch_id"]), tenants.get_service(c, row["branch_id"], row["service_id"])

    row, branch, service = await hq.db.read(load)
    names = json.loads(service["names"])
    title = names.get(row["language"]) or next(iter(names.values()))
    body = booking_ics(code=row["code"], start=row["slot_start"], end=row["slot_end"],
                       summary=f"{title} – {branch['name']}", location=branch["name"],
                       description=f"Booking code {row['code']}. Show the code or the QR at the kiosk.",
                       now=hq.now(), status=row["status"], sequence=max(0, row["updated_at"] - row["created_at"]))
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="booking-{row["code"]}.ics"'})


async def booking_status(request: web.Request) -> web.Response:
    """The booking and, once checked in at the branch, its ticket's place and estimated wait."""
    claims = _token_claims(request)
    hq = hq_of(request)
    default_s = hq.settings.default_service_s

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        row = c.execute("SELECT * FROM bookings WHERE code = ?", (claims["code"],)).fetchone()
        if row is None:
            raise not_found("booking")
        tz = tenants.get_branch(c, row["branch_id"])["timezone"]
        t = c.execute("SELECT id FROM tickets WHERE branch_id = ? AND booking_code = ? ORDER BY issued_ms DESC LIMIT 1",
                      (row["branch_id"], row["code"])).fetchone()
        return {"code": row["code"], "status": row["status"], "start": booking.iso_local(row["slot_start"], tz),
                "end": booking.iso_local(row["slot_end"], tz),
                "ticket": live.ticket_status(c, row["branch_id"], t[0], default_s) if t else None}
    return jresp(await hq.db.read(load))


async def ticket_status(request: web.Request) -> web.Response:
    """A ticket's place and wait by its status token (the QR's secret), never by its guessable id."""
    hq = hq_of(request)
    token = request.match_info["token"]
    default_s = hq.settings.default_service_s

    def load(c: sqlite3.Connection) -> dict[str, Any] | None:
        found = live.ticket_by_token(c, token)
        return live.ticket_status(c, found[0], found[1], default_s) if found else None
    data = await hq.db.read(load)
    if data is None:
        raise not_found("ticket")
    return jresp(data)


@rate_limited(BOOKING_LIMITER)
async def enroll_request(request: web.Request) -> web.Response:
    """A fresh device registers the one-time code it shows, with its public key (hq.trust)."""
    from hq import trust
    hq = hq_of(request)
    body = await read_json(request)
    out = await hq.db.write(lambda c: trust.request_enrollment(c, body, now=hq.now(),
                                                               ttl_s=int(hq.settings.enroll_code_ttl_s)))
    return jresp(out, 201)


@rate_limited(BOOKING_LIMITER)
async def enroll_claim(request: web.Request) -> web.Response:
    """The device fetches its bundle once an admin approved its code (202 while pending)."""
    from hq import trust
    hq = hq_of(request)
    body = await read_json(request)
    code = request.match_info["code"]
    bundle = await hq.db.read(lambda c: trust.claim(c, code, body, now=hq.now()))
    if bundle is None:
        return jresp({"status": "pending"}, 202)
    return jresp(bundle)


async def hq_key(request: web.Request) -> web.Response:
    key = hq_of(request).key.public_key()
    return jresp({"alg": "Ed25519", "public_key": public_key_hex(key), "public_key_b64": public_key_b64(key),
                  "token_format": "st1.<base64url(claims)>.<base64url(sig)>"})


async def healthz(request: web.Request) -> web.Response:
    await hq_of(request).db.read(lambda c: c.execute("SELECT 1").fetchone())
    return jresp({"status": "ok"})
