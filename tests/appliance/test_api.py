"""The local API (DESIGN §6) on a real node behind a real aiohttp server."""

from __future__ import annotations

import asyncio
import json

import pytest

from appliance.api import create_app
from appliance.config import load_config
from appliance.node import Node
from sync.log import all_events

from .conftest import ManualClock, copy_branch


@pytest.fixture
async def api(sample_template, tmp_path, aiohttp_client):
    paths = copy_branch(sample_template, tmp_path / "b")
    clock = ManualClock()
    node = Node(load_config(paths["kiosk"]), clock=clock)
    await asyncio.to_thread(node.open)
    await node.start()
    client = await aiohttp_client(create_app(node))
    client.node, client.clock = node, clock
    yield client
    await node.stop()


async def login(client, counter="c1", pin="1234"):
    r = await client.post("/api/v1/staff/login", json={"counter": counter, "pin": pin})
    assert r.status == 200, await r.text()
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def test_issue_call_serve_cycle(api):
    r = await api.post("/api/v1/tickets", json={"service": "general", "language": "fr"})
    assert r.status == 201
    t = await r.json()
    assert {k: t[k] for k in ("label", "service", "status", "position", "language")} == {
        "label": "A001", "service": "general", "status": "waiting", "position": 1, "language": "fr"}
    assert t["issued_at"].endswith("+02:00")  # Kigali time
    auth = await login(api)
    assert (await api.post("/api/v1/counters/c1/open", headers=auth)).status == 200
    r = await api.post("/api/v1/counters/c1/call-next", headers=auth)
    assert r.status == 200 and (await r.json())["id"] == t["id"]
    for action, status in (("start", "serving"), ("complete", "completed")):
        r = await api.post(f"/api/v1/counters/c1/tickets/{t['id']}/{action}", headers=auth)
        assert r.status == 200 and (await r.json())["status"] == status
    assert (await api.post("/api/v1/counters/c1/call-next", headers=auth)).status == 204
    state = await (await api.get("/api/v1/state")).json()
    assert state["recent_calls"][0]["label"] == "A001"
    assert state["counters"][0]["status"] == "open" and state["counters"][0]["staff"] == "amina"
    assert len(state["state_hash"]) == 64 and state["peers"] == []


async def test_counter_actions_need_a_staff_session_for_that_counter(api):
    assert (await api.post("/api/v1/counters/c1/open")).status == 401
    auth = await login(api, "c2")
    r = await api.post("/api/v1/counters/c1/open", headers=auth)
    assert r.status == 403
    r = await api.post("/api/v1/staff/login", json={"counter": "c1", "pin": "0000"})
    assert r.status == 401 and (await r.json())["error"]["code"] == "wrong_pin"


async def test_repeated_wrong_pins_lock_the_counter_out(api):
    for _ in range(5):
        await api.post("/api/v1/staff/login", json={"counter": "c1", "pin": "9999"})
    r = await api.post("/api/v1/staff/login", json={"counter": "c1", "pin": "1234"})
    assert r.status == 429


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"service": 7}).encode(), 400, "wrong type"),
    (json.dumps({"service": "general", "priority": "high"}).encode(), 400, "wrong type"),
    (json.dumps({"service": "general", "priority": True}).encode(), 400, "wrong type"),
    (json.dumps({"service": "general", "priority": 9}).encode(), 400, "priority"),
    (json.dumps({"service": "general", "colour": "red"}).encode(), 400, "unknown field"),
    (json.dumps({"service": "general", "phone": "call me"}).encode(), 400, "phone"),
    (json.dumps({"service": "general", "language": "de"}).encode(), 400, "not offered"),
    (json.dumps({"service": "nope"}).encode(), 404, "unknown service"),
    (json.dumps({"booking_code": "NOPE"}).encode(), 404, "unknown booking"),
    (json.dumps({}).encode(), 400, "give a service"),
    (b"x" * 70_000, 413, ""),
])
async def test_bad_input_gets_a_json_4xx_and_changes_nothing(api, body, status, fragment):
    before = (await (await api.get("/api/v1/state")).json())["state_hash"]
    r = await api.post("/api/v1/tickets", data=body, headers={"Content-Type": "application/json"})
    assert r.status == status
    error = (await r.json())["error"]
    assert fragment in error["message"] and error["code"]
    after = (await (await api.get("/api/v1/state")).json())["state_hash"]
    assert before == after


