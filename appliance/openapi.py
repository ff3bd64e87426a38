"""The OpenAPI 3.1 document of the local API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

ID_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {str(code): _json(_ref("Error"), text) for code, text in (
    (400, "bad input"), (401, "staff login needed"), (403, "not allowed"), (404, "unknown resource"),
    (409, "state conflict (e.g. completing a ticket that is not being served)"), (413, "body too large"),
)}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
BEARER = [{"staff": []}]


def _op(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, staff: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if staff:
        op["security"] = BEARER
    return op


def _path_param(name: str, description: str, pattern: str = ID_PATTERN, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    else:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


COUNTER = _path_param("counter", "counter id")
TICKET = _path_param("ticket", "ticket id, e.g. 20261122-A042")
EMPTY_BODY = {"type": "object", "additionalProperties": False}

WAIT_RANGE = {"oneOf": [{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                        {"type": "null"}],
              "description": "[p10, p90] of the learned wait estimate (s); null before it is trained or when not waiting"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Ticket": {"type": "object", "required": ["id", "label", "service", "status", "position", "estimated_wait_s", "issued_at"],
               "properties": {
                   "id": {"type": "string"}, "label": {"type": "string"}, "service": {"type": "string"},
                   "status": {"enum": ["waiting", "called", "serving", "completed", "no_show", "cancelled", "moved"]},
                   "priority": {"type": "integer"}, "language": NULLABLE_STR,
                   "position": NULLABLE_INT, "people_ahead": NULLABLE_INT, "estimated_wait_s": NULLABLE_INT,
                   "estimated_wait_range_s": WAIT_RANGE,
                   "issued_at": {"type": "string", "format": "date-time"},
                   "called_at": NULLABLE_STR, "started_at": NULLABLE_STR, "finished_at": NULLABLE_STR,
                   "counter": NULLABLE_STR, "recalls": {"type": "integer"}, "booking_code": NULLABLE_STR,
                   "superseded": {"type": "array", "items": {"type": "string"},
                                  "description": "counters whose concurrent call of this ticket lost"},
                   "status_url": {**NULLABLE_STR,
                                  "description": "the ticket's live status page at HQ ([hq] public_url/t/<status_token>);"
                                                 " null without [hq] public_url"},
                   "print": {"type": "object", "description": "only on issue: what happened to the printout"},
               }},
    "Counter": {"type": "object", "required": ["id", "name", "status", "current"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "names": {"type": "object", "additionalProperties": {"type": "string"}},
        "services": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["open", "paused", "closed"]}, "staff": NULLABLE_STR,
        "current": {"oneOf": [_ref("Ticket"), {"type": "null"}]},
        "superseded": {"type": "array", "items": {"type": "object"}},
        "served_today": {"type": "integer", "description": "tickets completed here today (GET /state only)"}}},
    "Service": {"type": "object", "properties": {
        "id": {"type": "string"}, "letter": {"type": "string"},
        "names": {"type": "object", "additionalProperties": {"type": "string"}},
        "waiting": {"type": "integer"}, "estimated_wait_s": {"type": "integer"},
        "estimated_wait_range_s": WAIT_RANGE, "open_counters": {"type": "integer"},
        "icon": {"type": "string", "description": "the kiosk's pictogram, when the configuration names one"},
        "enabled": {"type": "boolean", "description": "false (only then present): HQ's catalogue withdrew the service"
                                                      " from this branch; kiosks do not offer it"}}},
    "State": {"type": "object", "required": ["branch", "services", "counters", "recent_calls", "peers", "hq", "state_hash"],
              "properties": {
                  "branch": {"type": "object"}, "device": {"type": "object"}, "now": {"type": "string"},
                  "day": {"type": "string"},
                  "services": {"type": "array", "items": _ref("Service")},
                  "counters": {"type": "array", "items": _ref("Counter")},
                  "recent_calls": {"type": "array", "items": {"type": "object"}},
                  "waiting": {"type": "array", "items": _ref("Ticket")},
                  "peers": {"type": "array", "items": {"type": "object"}},
                  "hq": {"type": "object"}, "hardware": {"type": "object"},
                  "state_hash": {"type": "string"}}},
    "IssueRequest": {"type": "object", "additionalProperties": False, "properties": {
        "service": {"type": "string", "minLength": 1, "maxLength": 200},
        "priority": {"type": "integer", "minimum": 0},
        "language": {"type": "string", "minLength": 1, "maxLength": 200},
        "phone": {"type": "string", "minLength": 1, "maxLength": 200},
        "booking_code": {"type": "string", "minLength": 1, "maxLength": 4096,
                         "description": "the typed booking code, or the HQ-signed token of its QR code"}},
        "description": "service, or booking_code to check in a booking"},
    "TransferRequest": {"type": "object", "additionalProperties": False, "properties": {
        "to_service": {"type": "string"}, "to_counter": {"type": "string"}},
        "description": "exactly one of to_service, to_counter"},
    "LoginRequest": {"type": "object", "additionalProperties": False, "required": ["counter", "pin"], "properties": {
        "counter": {"type": "string"}, "pin": {"type": "string", "pattern": "^[0-9]{1,32}$"},
        "staff": {"type": "string", "description": "the staff member the PIN is of (lock-out per member)"}}},
}


def openapi_document() -> dict[str, Any]:
    ticket_ok = _json(_ref("Ticket"), "the ticket")
    return {
        "openapi": "3.1.0",
        "info": {"title": "SmartQ node local API", "version": "1.0.0",
                 "description": "The API every SmartQ device serves to its own UI on 127.0.0.1 (DESIGN §6)."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {"staff": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/v1/state": {"get": _op("Whole branch state", {"200": _json(_ref("State"), "state")})},
            "/api/v1/tickets": {"post": _op("Issue a ticket or check in a booking",
                                            {"201": _json(_ref("Ticket"), "issued")}, body=_ref("IssueRequest"))},
            "/api/v1/tickets/{ticket}": {"get": _op("One ticket", {"200": ticket_ok}, params=[TICKET])},
            "/api/v1/tickets/{ticket}/cancel": {"post": _op(
                "Cancel a waiting ticket", {"200": ticket_ok}, params=[TICKET],
                body={"type": "object", "additionalProperties": False, "properties": {"reason": {"type": "string"}}})},
            "/api/v1/tickets/{ticket}/reprint": {"post": _op(
                "Print a ticket again", {"202": _json({"type": "object"}, "queued")}, params=[TICKET])},
            "/api/v1/counters/{counter}": {"get": _op("One counter", {"200": _json(_ref("Counter"), "counter")},
                                                      params=[COUNTER])},
            "/api/v1/counters/{counter}/call-next": {"post": _op(
                "Call the next ticket", {"200": ticket_ok, "204": {"description": "nobody waits"}},
                params=[COUNTER], body=EMPTY_BODY, staff=True)},
            "/api/v1/counters/{counter}/tickets/{ticket}/call": {"post": _op(
                "Call one waiting ticket", {"200": ticket_ok}, params=[COUNTER, TICKET], body=EMPTY_BODY, staff=True)},
            "/api/v1/counters/{counter}/tickets/{ticket}/{action}": {"post": _op(
                "recall, start, complete, no-show, requeue or transfer a ticket", {"200": ticket_ok},
                params=[COUNTER, TICKET, _path_param("action", "what to do", enum=[
                    "recall", "start", "complete", "no-show", "requeue", "transfer"])],
                body=_ref("TransferRequest"), staff=True)},
            "/api/v1/counters/{counter}/{status}": {"post": _op(
                "Open, pause or close a counter", {"200": _json(_ref("Counter"), "counter")},
                params=[COUNTER, _path_param("status", "new status", enum=["open", "pause", "close"])],
                body=EMPTY_BODY, staff=True)},
            "/api/v1/staff/login": {"post": _op(
                "Log in at a counter with a staff PIN",
                {"200": _json({"type": "object", "properties": {"token": {"type": "string"}}}, "session")},
                body=_ref("LoginRequest"))},
            "/api/v1/staff/logout": {"post": _op("End a staff session", {"204": {"description": "done"}})},
            "/api/v1/stream": {"get": {"summary": "Server-sent events: every committed change, and `peers` "
                                                  "whenever peer health changes",
                                       "responses": {"200": {"description": "text/event-stream",
                                                             "content": {"text/event-stream": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
        },
    }
