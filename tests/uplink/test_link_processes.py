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


def test_hq_state_of_the_branch_equals_every_nodes_after_partitions_transfers_and_conflicting_calls(tmp_path: Path):
    """Three real nodes that meet only through a real HQ process. HQ goes away (each node is
    alone), two counters serve, call and transfer the same tickets; once HQ is back, HQ's state
    hash of the branch (the branch fold of the events it holds) equals every node's, and HQ's
    ticket view (what the citizens' pages read) says what the nodes' fold says."""
    from appliance.config import load_config
    from appliance.projection import state_hash
    from hq.live import status_of

    tz = midday_timezone()
    hq = HQProcess(tmp_path / "hq").start()
    devices = ("kiosk", "counter-1", "counter-2")
    nodes: dict[str, NodeProcess] = {}
    try:
        async def enroll() -> str:
            async with aiohttp.ClientSession() as session:
                await enroll_sample(session, hq.url, tmp_path / "branch", tz=tz, devices=devices)
                return await admin_token(session, hq.url)
        token = asyncio.run(enroll())
        for d in devices:  # counters act without a staff PIN session here (as tests/branch does)
            path = tmp_path / "branch" / f"{d}.toml"
            path.write_text(path.read_text().replace("require_staff_login = true", "require_staff_login = false"))
        for d in devices:
            nodes[d] = NodeProcess(tmp_path / "branch" / f"{d}.toml", log_path=tmp_path / f"{d}.log")
        dbs = {d: load_config(tmp_path / "branch" / f"{d}.toml").data_dir / "smartq.db" for d in devices}
        for d in devices:
            wait_for(lambda d=d: hq_state(nodes[d])["status"] == "online")
        issued = []
        for _ in range(4):
            status, ticket = nodes["kiosk"].request("POST", "/api/v1/tickets", {"service": "general"})
            assert status == 201, ticket
            issued.append(ticket["id"])
        x, y, z, w = issued
        assert nodes["counter-1"].request("POST", "/api/v1/counters/c1/open")[0] == 200
        assert nodes["counter-2"].request("POST", "/api/v1/counters/c2/open")[0] == 200
        for d in ("counter-1", "counter-2"):  # the counters learnt the tickets through HQ
            wait_for(lambda d=d: all(nodes[d].request("GET", f"/api/v1/tickets/{t}")[0] == 200 for t in issued))

        def node_hashes() -> dict[str, str]:
            out = {}
            for d, path in dbs.items():
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
                    out[d] = state_hash(c)
            return out

        def act(device: str, counter: str, ticket: str, *actions: str, body: dict | None = None) -> dict:
            path = f"/api/v1/counters/{counter}/tickets/{ticket}"
            status, answer = nodes[device].request("POST", f"{path}/call")
            assert status == 200, answer
            for a in actions:
                status, answer = nodes[device].request("POST", f"{path}/{a}", body if a == "transfer" else None)
                assert status == 200, (a, answer)
            return answer

        # HQ is away: every node is alone (the sample branch has no LAN peers).
        hq.stop()
        act("counter-1", "c1", x, "start", "complete")
        act("counter-2", "c2", x, "start", "complete")          # both served x: conflicting calls
        act("counter-1", "c1", y, "start")
        act("counter-2", "c2", y, "transfer", body={"to_service": "documents"})  # concurrent with a start
        act("counter-2", "c2", z, "transfer", body={"to_service": "payments"})   # a transfer nobody contests
        act("counter-1", "c1", w)
        act("counter-2", "c2", w)  # both call w
        for _ in range(2):
            assert nodes["kiosk"].request("POST", "/api/v1/tickets", {"service": "general"})[0] == 201
        hq.start()

        def converged() -> tuple[str, dict[str, str]] | None:
            hashes = node_hashes()
            at_hq = admin_get(hq, token, f"/branches/{BRANCH}/link")["state_hash"]
            return (at_hq, hashes) if set(hashes.values()) == {at_hq} else None
        at_hq, hashes = wait_for(converged, timeout=90)
        assert len(set(hashes.values())) == 1 and at_hq in hashes.values()

        # HQ's ticket view is the fold's: status, counter and service as every node sees them.
        with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
            c.row_factory = sqlite3.Row
            rows = {r["id"]: r for r in c.execute("SELECT * FROM tickets WHERE branch_id = ?", (BRANCH,))}
        for t in (x, y, z, w):
            status, node_view = nodes["counter-1"].request("GET", f"/api/v1/tickets/{t}")
            assert status == 200
            got = (status_of(rows[t]), rows[t]["counter"], rows[t]["service"])
            assert got == (node_view["status"], node_view["counter"], node_view["service"]), (t, got, node_view)
            if t in (x, w):  # two counters held it: one won, the other is told it lost
                assert node_view["superseded"], node_view
        assert status_of(rows[z]) == "waiting" and rows[z]["service"] == "payments"  # transferred: waiting again
        # the start voids the concurrent transfer (c1 then finished y by calling w)
        assert status_of(rows[y]) == "completed" and rows[y]["service"] == "general"
    finally:
        for node in nodes.values():
            node.stop()
        hq.stop()