async def test_unknown_things_are_404_and_conflicts_409(api):
    auth = await login(api)
    assert (await api.get("/api/v1/tickets/20261118-Z999")).status == 404
    assert (await api.post("/api/v1/counters/c1/tickets/20261118-Z999/start", headers=auth)).status == 404
    assert (await api.get("/api/v1/nowhere")).status == 404
    assert (await api.delete("/api/v1/tickets")).status == 405
    t = await (await api.post("/api/v1/tickets", json={"service": "general"})).json()
    r = await api.post(f"/api/v1/counters/c1/tickets/{t['id']}/complete", headers=auth)
    assert r.status == 409 and (await r.json())["error"]["code"] == "invalid_transition"
    r = await api.post("/api/v1/counters/c1/call-next", headers=auth)
    assert r.status == 409 and (await r.json())["error"]["code"] == "counter_not_open"
    r = await api.post(f"/api/v1/counters/c1/tickets/{t['id']}/transfer", headers=auth, json={})
    assert r.status == 400


async def test_stream_sends_each_committed_change_with_its_ticket(api):
    async with api.get("/api/v1/stream") as stream:
        hello = await stream.content.readuntil(b"\n\n")
        assert b"event: hello" in hello
        peers = await stream.content.readuntil(b"\n\n")
        assert peers == b'event: peers\ndata: {"peers": []}\n\n'  # no LAN service: no peers
        issued = await (await api.post("/api/v1/tickets", json={"service": "payments"})).json()
        raw = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), timeout=10)
    lines = dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())
    assert lines["event"] == "ticket.issued"
    data = json.loads(lines["data"])
    assert data["ticket"]["label"] == issued["label"] == "B001"
    assert data["event"]["origin"] == "kiosk" and "sig" not in data["event"]


async def test_cancel_and_call_a_specific_ticket(api):
    auth = await login(api)
    await api.post("/api/v1/counters/c1/open", headers=auth)
    a = await (await api.post("/api/v1/tickets", json={"service": "general"})).json()
    b = await (await api.post("/api/v1/tickets", json={"service": "general"})).json()
    r = await api.post(f"/api/v1/counters/c1/tickets/{b['id']}/call", headers=auth)
    assert r.status == 200 and (await r.json())["status"] == "called"
    r = await api.post(f"/api/v1/tickets/{a['id']}/cancel", json={"reason": "left"})
    assert (await r.json())["status"] == "cancelled"
    assert (await api.post(f"/api/v1/tickets/{b['id']}/cancel")).status == 409


