"""All HQ routes in one table, which also produces the OpenAPI document (/api/v1/openapi.json)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hq import api_admin as A
from hq import api_catalogue as C
from hq import api_public as P

ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"}
NAMES = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 120}, "minProperties": 1}
ERROR = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "code": {"type": "string"}, "message": {"type": "string"}}, "required": ["code", "message"]}}, "required": ["error"]}
OBJ = {"type": "object"}
CREDENTIALS = {"type": "object", "required": ["email", "password"], "properties": {
    "email": {"type": "string", "maxLength": 254}, "password": {"type": "string", "maxLength": 1024}}}
INT_RULE = {"type": "integer", "minimum": 0, "maximum": 10000000}
DIGITS = {"type": "integer", "minimum": 3, "maximum": 6, "description": "digits of a ticket number (A042, A0042)"}
QUEUE = {"type": "object", "description": "branch queue rules (docs/hq.md)", "additionalProperties": False, "properties": {
    **{k: INT_RULE for k in ("max_priority", "promote_after_s", "max_recalls", "call_timeout_s", "default_service_s",
                             "estimate_window")}, "digits": DIGITS}}
RULES = {"type": "object", "description": "per-service overrides of the queue rules", "additionalProperties": False,
         "properties": {**{k: INT_RULE for k in ("promote_after_s", "max_recalls", "default_service_s", "call_timeout_s")},
                        "digits": DIGITS}}
NOTICE_LINES = {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 200}}
NOTICES = {"oneOf": [NOTICE_LINES, {"type": "object", "maxProperties": 20, "additionalProperties": NOTICE_LINES}],
           "description": "the display's ticker lines: one list for every language, or {language: [lines]}"}
ORDER = {"type": "integer", "minimum": 0, "maximum": 10000}
TARGET = {"type": "integer", "nullable": True, "minimum": 1, "maximum": 240,
          "description": "the target wait in minutes; null: the HQ setting target_wait_s"}
SPAN = {"type": "object", "required": ["opens", "closes"], "properties": {
    "opens": {"type": "string", "example": "08:30"}, "closes": {"type": "string", "example": "17:00"}}}
CONTACT = {"type": "object", "required": ["contact"], "properties": {
    "contact": {"type": "string", "description": "phone or e-mail given when booking"}}}
BOOKING = {"type": "object", "properties": {
    "code": {"type": "string", "example": "7KQ2-M9XD"}, "branch": {"type": "string"}, "service": {"type": "string"},
    "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
    "status": {"type": "string", "enum": ["booked", "cancelled"]}, "language": {"type": "string"},
    "token": {"type": "string", "description": "HQ-signed token (sync.tokens format), also the QR payload"},
    "qr": {"type": "string"}, "links": {"type": "object"}}}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Any
    summary: str
    tag: str
    auth: bool = False
    body: dict[str, Any] | None = None
    query: tuple[tuple[str, bool, dict[str, Any]], ...] = ()
    ok: int = 200
    response: dict[str, Any] = field(default_factory=lambda: OBJ)
    content_type: str = "application/json"


V = "/api/v1"
ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", P.healthz, "Liveness", "meta"),
    Route("POST", f"{V}/auth/login", A.login, "Web login: sets a session cookie, returns the CSRF token", "auth",
          body=CREDENTIALS),
    Route("POST", f"{V}/auth/tokens", A.issue_token, "API login: returns a bearer token", "auth", body=CREDENTIALS, ok=201),
    Route("POST", f"{V}/auth/logout", A.logout, "End this session or token", "auth", auth=True, ok=204),
    Route("GET", f"{V}/auth/me", A.me, "The logged-in account", "auth", auth=True),
    Route("GET", f"{V}/users", A.list_users, "Accounts visible to the caller", "accounts", auth=True),
    Route("POST", f"{V}/users", A.create_user, "Create an account", "accounts", auth=True, ok=201, body={
        "type": "object", "required": ["email", "password", "role"], "properties": {
            "email": {"type": "string"}, "password": {"type": "string", "minLength": 10}, "name": {"type": "string"},
            "role": {"type": "string", "enum": ["super_admin", "org_admin", "branch_manager", "staff"]},
            "org": ID, "branch": ID}}),
    Route("GET", f"{V}/orgs", A.list_orgs, "Organizations visible to the caller", "tenants", auth=True),
    Route("POST", f"{V}/orgs", A.create_org, "Create an organization (super admin)", "tenants", auth=True, ok=201,
          body={"type": "object", "required": ["id", "name"], "properties": {"id": ID, "name": {"type": "string"}}}),
    Route("GET", f"{V}/orgs/{{org}}", A.get_org, "One organization", "tenants", auth=True),
    Route("GET", f"{V}/orgs/{{org}}/branches", A.list_branches, "Branches of an organization", "tenants", auth=True),
    Route("POST", f"{V}/orgs/{{org}}/branches", A.create_branch, "Create a branch", "tenants", auth=True, ok=201, body={
        "type": "object", "required": ["id", "name", "timezone"], "properties": {
            "id": ID, "name": {"type": "string"}, "timezone": {"type": "string", "example": "Europe/Zurich"},
            "languages": {"type": "array", "items": {"type": "string"}}, "queue": QUEUE, "notices": NOTICES,
            "address": {"type": "string", "maxLength": 300, "description": "shown on the citizens' office page"}}}),
    Route("GET", f"{V}/branches/{{branch}}", A.get_branch, "A branch with services, counters and hours", "tenants", auth=True),
    Route("PATCH", f"{V}/branches/{{branch}}", A.update_branch, "Change a branch (emits config.branch)", "tenants",
          auth=True, body={"type": "object", "properties": {"name": {"type": "string"}, "timezone": {"type": "string"},
                                                            "languages": {"type": "array", "items": {"type": "string"}},
                                                            "queue": QUEUE, "notices": NOTICES,
                                                            "address": {"type": "string", "maxLength": 300}}}),
    Route("GET", f"{V}/orgs/{{org}}/catalogue", C.list_catalogue,
          "The organization's service catalogue with each service's offers (org admin)", "config", auth=True),
    Route("PUT", f"{V}/orgs/{{org}}/catalogue/{{service}}", C.put_entry,
          "Create or change a catalogue service; every branch offering it gets config.service", "config", auth=True,
          body={"type": "object", "required": ["letter", "names"], "properties": {
              "letter": {"type": "string", "pattern": "^[A-Z]$"}, "names": NAMES, "bookable": {"type": "boolean"},
              "slot_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
              "capacity": {"type": "integer", "minimum": 0, "maximum": 10000}, "rules": RULES,
              "icon": {"type": "string", "enum": ["", "person", "money", "document", "id-card", "health", "info",
                                                  "mail", "calendar"]}, "target_wait_minutes": TARGET}}),
    Route("PUT", f"{V}/orgs/{{org}}/catalogue/{{service}}/offers/{{branch}}", C.put_offer,
          "Offer a catalogue service in a branch with overrides, or withdraw it (emits config.service)", "config",
          auth=True, body={"type": "object", "properties": {
              "enabled": {"type": "boolean"}, "slot_minutes": {"type": "integer", "nullable": True, "minimum": 5, "maximum": 480},
              "capacity": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 10000}, "target_wait_minutes": TARGET}}),
    Route("GET", f"{V}/branches/{{branch}}/services", A.list_services, "Services of a branch", "config", auth=True),
    Route("PUT", f"{V}/branches/{{branch}}/services/{{service}}", A.put_service,
          "Create or change a service and its slot rule (emits config.service)", "config", auth=True, body={
              "type": "object", "required": ["letter", "names"], "properties": {
                  "letter": {"type": "string", "pattern": "^[A-Z]$"}, "names": NAMES, "bookable": {"type": "boolean"},
                  "slot_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
                  "capacity": {"type": "integer", "minimum": 0, "maximum": 10000}, "rules": RULES, "order": ORDER,
                  "icon": {"type": "string", "enum": ["", "person", "money", "document", "id-card", "health", "info",
                                                      "mail", "calendar"]},
                  "enabled": {"type": "boolean"}, "target_wait_minutes": TARGET}}),
    Route("GET", f"{V}/branches/{{branch}}/counters", A.list_counters, "Counters of a branch", "config", auth=True),
    Route("PUT", f"{V}/branches/{{branch}}/counters/{{counter}}", A.put_counter,
          "Create or change a counter (emits config.counter)", "config", auth=True, body={
              "type": "object", "required": ["name"], "properties": {
                  "name": {"type": "string"}, "services": {"type": "array", "items": ID}, "order": ORDER,
                  "names": {**NAMES, "minProperties": 0, "description": "the name per language; screens show theirs"}}}),
    Route("GET", f"{V}/branches/{{branch}}/hours", A.get_hours, "Opening hours and closed days", "config", auth=True),
    Route("PUT", f"{V}/branches/{{branch}}/hours", A.put_hours, "Replace weekly opening hours (emits config.hours)",
          "config", auth=True, body={"type": "object", "required": ["weekdays"], "properties": {
              "weekdays": {"type": "object", "description": "'0' (Monday) .. '6' (Sunday)", "additionalProperties": SPAN}}}),
    Route("POST", f"{V}/branches/{{branch}}/closed-days", A.add_closed_day, "Add a closed day / holiday", "config",
          auth=True, ok=201, body={"type": "object", "required": ["day"], "properties": {
              "day": {"type": "string", "format": "date"}, "reason": {"type": "string"}}}),
    Route("DELETE", f"{V}/branches/{{branch}}/closed-days/{{day}}", A.remove_closed_day, "Remove a closed day", "config",
          auth=True),
    Route("GET", f"{V}/branches/{{branch}}/devices", A.list_devices, "Devices of a branch", "config", auth=True),
    Route("POST", f"{V}/branches/{{branch}}/devices", A.add_device, "Register a device (emits config.roster)", "config",
          auth=True, ok=201, body={"type": "object", "required": ["id", "role", "public_key"], "properties": {
              "id": ID, "role": {"type": "string", "enum": ["kiosk", "display", "counter"]},
              "public_key": {"type": "string", "description": "Ed25519 raw key, 64 hex chars, or PEM"},
              "name": {"type": "string"},
              "numbers": {"type": "string", "example": "1-599", "description": "ticket number range it issues from"}}}),
    Route("GET", f"{V}/branches/{{branch}}/staff", A.list_staff, "Staff of a branch", "config", auth=True),
    Route("PUT", f"{V}/branches/{{branch}}/staff/{{staff}}", A.put_staff, "Create or change staff (emits config.roster)",
          "config", auth=True, body={"type": "object", "required": ["name"], "properties": {
              "name": {"type": "string"}, "pin": {"type": "string", "pattern": "^[0-9]{4,12}$"}}}),
    Route("GET", f"{V}/branches/{{branch}}/outbox", A.list_outbox, "Signed HQ events waiting for the branch link",
          "config", auth=True, query=(("after", False, {"type": "integer", "minimum": 0}),
                                      ("limit", False, {"type": "integer", "minimum": 1, "maximum": 1000}))),
    Route("GET", f"{V}/branches/{{branch}}/bookings", A.list_bookings, "Bookings of a branch-local day", "booking",
          auth=True, query=(("date", True, {"type": "string", "format": "date"}),)),
    Route("GET", f"{V}/branches/{{branch}}/live", A.branch_live, "Today's queues as pushed by the branch", "live", auth=True),
    Route("GET", f"{V}/branches/{{branch}}/link", A.branch_link,
          "Link status and HQ's state hash of the branch (the branch fold of the events HQ holds)", "live", auth=True),
    Route("GET", f"{V}/branches/{{branch}}/analytics", A.branch_analytics,
          "Tickets, waits, service times, no-show and abandonment per service, day and hour", "analytics", auth=True,
          query=(("from", False, {"type": "string", "format": "date"}), ("to", False, {"type": "string", "format": "date"}),
                 ("service", False, ID))),
    Route("POST", f"{V}/enroll", P.enroll_request, "A new device registers the one-time code it shows", "enrollment",
          ok=201, body={"type": "object", "required": ["code", "public_key"], "properties": {
              "code": {"type": "string", "example": "7KQ2-M9XD"}, "public_key": {"type": "string"},
              "box_key": {"type": "string", "description": "X25519 key (base64url) the bundle's secrets are sealed to"}}}),
    Route("POST", f"{V}/enroll/{{code}}/claim", P.enroll_claim,
          "The device fetches its signed enrollment bundle (202 while the code waits for an admin)", "enrollment",
          body={"type": "object", "required": ["time_ms", "sig"], "properties": {
              "time_ms": {"type": "integer"}, "sig": {"type": "string"}}}),
    Route("GET", f"{V}/public/hq-key", P.hq_key, "HQ public key that signs booking tokens and config events", "public"),
    Route("GET", f"{V}/public/branches/{{branch}}", P.branch_info, "Public branch info and bookable services", "public"),
    Route("GET", f"{V}/public/branches/{{branch}}/availability", P.availability, "Free slots of a service on a date",
          "public", query=(("service", True, ID), ("date", True, {"type": "string", "format": "date"}))),
    Route("POST", f"{V}/public/bookings", P.create_booking, "Book a slot", "public", ok=201, response=BOOKING, body={
        "type": "object", "required": ["branch", "service", "start"], "properties": {
            "branch": ID, "service": ID, "start": {"type": "string", "format": "date-time"},
            "name": {"type": "string", "maxLength": 120}, "phone": {"type": "string", "example": "+41441234567"},
            "email": {"type": "string", "format": "email"}, "language": {"type": "string"}}}),
    Route("POST", f"{V}/public/bookings/{{code}}/lookup", P.lookup_booking, "Show a booking (code + contact)", "public",
          body=CONTACT, response=BOOKING),
    Route("POST", f"{V}/public/bookings/{{code}}/reschedule", P.reschedule_booking, "Move a booking to another slot",
          "public", response=BOOKING, body={"type": "object", "required": ["contact", "start"], "properties": {
              "contact": {"type": "string"}, "start": {"type": "string", "format": "date-time"}}}),
    Route("POST", f"{V}/public/bookings/{{code}}/cancel", P.cancel_booking, "Cancel a booking (code + contact)", "public",
          body=CONTACT, response=BOOKING),
    Route("GET", f"{V}/public/bookings/{{code}}/ics", P.booking_ics_file, "iCalendar file of a booking", "public",
          query=(("token", True, {"type": "string"}),), content_type="text/calendar"),
    Route("GET", f"{V}/public/bookings/{{code}}/status", P.booking_status, "Booking and live place once checked in",
          "public", query=(("token", True, {"type": "string"}),)),
    Route("GET", f"{V}/public/tickets/{{token}}", P.ticket_status,
          "A ticket's place and estimated wait, by its status token (the secret in its QR)", "public"),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{V}/openapi.json", openapi_handler)
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag],
                              "operationId": re.sub(r"\W+", "_", f"{r.method}_{r.path}").strip("_").lower()}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"{(\w+)}", r.path)]
        params += [{"name": n, "in": "query", "required": req, "schema": schema} for n, req, schema in r.query]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        ok: dict[str, Any] = {"description": "success"}
        if r.ok != 204:
            ok["content"] = {r.content_type: {"schema": r.response if r.content_type == "application/json" else {"type": "string"}}}
        responses: dict[str, Any] = {str(r.ok): ok}
        for code, text in (("400", "bad input"), ("404", "not found"), ("409", "state conflict")):
            responses[code] = {"description": text, "content": {"application/json": {"schema": ERROR}}}
        if r.auth:
            responses["401"] = {"description": "not logged in", "content": {"application/json": {"schema": ERROR}}}
            responses["403"] = {"description": "role may not do this", "content": {"application/json": {"schema": ERROR}}}
            op["security"] = [{"bearer": []}, {"cookie": []}]
        if r.handler in (P.availability, P.create_booking, P.lookup_booking, P.reschedule_booking, P.cancel_booking,
                         A.login, A.issue_token, P.enroll_request, P.enroll_claim):
            responses["429"] = {"description": "rate limited", "content": {"application/json": {"schema": ERROR}}}
        if r.handler is P.enroll_claim:
            responses["202"] = {"description": "the code still waits for an admin",
                                "content": {"application/json": {"schema": OBJ}}}
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "SmartQ HQ API", "version": "1.0.0",
                 "description": "Headquarters server: tenants, configuration, online booking, live status, analytics."},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "smartq_session"}}},
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
