"""The node's local HTTP API (DESIGN §6, a contract), served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import orjson
from aiohttp import web

from appliance.branch import iso
from sync.text import clean_text

from appliance.errors import BadRequest, DomainError, Forbidden, NotFound, Unauthorized
from appliance.events import STAFF_PIN_FAILED
from appliance.staff import recent_failures
from appliance.metrics import text_response
from appliance.node import Node
from appliance.openapi import openapi_document
from appliance.projection import state_hash

logger = logging.getLogger(__name__)

NODE = web.AppKey("node", Node)
PEER_CHECK_S = 2.0
KEEPALIVE_S = 15.0
ID = r"[A-Za-z0-9_.:-]{1,64}"


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON answers encoded by orjson (several times faster than json.dumps)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def json_error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
              429: "too_many_requests"}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    node = request.app[NODE]
    started = time.perf_counter()
    try:
        response = await handler(request)
    except DomainError as err:
        response = json_error(err.status, err.code, err.message)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        message = err.text if err.text and not err.text.startswith(f"{err.status}:") else err.reason
        response = json_error(err.status, HTTP_CODES.get(err.status, "http_error"), message)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        response = json_error(500, "internal", "internal error; the incident was logged")
    node.metrics.observe(request, response.status, started)
    return response


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


@web.middleware
async def origin_guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Only this device's own clients: a web page in a browser on the device (or one that
    rebinds its DNS name to 127.0.0.1) must not drive the node. The Host must name this
    listener by a loopback name, and a request a browser marks as coming from a page
    (Origin, Sec-Fetch-Site) must come from this very origin. The UIs' own client sends neither."""
    node = request.app[NODE]
    host = request.host or ""
    name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
    if name.lower() not in LOOPBACK_NAMES | {node.config.listen_host}:
        raise Forbidden(f"Host {host!r} is not this device's local API", code="bad_host")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"http://{host}":
        raise Forbidden("cross-origin requests are refused (a web page cannot drive the node)", code="bad_origin")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("cross-site requests are refused", code="bad_origin")
    return await handler(request)


LONG_FIELDS = {"booking_code": 4096}  # a booking QR token is a few hundred characters


