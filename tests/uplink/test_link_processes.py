"""End to end with real processes on 127.0.0.1: a `smartq node` kiosk and `python -m hq`, the
branch's WAN a socat forwarder that the test can cut."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from procs import NodeProcess

from linktest import HQProcess, Proxy, admin_token, enroll_sample, midday_timezone, wait_for

pytestmark = pytest.mark.slow
BRANCH = "kigali-main"


def hq_state(kiosk: NodeProcess) -> dict:
    status, body = kiosk.request("GET", "/api/v1/state")
    assert status == 200, body
    return body["hq"]


def hq_events(hq: HQProcess, origin: str) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
        return c.execute("SELECT seq, type FROM events WHERE origin = ? ORDER BY seq", (origin,)).fetchall()


def book(hq: HQProcess, tz: str) -> dict:
    today = datetime.now(ZoneInfo(tz)).date().isoformat()
    with urllib.request.urlopen(f"{hq.url}/api/v1/public/branches/{BRANCH}/availability?service=general&date={today}") as r:
        slot = next(s for s in json.load(r)["slots"] if s["available"])
    req = urllib.request.Request(f"{hq.url}/api/v1/public/bookings", method="POST",
                                 data=json.dumps({"branch": BRANCH, "service": "general", "start": slot["start"],
                                                  "email": "citizen@example.org"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201
        return json.load(r)


def admin_get(hq: HQProcess, token: str, path: str) -> dict:
    req = urllib.request.Request(f"{hq.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def test_branch_and_hq_processes_meet_after_outages(tmp_path: Path):
    tz = midday_timezone()
    hq = HQProcess(tmp_path / "hq").start()
    proxy = kiosk = None
    try:
        proxy = Proxy(hq.port).start()

        async def enroll() -> str:
            async with aiohttp.ClientSession() as session:
                await enroll_sample(session, hq.url, tmp_path / "branch", tz=tz, link_url=proxy.url)
                return await admin_token(session, hq.url)
        token = asyncio.run(enroll())
        kiosk = NodeProcess(tmp_path / "branch" / "kiosk.toml", log_path=tmp_path / "kiosk.log")
        wait_for(lambda: hq_state(kiosk)["status"] == "online")

        # 1. HQ is down: tickets are made all the same; after HQ is back they are there exactly once.
        hq.stop()
        labels, status_urls = [], []
        for _ in range(5):
            status, ticket = kiosk.request("POST", "/api/v1/tickets", {"service": "general"})
            assert status == 201, ticket
            labels.append(ticket["label"])
            status_urls.append(ticket["status_url"])
        view = wait_for(lambda: (v := hq_state(kiosk))["status"] == "offline" and v["pending"] >= 5 and v)
        assert view["last_error"]
        hq.start()
        wait_for(lambda: (v := hq_state(kiosk))["status"] == "online" and v["pending"] == 0)
        events = hq_events(hq, "kiosk")
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1))  # each once, no gap
        assert sum(1 for _, t in events if t == "ticket.issued") == 5
        today = datetime.now(ZoneInfo(tz)).date().isoformat()
        rows = admin_get(hq, token, f"/branches/{BRANCH}/analytics?from={today}&to={today}")["rows"]
        assert sum(r["tickets"] for r in rows) == 5
        live = admin_get(hq, token, f"/branches/{BRANCH}/live")
        assert sum(s["waiting"] for s in live["services"]) == 5
        # each ticket's status link (public_url/t/<token>) is known to HQ by its token alone
        assert all(u.startswith(f"{hq.url}/t/") for u in status_urls)
        with urllib.request.urlopen(f"{hq.url}/api/v1/public/tickets/{status_urls[2].rsplit('/', 1)[1]}") as r:
            third = json.load(r)
        assert (third["label"], third["position"], third["status"]) == (labels[2], 3, "waiting")

        # 2. A booking made at HQ reaches the kiosk: its typed code checks in.
        online = book(hq, tz)

        def checked_in() -> dict | None:
            status, body = kiosk.request("POST", "/api/v1/tickets", {"booking_code": online["code"]})
            return body if status == 201 else None
        ticket = wait_for(checked_in)
        assert ticket["booking_code"] == online["code"] and ticket["service"] == "general"

        # 3. The branch is cut off (HQ up): a booking made now checks in from its signed QR token.
        proxy.cut()
        wait_for(lambda: hq_state(kiosk)["status"] == "offline")
        offline = book(hq, tz)
        status, body = kiosk.request("POST", "/api/v1/tickets", {"booking_code": offline["token"]})
        assert status == 201, body
        assert body["booking_code"] == offline["code"]
        token_ticket = body
        status, body = kiosk.request("POST", "/api/v1/tickets", {"booking_code": offline["token"]})
        assert status == 409 and body["error"]["code"] == "already_checked_in"
        # ... and once the link is back, HQ sees that check-in.
        proxy = Proxy(hq.port, port=proxy.port).start()
        wait_for(lambda: (v := hq_state(kiosk))["status"] == "online" and v["pending"] == 0)
        with urllib.request.urlopen(f"{hq.url}/api/v1/public/bookings/{offline['code']}/status?token={offline['token']}") as r:
            seen = json.load(r)
        assert seen["ticket"] is not None and seen["ticket"]["label"] == token_ticket["label"], seen
    finally:
        if kiosk is not None:
            kiosk.stop()
        if proxy is not None:
            proxy.cut()
        hq.stop()
