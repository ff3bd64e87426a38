"""A small in-memory server speaking the node's local API as written in notes/contracts.md.

It exists so the UI view-models can be tested against a real HTTP server on 127.0.0.1 with
error cases a real node cannot be made to produce on demand (printer failure, 4xx on a given
call). Multi-process UI tests use real ``smartq node`` processes instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SERVICES = [
    {"id": "general", "letter": "A", "names": {"en": "General enquiries", "fr": "Renseignements"}},
    {"id": "payments", "letter": "B", "names": {"en": "Payments", "fr": "Paiements"}},
]
COUNTERS = [
    {"id": "c1", "name": "Counter 1", "services": ["general", "payments"]},
    {"id": "c2", "name": "Counter 2", "services": ["payments"]},
]


@dataclass
class ContractNode:
    """State plus switches tests flip: ``printer_ok``, ``require_login``, ``fail_next``."""

    printer_ok: bool = True
    require_login: bool = False
    pin: str = "1234"
    fail_next: dict[str, tuple[int, str]] = field(default_factory=dict)
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    queues: set[asyncio.Queue[str]] = field(default_factory=set)
    bookings: dict[str, str] = field(default_factory=lambda: {"BK7Q2": "general"})

    def __post_init__(self) -> None:
        for c in COUNTERS:
            self.counters[c["id"]] = {**c, "status": "closed", "current": None, "superseded": []}

    # --- helpers ------------------------------------------------------------------------

    def now_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())

    def waiting(self) -> list[dict[str, Any]]:
        w = [t for t in self.tickets.values() if t["status"] == "waiting"]
        w.sort(key=lambda t: (-t["priority"], t["_n"]))
        for i, t in enumerate(w):
            t["position"] = i + 1
            t["people_ahead"] = i
            t["estimated_wait_s"] = 240 * i
        return w

    def public(self, t: dict[str, Any] | None) -> dict[str, Any] | None:
        if t is None:
            return None
        self.waiting()
        out = {k: v for k, v in t.items() if not k.startswith("_")}
        if out["status"] != "waiting":
            out["position"] = None
        return out

    def counter_view(self, c: dict[str, Any]) -> dict[str, Any]:
        return {**c, "current": self.public(self.tickets.get(c["current"] or ""))}

    def state(self) -> dict[str, Any]:
        waiting = self.waiting()
        services = []
        for s in SERVICES:
            n = sum(1 for t in waiting if t["service"] == s["id"])
            open_c = sum(
                1 for c in self.counters.values() if c["status"] == "open" and s["id"] in c["services"]
            )
            services.append({**s, "waiting": n, "estimated_wait_s": 240 * n, "open_counters": open_c})
        return {
            "branch": {"id": "b1", "name": "Demo branch", "timezone": "UTC",
                       "languages": ["en", "fr", "rw", "sw", "es"]},
            "device": {"id": "fake", "role": "kiosk"},
            "now": self.now_iso(),
            "services": services,
            "counters": [self.counter_view(c) for c in self.counters.values()],
            "recent_calls": list(self.recent[:8]),
            "waiting": [self.public(t) for t in waiting],
            "peers": [],
            "hq": {"connected": False},
            "hardware": {"printer": "ok" if self.printer_ok else "error"},
            "state_hash": str(self.seq),
        }

    def emit(self, etype: str, payload: dict[str, Any], ticket: dict[str, Any] | None = None,
             counter: dict[str, Any] | None = None) -> None:
        self.seq += 1
        env = {"origin": "fake", "seq": self.seq, "hlc": int(time.time() * 1000) << 16,
               "type": etype, "schema": 1, "payload": payload, "branch": "b1", "prev": ""}
        data = {"event": env, "ticket": self.public(ticket),
                "counter": self.counter_view(counter) if counter else None}
        block = f"id: fake:{self.seq}\nevent: {etype}\ndata: {json.dumps(data)}\n\n"
        for q in self.queues:
            q.put_nowait(block)

    def issue(self, service: str, priority: int = 0, language: str = "en",
              phone: str | None = None, booking: str | None = None) -> dict[str, Any]:
        letter = next(s["letter"] for s in SERVICES if s["id"] == service)
        self.numbers[letter] = self.numbers.get(letter, 0) + 1
        label = f"{letter}{self.numbers[letter]:03d}"
        tid = f"20260101-{label}"
        t = {"id": tid, "label": label, "service": service, "status": "waiting",
             "priority": priority, "language": language, "position": None, "people_ahead": 0,
             "estimated_wait_s": 0, "issued_at": self.now_iso(), "called_at": None,
             "started_at": None, "finished_at": None, "counter": None, "recalls": 0,
             "booking_code": booking, "superseded": [], "_n": len(self.tickets)}
        self.tickets[tid] = t
        self.emit("ticket.issued", {"ticket": tid, "service": service, "label": label}, t)
        return t

    def call(self, cid: str, t: dict[str, Any]) -> None:
        c = self.counters[cid]
        t.update(status="called", counter=cid, called_at=self.now_iso())
        c["current"] = t["id"]
        self.recent.insert(0, {"ticket": t["id"], "label": t["label"], "service": t["service"],
                               "counter": cid, "counter_name": c["name"],
                               "called_at": t["called_at"], "recalls": 0})
        self.emit("ticket.called", {"ticket": t["id"], "counter": cid}, t, c)

    # --- the app ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        r = app.router
        r.add_get("/api/v1/state", self._state)
        r.add_post("/api/v1/tickets", self._issue)
        r.add_get("/api/v1/tickets/{id}", self._get_ticket)
        r.add_post("/api/v1/staff/login", self._login)
        r.add_post("/api/v1/counters/{c}/call-next", self._call_next)
        r.add_post("/api/v1/counters/{c}/tickets/{id}/{action}", self._action)
        r.add_post("/api/v1/counters/{c}/{status:open|pause|close}", self._status)
        r.add_get("/api/v1/stream", self._stream)
        return app

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for key, (status, code) in list(self.fail_next.items()):
            if key in request.path:
                del self.fail_next[key]
                return _err(status, code, "injected failure")
        return await handler(request)

    def _auth(self, request: web.Request) -> None:
        if self.require_login and request.headers.get("Authorization") != "Bearer tok-1":
            raise _Err(401, "unauthorized", "staff login required")

    async def _issue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise _Err(400, "bad_json", "body is not JSON")
        booking = body.get("booking_code")
        if booking:
            if booking not in self.bookings:
                raise _Err(404, "unknown_booking", "no such booking")
            service = self.bookings.pop(booking)
        else:
            service = body.get("service")
        if service not in {s["id"] for s in SERVICES}:
            raise _Err(400, "bad_service", "unknown service")
        t = self.issue(service, int(body.get("priority", 0)), body.get("language", "en"),
                       body.get("phone"), booking)
        out = self.public(t)
        assert out is not None
        out["print"] = {"status": "printed" if self.printer_ok else "error"}
        return web.json_response(out, status=201)

    async def _get_ticket(self, request: web.Request) -> web.Response:
        t = self.tickets.get(request.match_info["id"])
        if t is None:
            raise _Err(404, "not_found", "no such ticket")
        return web.json_response(self.public(t))

    async def _login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("counter") not in self.counters or body.get("pin") != self.pin:
            raise _Err(401, "bad_pin", "wrong PIN")
        return web.json_response({"token": "tok-1", "staff": {"id": "s1", "name": "Amina"},
                                  "expires_at": "2099-01-01T00:00:00+00:00"})

    async def _call_next(self, request: web.Request) -> web.Response:
        self._auth(request)
        cid = request.match_info["c"]
        c = self.counters.get(cid)
        if c is None:
            raise _Err(404, "not_found", "no such counter")
        if c["status"] != "open":
            raise _Err(409, "counter_not_open", "open the counter first")
        for t in self.waiting():
            if t["service"] in c["services"]:
                self.call(cid, t)
                return web.json_response(self.public(t))
        return web.Response(status=204)

    async def _action(self, request: web.Request) -> web.Response:
        self._auth(request)
        cid, tid, action = (request.match_info[k] for k in ("c", "id", "action"))
        t = self.tickets.get(tid)
        if t is None or cid not in self.counters:
            raise _Err(404, "not_found", "no such ticket")
        c = self.counters[cid]
        body = await request.json() if request.can_read_body else {}
        allowed = {"call": {"waiting"}, "recall": {"called"}, "start": {"called"},
                   "complete": {"serving"}, "no-show": {"called"}, "requeue": {"no_show"},
                   "transfer": {"called", "serving"}}
        if action not in allowed:
            raise _Err(404, "not_found", "no such action")
        if t["status"] not in allowed[action]:
            raise _Err(409, "bad_state", f"cannot {action} a {t['status']} ticket")
        if action == "call":
            self.call(cid, t)
        elif action == "recall":
            t["recalls"] += 1
            self.emit("ticket.recalled", {"ticket": tid, "counter": cid}, t, c)
        elif action == "start":
            t.update(status="serving", started_at=self.now_iso())
            self.emit("ticket.started", {"ticket": tid, "counter": cid}, t, c)
        else:
            t["status"] = {"complete": "completed", "no-show": "no_show",
                           "requeue": "waiting", "transfer": "waiting"}[action]
            if action == "transfer":
                t["service"] = body.get("to_service") or t["service"]
                t["counter"] = None
            t["finished_at"] = self.now_iso() if action in ("complete", "no-show") else None
            c["current"] = None
            etype = {"complete": "ticket.completed", "no-show": "ticket.no_show",
                     "requeue": "ticket.requeued", "transfer": "ticket.transferred"}[action]
            self.emit(etype, {"ticket": tid, "counter": cid}, t, c)
        return web.json_response(self.public(t))

    async def _status(self, request: web.Request) -> web.Response:
        self._auth(request)
        cid = request.match_info["c"]
        if cid not in self.counters:
            raise _Err(404, "not_found", "no such counter")
        c = self.counters[cid]
        c["status"] = {"open": "open", "pause": "paused", "close": "closed"}[request.match_info["status"]]
        self.emit(f"counter.{c['status'] if c['status'] != 'open' else 'opened'}",
                  {"counter": cid}, None, c)
        return web.json_response(self.counter_view(c))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue()
        self.queues.add(q)
        try:
            await resp.write(b": hello\n\n")
            while True:
                await resp.write((await q.get()).encode())
        finally:
            self.queues.discard(q)


class _Err(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def _err(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def _translate(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Err as e:
        return _err(e.status, e.code, e.message)


def make_app(node: ContractNode) -> web.Application:
    app = node.app()
    app.middlewares.append(_translate)
    return app


async def serve(node: ContractNode, port: int = 0) -> tuple[web.AppRunner, str]:
    """Start the server on 127.0.0.1; return the runner (call ``cleanup``) and base URL."""
    runner = web.AppRunner(make_app(node), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"
