"""Helpers for the web page tests: a seeded HQ (five languages, a capacity-1 service), a form
client that keeps cookies and sends the CSRF token, and branch events signed by a test device."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from hq.signing import event_hash, public_key_hex, sign_envelope
from hqtest import Server, api

LANGS = ["en", "fr", "rw", "sw", "es"]
V = "/api/v1"


async def seed_web(srv: Server, session: aiohttp.ClientSession) -> None:
    """acme-main speaks the five languages, has an address and a capacity-1 service 'passport'."""
    sup = srv.h("super")
    await api(session, "PATCH", f"{srv.url}{V}/branches/acme-main", 200, headers=sup,
              json={"languages": LANGS, "address": "KN 3 Ave, Kigali"})
    await api(session, "PUT", f"{srv.url}{V}/branches/acme-main/services/passport", 200, headers=sup, json={
        "letter": "P", "slot_minutes": 30, "capacity": 1,
        "names": {"en": "Passports", "fr": "Passeports", "rw": "Pasiporo", "sw": "Pasipoti", "es": "Pasaportes"}})


class Browser:
    """An HTTP client that behaves like a browser without JavaScript: cookies, forms, CSRF."""

    def __init__(self, base: str, language: str | None = None) -> None:
        headers = {"Accept-Language": language} if language else {}
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)

    async def close(self) -> None:
        await self.session.close()

    def cookie(self, name: str) -> str | None:
        c = self.session.cookie_jar.filter_cookies(URL(self.base)).get(name)
        return c.value if c else None

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str], csrf: bool = True) -> tuple[int, str, str | None]:
        if csrf and self.cookie("smartq_csrf") is None:
            await self.get("/")
        form = {**data, **({"csrf_token": self.cookie("smartq_csrf") or ""} if csrf else {})}
        async with self.session.post(self.base + path, data=form, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location")


def h1(html: str) -> str:
    m = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    return re.sub(r"<[^>]+>", "", m[1]).strip() if m else ""


def free_starts(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'name="start" value="(\d+)">', html)]


def db(srv: Server) -> Any:
    """A direct connection to the server's database (SQLite or PostgreSQL, hqtest.TestDb)."""
    from hqtest import connect_db
    return connect_db(srv)


class Device:
    """A branch device signing ticket events for HQ's ingest (as the branch link delivers them)."""

    def __init__(self, device_id: str, branch: str = "acme-main") -> None:
        self.id, self.branch, self.key = device_id, branch, Ed25519PrivateKey.generate()
        self.seq, self.prev = 0, ""

    async def register(self, srv: Server, session: aiohttp.ClientSession, role: str = "kiosk") -> None:
        await api(session, "POST", f"{srv.url}{V}/branches/{self.branch}/devices", 201, headers=srv.h("acme-admin"),
                  json={"id": self.id, "role": role, "public_key": public_key_hex(self.key.public_key())})

    def event(self, type_: str, payload: dict[str, Any], at_s: float) -> dict[str, Any]:
        self.seq += 1
        e = sign_envelope(self.key, {"origin": self.id, "seq": self.seq, "hlc": int(at_s * 1000) << 16, "type": type_,
                                     "schema": 1, "payload": payload, "branch": self.branch, "prev": self.prev})
        self.prev = event_hash(e)
        return e


def issued(dev: Device, day: str, n: int, at: float, token: str, service: str = "general",
           language: str = "en") -> dict[str, Any]:
    return dev.event("ticket.issued", {"ticket": f"{day}-A{n:03d}", "service": service, "number": n,
                                       "label": f"A{n:03d}", "day": day, "priority": 0, "language": language,
                                       "status_token": token}, at)


def shot_dir() -> Path:
    path = Path(__file__).resolve().parents[3] / "artifacts" / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path