async def test_health_metrics_and_openapi(api):
    assert (await (await api.get("/healthz")).json())["status"] == "ok"
    await api.post("/api/v1/tickets", json={"service": "general"})
    await api.get("/api/v1/state")
    text = await (await api.get("/metrics")).text()
    assert 'smartq_events_committed_total{source="local",type="ticket.issued"} 1.0' in text
    assert 'smartq_tickets_waiting{service="general"} 1.0' in text
    doc = await (await api.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/api/v1/tickets" in doc["paths"]


async def test_a_web_page_cannot_drive_the_node(api):
    """A page in a browser on the device (another origin) or a DNS-rebound name is refused;
    the UIs' own client (no Origin) and same-origin requests are served."""
    ok = await api.post("/api/v1/tickets", json={"service": "general"})
    assert ok.status == 201
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Host": "evil.example:8401"}, {"Host": "attacker.example"}):
        r = await api.post("/api/v1/tickets", json={"service": "general"}, headers=headers)
        assert r.status == 403, (headers, r.status)
        assert (await r.json())["error"]["code"] in ("bad_origin", "bad_host")
        r = await api.get("/api/v1/state", headers=headers)
        assert r.status == 403, headers
    same = f"http://{api.server.host}:{api.server.port}"
    assert (await api.get("/api/v1/state", headers={"Origin": same, "Sec-Fetch-Site": "same-origin"})).status == 200
    assert (await api.get("/api/v1/state", headers={"Host": f"localhost:{api.server.port}"})).status == 200


async def test_cancel_at_a_counter_device_needs_a_staff_session(sample_template, tmp_path, aiohttp_client):
    """A kiosk cancels for the citizen at its screen; any other device only with a staff session."""
    paths = copy_branch(sample_template, tmp_path / "b")
    node = Node(load_config(paths["counter-1"]), clock=ManualClock())
    await asyncio.to_thread(node.open)
    await node.start()
    try:
        client = await aiohttp_client(create_app(node))
        kiosk = Node(load_config(paths["kiosk"]), clock=ManualClock())
        await asyncio.to_thread(kiosk.open)
        ticket = kiosk.writer.call(lambda c: kiosk.branch.issue(c, {"service": "general"}))
        events = kiosk.writer.call(lambda c: [e.to_dict() for e in all_events(c)])
        await asyncio.to_thread(kiosk.close)
        await node.write(lambda c: node.log.ingest(c, events))
        r = await client.post(f"/api/v1/tickets/{ticket['id']}/cancel")
        assert r.status == 401
        r = await client.post(f"/api/v1/tickets/{ticket['id']}/cancel", headers=await login(client))
        assert r.status == 200 and (await r.json())["status"] == "cancelled"
    finally:
        await node.stop()


async def test_free_text_is_normalized_and_stripped_of_control_and_bidi_characters(api):
    r = await api.post("/api/v1/tickets", json={"service": "general"})
    ticket = await r.json()
    reason = "Cafe\u0301\u202e gauche\x1b[2J\nleft"
    r = await api.post(f"/api/v1/tickets/{ticket['id']}/cancel", json={"reason": reason})
    assert r.status == 200
    stored = api.node.writer.call(lambda c: c.execute(
        "SELECT payload FROM events WHERE type = 'ticket.cancelled'").fetchone()[0])
    assert json.loads(stored)["reason"] == "Café gauche[2J left"
    r = await api.post(f"/api/v1/tickets/{ticket['id']}/cancel", json={"reason": "\u202e\u2066\x00"})
    assert r.status == 400  # nothing left once cleaned


async def test_a_pin_guesser_stays_locked_out_when_moving_to_another_counter(sample_template, tmp_path, aiohttp_client):
    """Wrong PINs for a staff member are events: counter-2 counts those made at counter-1."""
    paths = copy_branch(sample_template, tmp_path / "b")
    clock = ManualClock()
    nodes = []
    try:
        for device in ("counter-1", "counter-2"):
            node = Node(load_config(paths[device]), clock=clock)
            await asyncio.to_thread(node.open)
            await node.start()
            nodes.append(node)
        one, two = [await aiohttp_client(create_app(n)) for n in nodes]
        limit = nodes[0].config.security.max_pin_failures
        for _ in range(limit):
            r = await one.post("/api/v1/staff/login", json={"counter": "c1", "pin": "9999", "staff": "amina"})
            assert r.status == 401
        r = await one.post("/api/v1/staff/login", json={"counter": "c1", "pin": "1234", "staff": "amina"})
        assert r.status == 429  # locked out, even with her right PIN
        # Replication (the real log: counter-1's events ingested by counter-2).
        events = nodes[0].writer.call(lambda c: [e.to_dict() for e in all_events(c)])
        await nodes[1].write(lambda c: nodes[1].log.ingest(c, events))
        r = await two.post("/api/v1/staff/login", json={"counter": "c2", "pin": "1234", "staff": "amina"})
        assert r.status == 429 and "amina" in (await r.json())["error"]["message"]
        # Another member is not locked out; nor is amina once the lock-out has passed.
        r = await two.post("/api/v1/staff/login", json={"counter": "c2", "pin": "2345", "staff": "jean"})
        assert r.status == 200
        clock.ms += nodes[0].config.security.lockout_s * 1000 + 1
        r = await two.post("/api/v1/staff/login", json={"counter": "c2", "pin": "1234", "staff": "amina"})
        assert r.status == 200
        stored = nodes[1].writer.call(lambda c: [p for (p,) in c.execute(
            "SELECT payload FROM events WHERE type = 'staff.pin_failed'")])
        assert len(stored) == limit and not any("9999" in p for p in stored)  # no PIN recorded
    finally:
        for node in nodes:
            await node.stop()