async def read_body(request: web.Request, spec: dict[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
    """A JSON object with only the fields of `spec` ({name: (types, required)}); 400 otherwise."""
    if not request.can_read_body:
        body: Any = {}
    else:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as err:  # also invalid UTF-8 and integers beyond 64 bits
            raise BadRequest(f"body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for name, (types, required) in spec.items():
        if name not in body or body[name] is None:
            if required:
                raise BadRequest(f"missing field: {name}")
            body.pop(name, None)
            continue
        value = body[name]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise BadRequest(f"{name} has the wrong type (bool)")
        if not isinstance(value, types):
            raise BadRequest(f"{name} has the wrong type ({type(value).__name__})")
        limit = LONG_FIELDS.get(name, 200)
        if isinstance(value, str):
            value = body[name] = clean_text(value)  # NFC, no control or bidi characters
            if not value or len(value) > limit:
                raise BadRequest(f"{name} must be 1 to {limit} characters")
    return body


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    match = re.fullmatch(r"Bearer\s+(\S+)", header)
    if not match:
        raise BadRequest("Authorization must be 'Bearer <token>'")
    return match[1]


async def staff_check(request: web.Request, counter: str) -> str | None:
    node = request.app[NODE]
    session = node.staff.check(bearer(request), counter)
    return session.staff_id if session else None


# -- handlers ------------------------------------------------------------------------------

async def get_state(request: web.Request) -> web.Response:
    node = request.app[NODE]

    def read(conn: Any) -> dict[str, Any]:
        state = node.branch.state(conn)
        state["state_hash"] = state_hash(conn)
        return state

    state = await node.read(read)
    state["peers"] = node.peers_view()
    state["hq"] = node.hq_view()
    state["hardware"] = node.hardware_view()
    for s in state["services"]:
        node.metrics.waiting.labels(s["id"]).set(s["waiting"])
    return json_response(state)


async def post_ticket(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_body(request, {"service": (str, False), "priority": (int, False), "language": (str, False),
                                     "phone": (str, False), "booking_code": (str, False)})
    if "service" not in body and "booking_code" not in body:
        raise BadRequest("give a service, or a booking_code to check in")
    ticket = await node.write(lambda conn: node.branch.issue(conn, body))
    ticket = await node.after_issue(ticket)
    return json_response(ticket, status=201)


async def get_ticket(request: web.Request) -> web.Response:
    node = request.app[NODE]
    ticket_id = request.match_info["ticket"]
    return json_response(await node.read(lambda conn: node.branch.ticket(conn, ticket_id)))


async def cancel_ticket(request: web.Request) -> web.Response:
    """A kiosk cancels (the citizen at its screen); any other device needs a staff session."""
    node = request.app[NODE]
    if node.config.role != "kiosk":
        node.staff.any_session(bearer(request))
    body = await read_body(request, {"reason": (str, False)})
    ticket_id = request.match_info["ticket"]
    return json_response(await node.write(lambda conn: node.branch.cancel(conn, ticket_id, body.get("reason"))))


async def reprint_ticket(request: web.Request) -> web.Response:
    node = request.app[NODE]
    ticket_id = request.match_info["ticket"]
    ticket = await node.read(lambda conn: node.branch.ticket(conn, ticket_id))
    return json_response(await node.reprint(ticket), status=202)


async def call_next(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counter = request.match_info["counter"]
    await read_body(request, {})
    await staff_check(request, counter)
    ticket = await node.write(lambda conn: node.branch.call_next(conn, counter))
    if ticket is None:
        return web.Response(status=204)
    return json_response(ticket)


async def call_ticket(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counter, ticket_id = request.match_info["counter"], request.match_info["ticket"]
    await read_body(request, {})
    await staff_check(request, counter)
    return json_response(await node.write(lambda conn: node.branch.call_ticket(conn, counter, ticket_id)))


async def ticket_action(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counter, ticket_id, action = (request.match_info[k] for k in ("counter", "ticket", "action"))
    spec: dict[str, tuple[type | tuple[type, ...], bool]] = (
        {"to_service": (str, False), "to_counter": (str, False)} if action == "transfer" else {}
    )
    body = await read_body(request, spec)
    await staff_check(request, counter)
    return json_response(await node.write(lambda conn: node.branch.act(conn, counter, ticket_id, action, body)))


async def counter_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counter, status = request.match_info["counter"], request.match_info["status"]
    await read_body(request, {})
    staff = await staff_check(request, counter)
    return json_response(await node.write(lambda conn: node.branch.set_counter(conn, counter, status, staff)))


async def get_counter(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counter = request.match_info["counter"]
    return json_response(await node.read(lambda conn: node.branch.counter(conn, counter)))


async def staff_login(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_body(request, {"counter": (str, True), "pin": (str, True), "staff": (str, False)})
    counter, staff_id = body["counter"], body.get("staff")
    model = await node.read(node.branch.model)
    if counter not in model.counters:
        raise NotFound(f"unknown counter {counter!r}", code="unknown_counter")
    since = node.clock.wall_ms() - node.config.security.lockout_s * 1000
    failures = await node.read(lambda c: recent_failures(c, since_ms=since, staff=staff_id, counter=counter))
    try:
        session = await asyncio.to_thread(node.staff.login, counter, body["pin"], staff_id=staff_id,
                                          branch_failures=failures)
    except Unauthorized:
        # Recorded in the log, so every counter of the branch counts it (a guesser moving from
        # counter to counter stays locked out). The PIN itself is never recorded.
        payload = {"counter": counter, **({"staff": staff_id} if staff_id else {})}
        await node.write(lambda c: node.log.append(c, STAFF_PIN_FAILED, payload))
        raise
    return json_response({"token": session.token, "staff": {"id": session.staff_id, "name": session.staff_name},
                              "counter": counter, "expires_at": iso(session.expires_ms, model.tz)})


async def staff_logout(request: web.Request) -> web.Response:
    token = bearer(request)
    if token:
        request.app[NODE].staff.logout(token)
    return web.Response(status=204)


async def stream(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    assert node.hub is not None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    queue, unsubscribe = node.hub.subscribe()
    node.metrics.stream_clients.inc()
    try:
        digest = await node.read(state_hash)
        hello = json.dumps({"device": node.config.device_id, "state_hash": digest})
        await response.write(f"retry: 2000\nevent: hello\ndata: {hello}\n\n".encode())
        # Peer health is not an event of the log: it is sent when it changes (checked every
        # PEER_CHECK_S), so a display notices a lost device without polling.
        peers_sent: Any = None
        quiet = 0.0
        while True:
            peers = node.peers_view()
            if peers != peers_sent:
                body = json.dumps({"peers": peers}, ensure_ascii=False)
                await response.write(f"event: peers\ndata: {body}\n\n".encode("utf-8"))
                peers_sent, quiet = peers, 0.0
            try:
                # Not asyncio.wait_for: on 3.11 it swallows a cancel that comes as a message does.
                async with asyncio.timeout(PEER_CHECK_S):
                    message = await queue.get()
            except TimeoutError:
                quiet += PEER_CHECK_S
                if quiet >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    quiet = 0.0
                continue
            if message is None:
                break
            await response.write(message[1].encode("utf-8"))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        unsubscribe()
        node.metrics.stream_clients.dec()
    return response


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.read(lambda conn: conn.execute("SELECT 1").fetchone())
    return json_response({"status": "ok", "device": node.config.device_id, "role": node.config.role})


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node.metrics.writer_transactions.set(node.writer.transactions)
    return text_response(node.metrics.render())


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def _close_streams(app: web.Application) -> None:
    hub = app[NODE].hub
    if hub is not None:
        hub.close_all()


def create_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[error_middleware, origin_guard], client_max_size=node.config.max_body_bytes)
    app[NODE] = node
    app.on_shutdown.append(_close_streams)
    r = app.router
    r.add_get("/api/v1/state", get_state)
    r.add_post("/api/v1/tickets", post_ticket)
    r.add_get(f"/api/v1/tickets/{{ticket:{ID}}}", get_ticket)
    r.add_post(f"/api/v1/tickets/{{ticket:{ID}}}/cancel", cancel_ticket)
    r.add_post(f"/api/v1/tickets/{{ticket:{ID}}}/reprint", reprint_ticket)
    r.add_post(f"/api/v1/counters/{{counter:{ID}}}/call-next", call_next)
    r.add_post(f"/api/v1/counters/{{counter:{ID}}}/tickets/{{ticket:{ID}}}/call", call_ticket)
    r.add_post(f"/api/v1/counters/{{counter:{ID}}}/tickets/{{ticket:{ID}}}/{{action:recall|start|complete|no-show|requeue|transfer}}",
               ticket_action)
    r.add_post(f"/api/v1/counters/{{counter:{ID}}}/{{status:open|pause|close}}", counter_status)
    r.add_get(f"/api/v1/counters/{{counter:{ID}}}", get_counter)
    r.add_post("/api/v1/staff/login", staff_login)
    r.add_post("/api/v1/staff/logout", staff_logout)
    r.add_get("/api/v1/stream", stream)
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    return app
