"""The branch link between a node and HQ, both real (HQ's HTTP server on 127.0.0.1, the node's
SQLite in tmp_path), in one process so each step can be watched."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.config import load_config
from appliance.node import Node
from appliance.uplink import UplinkService, from_config
from sync.keys import load_or_create_key
from sync.protocol import PREFIX, PeerClient, PeerError

from linktest import await_for, enroll_sample, midday_timezone, start_hq_in_process


@pytest.fixture()
async def hq(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession, object]]:
    runner, url, app = await start_hq_in_process(tmp_path / "hq")
    async with aiohttp.ClientSession() as session:
        try:
            yield url, session, app
        finally:
            await runner.cleanup()


async def start_node(folder: Path, device: str = "kiosk") -> tuple[Node, UplinkService]:
    node = Node(load_config(folder / f"{device}.toml"))
    node.open()
    uplink = from_config(node.config)
    assert uplink is not None
    await node.start([uplink])
    return node, uplink


def hq_rows(app: object, sql: str, args: tuple = ()) -> list[tuple]:
    from hq.web import HQ_KEY
    path = app[HQ_KEY].settings.database_path  # type: ignore[index]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return c.execute(sql, args).fetchall()


async def test_tickets_go_up_and_hq_config_and_bookings_come_down(tmp_path, hq):
    url, session, app = hq
    folder = tmp_path / "branch"
    await enroll_sample(session, url, folder, tz=midday_timezone())
    node, uplink = await start_node(folder)
    try:
        tickets = [await node.write(lambda c: node.branch.issue(c, {"service": "general"})) for _ in range(3)]
        await await_for(lambda: _true(uplink.status == "online" and uplink.pending == 0))
        rows = hq_rows(app, "SELECT origin, seq, type FROM events WHERE origin = 'kiosk' ORDER BY seq")
        assert [r[2] for r in rows].count("ticket.issued") == 3
        assert [r[1] for r in rows] == list(range(1, len(rows) + 1))  # exactly once, gapless
        # HQ's config events were pulled and folded; the roster kept the number ranges.
        assert await node.read(lambda c: c.execute("SELECT count(*) FROM events WHERE origin LIKE 'hq:%'").fetchone()[0]) > 0
        model = await node.read(lambda c: node.branch.model(c))
        assert model.roster["kiosk"].numbers == (1, 599) and set(model.services) == {"general", "payments", "documents"}
        # a booking made at HQ reaches the node and checks in by its typed code
        async with session.get(f"{url}/api/v1/public/branches/kigali-main/availability",
                               params={"service": "general", "date": _today(model)}) as r:
            slot = next(s for s in (await r.json())["slots"] if s["available"])
        async with session.post(f"{url}/api/v1/public/bookings", json={
                "branch": "kigali-main", "service": "general", "start": slot["start"], "email": "a@example.org"}) as r:
            booking = await r.json()
            assert r.status == 201, booking
        await await_for(lambda: node.read(lambda c: c.execute(
            "SELECT status FROM bookings WHERE code = ?", (booking["code"],)).fetchone()))
        ticket = await node.write(lambda c: node.branch.issue(c, {"booking_code": booking["code"]}))
        assert ticket["booking_code"] == booking["code"]
        assert uplink.view()["status"] == "online" and uplink.view()["last_error"] is None
        assert tickets[0]["label"] == "A001"
    finally:
        await node.stop()


async def test_hq_refuses_unknown_devices_and_other_branches(tmp_path, hq):
    url, session, app = hq
    folder = tmp_path / "branch"
    await enroll_sample(session, url, folder, tz="UTC")
    key = load_or_create_key(folder / "data" / "kiosk")
    stranger = load_or_create_key(tmp_path / "stranger")
    good = PeerClient(session, url, device="kiosk", branch="kigali-main", key=key, peer_device="hq:kigali-main")
    assert (await good.hello())["device"] == "hq:kigali-main"
    for client in (PeerClient(session, url, device="kiosk", branch="other-branch", key=key, peer_device="hq:other-branch"),
                   PeerClient(session, url, device="ghost", branch="kigali-main", key=stranger, peer_device="hq:kigali-main"),
                   PeerClient(session, url, device="kiosk", branch="kigali-main", key=stranger, peer_device="hq:kigali-main"),
                   # the branch's own key, but a request meant for a LAN peer or for nobody in particular
                   PeerClient(session, url, device="kiosk", branch="kigali-main", key=key, peer_device="counter-1"),
                   PeerClient(session, url, device="kiosk", branch="kigali-main", key=key)):
        with pytest.raises(PeerError) as err:
            await client.hello()
        assert err.value.status in (401, 403)


def _today(model) -> str:
    from datetime import datetime
    return datetime.now(model.tz).date().isoformat()


async def _true(value: bool) -> bool:
    return value


async def test_hq_config_events_have_exactly_the_shapes_the_branch_writes(tmp_path, hq):
    """What HQ sends equals appliance.model.config_events of the same branch, type by type,
    so the branch folds it and a node restart does not re-assert its file over it."""
    from appliance.model import config_events

    url, session, app = hq
    folder = tmp_path / "branch"
    token = await enroll_sample(session, url, folder, tz="Africa/Kigali")
    async with session.get(f"{url}/api/v1/branches/kigali-main/outbox", params={"limit": 1000},
                           headers={"Authorization": f"Bearer {token}"}) as r:
        events = (await r.json())["events"]
    from appliance.events import HQ_TYPES
    assert {e["type"] for e in events} <= HQ_TYPES  # HQ emits only what the shared contract names
    latest: dict[tuple[str, str], dict] = {}
    for e in events:
        p = e["payload"]
        latest[(e["type"], p["id"] if e["type"] in ("config.service", "config.counter") else "branch")] = p
    for type_, payload in config_events(load_config(folder / "kiosk.toml")):
        key = (type_, payload["id"] if type_ in ("config.service", "config.counter") else "branch")
        assert latest[key] == payload, type_


async def test_hq_refuses_broken_chain_equivocation_future_and_huge_integers_and_keeps_the_good(tmp_path, hq):
    """One push holding good events and every kind of bad one: a 422 with a reason for each bad
    event (never a 500), and the good events stored and acknowledged in the version vector."""
    import time

    from sync.envelope import Event
    from sync.protocol import H_TO, PREFIX, encode, sign_headers

    url, session, app = hq
    folder = tmp_path / "branch"
    await enroll_sample(session, url, folder, tz="UTC")
    key = load_or_create_key(folder / "data" / "kiosk")
    now = int(time.time() * 1000)

    def event(seq: int, prev: str, payload: dict, hlc: int | None = None) -> Event:
        return Event("kiosk", seq, (now << 16) + seq if hlc is None else hlc, "note", 1, payload, "kigali-main",
                     prev).signed(key)

    e1 = event(1, "", {"n": 1})
    e2 = event(2, e1.hash, {"n": 2})
    twin = event(2, e1.hash, {"n": "other"})  # kiosk signs a second event for seq 2: equivocation
    broken = event(3, "00" * 32, {"n": 3})  # prev is not e2's hash
    future = event(3, e2.hash, {"n": 3}, hlc=(now + 3_600_000) << 16)  # an hour ahead of HQ
    huge_seq = {**e1.to_dict(), "seq": 1 << 63}
    huge_hlc = {**e1.to_dict(), "hlc": 1 << 63}
    huge_payload = event(4, e2.hash, {"n": 1 << 63}).to_dict()
    body = encode({"events": [huge_seq, e1.to_dict(), twin.to_dict(), e2.to_dict(), broken.to_dict(),
                              future.to_dict(), huge_hlc, huge_payload]})
    path = f"{PREFIX}/push"
    headers = sign_headers(key, device="kiosk", branch="kigali-main", method="POST", path=path, body=body,
                           to="hq:kigali-main")
    async with session.post(url + path, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
        assert r.status == 422, await r.text()
        answer = await r.json()
    reasons = sorted((x["seq"] or 0, x["reason"]) for x in answer["reasons"])
    # twin and e2 arrive in one batch: whichever is stored first, the other equivocates
    assert reasons == [(0, "malformed"), (1, "malformed"), (2, "equivocation"), (3, "broken_chain"),
                       (3, "future"), (4, "malformed")], answer
    assert answer["accepted"] == 2 and answer["vv"]["kiosk"] == 2
    assert "refused" == answer["error"]["code"]
    # The answer is signed by HQ for the asker, like any other.
    assert r.headers[H_TO] == "kiosk"
    # A pull with a version vector HQ cannot store is a 400 with the reason, not a 500.
    body = encode({"vv": {"kiosk": 1 << 63}, "limit": 10})
    path = f"{PREFIX}/pull"
    headers = sign_headers(key, device="kiosk", branch="kigali-main", method="POST", path=path, body=body,
                           to="hq:kigali-main")
    async with session.post(url + path, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
        assert r.status == 400 and "vv" in (await r.json())["error"]["message"]


@pytest.mark.parametrize("path, message", [
    ("/digests", {"from": "9999-12-31", "to": "9999-12-31"}), ("/digests", {"from": "0001-01-01", "to": "0001-01-02"}),
    ("/digests", {"from": "6500-01-01", "to": "6500-01-01"}), ("/inventory", {"day": "9999-12-31"}),
    ("/inventory", {"day": "9998-12-31"}), ("/inventory", {"day": "1969-12-31"})])
async def test_link_day_queries_out_of_range_are_a_4xx_with_a_reason(tmp_path, hq, path, message):
    url, session, app = hq
    folder = tmp_path / "branch"
    await enroll_sample(session, url, folder, tz="UTC")
    key = load_or_create_key(folder / "data" / "kiosk")
    client = PeerClient(session, url, device="kiosk", branch="kigali-main", key=key, peer_device="hq:kigali-main")
    with pytest.raises(PeerError) as err:
        await client.request("POST", f"{PREFIX}{path}", message)
    assert err.value.status == 400 and "range" in str(err.value), err.value
