"""Ingest of signed branch events: exactly once, signatures checked, live status and analytics from them."""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq.ingest import ingest_branch_events
from hq.signing import event_hash, public_key_hex, sign_envelope
from hq.web import HQ_KEY
from hqtest import T0, api, connect_db

V = "/api/v1"


class Device:
    def __init__(self, device_id: str, branch: str = "acme-main") -> None:
        self.id, self.branch, self.key = device_id, branch, Ed25519PrivateKey.generate()
        self.seq, self.prev = 0, ""

    def event(self, type_: str, payload: dict, at_s: float) -> dict:
        self.seq += 1
        e = sign_envelope(self.key, {"origin": self.id, "seq": self.seq, "hlc": int(at_s * 1000) << 16, "type": type_,
                                     "schema": 1, "payload": payload, "branch": self.branch, "prev": self.prev})
        self.prev = event_hash(e)
        return e


async def register(server, session, dev: Device) -> None:
    await api(session, "POST", f"{server.url}{V}/branches/{dev.branch}/devices", 201, headers=server.h("acme-admin"),
              json={"id": dev.id, "role": "kiosk", "public_key": public_key_hex(dev.key.public_key())})


def token(n: int) -> str:
    return f"tok{n:03d}".ljust(22, "x")  # the shape of secrets.token_urlsafe(16)


def issue(dev: Device, n: int, at: float, phone: str | None = None) -> dict:
    p = {"ticket": f"20300107-A{n:03d}", "service": "general", "number": n, "label": f"A{n:03d}", "day": "20300107",
         "priority": 0, "language": "en", "status_token": token(n)}
    if phone:
        p["phone"] = phone
    return dev.event("ticket.issued", p, at)


async def test_ingest_is_exactly_once_and_checks_signatures(server, session):
    hq = server.app[HQ_KEY]
    kiosk = Device("kiosk-1")
    await register(server, session, kiosk)
    batch = [issue(kiosk, 1, T0), issue(kiosk, 2, T0 + 60)]
    r1 = await ingest_branch_events(hq, batch)
    r2 = await ingest_branch_events(hq, batch + batch)
    assert (r1.accepted, r1.duplicates, r1.rejected) == (2, 0, [])
    assert (r2.accepted, r2.duplicates) == (0, 4)
    forged = dict(issue(kiosk, 3, T0 + 120), payload={"ticket": "20300107-A999"})
    stranger = Device("kiosk-x")
    other_branch = Device("kiosk-1", branch="beta-main")
    other_branch.key = kiosk.key
    conflicting = sign_envelope(kiosk.key, {**{k: batch[0][k] for k in batch[0] if k != "sig"}, "payload": {"x": 1}})
    r3 = await ingest_branch_events(hq, [forged, stranger.event("ticket.issued", {"ticket": "x"}, T0),
                                         other_branch.event("ticket.issued", {"ticket": "y"}, T0), conflicting,
                                         {"origin": "kiosk-1"}, "junk"])
    # kiosk-1's key signing as a kiosk-1 of another branch: device ids are per organization, so
    # that is an unknown device there (and says nothing about who else is called kiosk-1).
    assert sorted(r["reason"] for r in r3.rejected) == ["bad_signature", "equivocation", "malformed", "malformed",
                                                        "unknown_device", "unknown_device"]
    with connect_db(hq.settings) as c:
        assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


async def test_live_status_and_turn_near(server, session):
    hq = server.app[HQ_KEY]
    kiosk, counter = Device("kiosk-1"), Device("counter-1")
    await register(server, session, kiosk)
    await register(server, session, counter)
    # four waiting; A004 has a phone; "near" is 3 places (default)
    await ingest_branch_events(hq, [issue(kiosk, i, T0 + i * 60, "+41446681800" if i == 4 else None) for i in range(1, 5)])
    st = await api(session, "GET", f"{server.url}{V}/public/tickets/{token(4)}", 200)
    assert (st["status"], st["position"], st["people_ahead"], st["estimated_wait_s"]) == ("waiting", 4, 3, 900)
    with connect_db(hq.settings) as c:
        assert c.execute("SELECT COUNT(*) FROM notifications WHERE kind = 'turn_near'").fetchone()[0] == 0
    t = T0 + 600
    server.clock.t = t + 200  # the branch's events are in HQ's present, not its future
    await ingest_branch_events(hq, [counter.event("ticket.called", {"ticket": "20300107-A001", "counter": "c1"}, t),
                                    counter.event("ticket.started", {"ticket": "20300107-A001", "counter": "c1"}, t + 30),
                                    counter.event("ticket.completed", {"ticket": "20300107-A001", "counter": "c1"}, t + 150)])
    st = await api(session, "GET", f"{server.url}{V}/public/tickets/{token(4)}", 200)
    assert (st["position"], st["people_ahead"], st["estimated_wait_s"]) == (3, 2, 240)  # 2 x 120 s measured
    await ingest_branch_events(hq, [counter.event("ticket.called", {"ticket": "20300107-A002", "counter": "c1"}, t + 200)])
    with connect_db(hq.settings) as c:
        near = c.execute("SELECT recipient, body FROM notifications WHERE kind = 'turn_near'").fetchall()
    assert len(near) == 1 and near[0][0] == "+41446681800" and "A004" in near[0][1]
    done = await api(session, "GET", f"{server.url}{V}/public/tickets/{token(1)}", 200)
    assert done["status"] == "completed" and done["position"] is None
    # only the token opens a ticket: not its guessable id, not a wrong or ill-formed token
    await api(session, "GET", f"{server.url}{V}/public/tickets/20300107-A001", 404)
    await api(session, "GET", f"{server.url}{V}/public/tickets/{token(9)}", 404)
    await api(session, "GET", f"{server.url}{V}/public/tickets/nope", 404)
    await api(session, "GET", f"{server.url}{V}/public/branches/acme-main/tickets/20300107-A001/status", 404)


async def test_analytics_per_service_day_and_hour(server, session):
    hq = server.app[HQ_KEY]
    kiosk, counter = Device("kiosk-1"), Device("counter-1")
    await register(server, session, kiosk)
    await register(server, session, counter)
    at = datetime(2030, 1, 7, 8, 10, tzinfo=timezone.utc).timestamp()  # 09:10 Zurich
    ev = [issue(kiosk, i, at + i) for i in range(1, 6)]
    waits = {1: 60, 2: 120, 3: 180, 4: 600}
    for i, w in waits.items():
        tid = f"20300107-A{i:03d}"
        ev.append(counter.event("ticket.called", {"ticket": tid, "counter": "c1"}, at + i + w))
        if i == 4:
            ev.append(counter.event("ticket.no_show", {"ticket": tid, "counter": "c1"}, at + i + w + 60))
        else:
            ev.append(counter.event("ticket.started", {"ticket": tid, "counter": "c1"}, at + i + w + 5))
            ev.append(counter.event("ticket.completed", {"ticket": tid, "counter": "c1"}, at + i + w + 5 + 100 * i))
    ev.append(kiosk.event("ticket.cancelled", {"ticket": "20300107-A005"}, at + 30))
    server.clock.t = at + 3600  # pushed after the day's work, not from HQ's future
    await ingest_branch_events(hq, list(reversed(ev)))  # arrival order must not matter
    data = await api(session, "GET", f"{server.url}{V}/branches/acme-main/analytics?from=2030-01-07&to=2030-01-07", 200,
                     headers=server.h("acme-manager"))
    # waits 60, 120, 180 and 600 s: p50 and p90 from the wait histogram (120 + 60 x 0, and 540 +
    # 60 x 0.6 inside the 9-10 min bucket), as the console computes them
    assert data["rows"] == [{"service": "general", "day": "2030-01-07", "hour": 9, "tickets": 5, "walkins": 5,
                             "bookings": 0, "called": 4, "served": 3, "waits": 4, "wait_mean_s": 240.0,
                             "wait_p50_s": 120.0, "wait_p90_s": 576.0, "service_mean_s": 200.0,
                             "no_show_rate": 0.25, "no_show_walkin_rate": 0.2, "no_show_booking_rate": None,
                             "abandonment_rate": 0.2, "target_wait_s": 900, "within_target_rate": 1.0}]


async def test_hq_ticket_view_is_the_branch_fold(server, session):
    """A transferred ticket waits in its new line (it was "called" at HQ before); of two
    counters that called one ticket concurrently the fold's winner holds it, not whoever came
    last; the state hash the link route shows moves with the events."""
    hq = server.app[HQ_KEY]
    kiosk, c1, c2 = Device("kiosk-1"), Device("counter-1"), Device("counter-2")
    for d in (kiosk, c1, c2):
        await register(server, session, d)
    await ingest_branch_events(hq, [issue(kiosk, i, T0 + i) for i in (1, 2)])
    before = await api(session, "GET", f"{server.url}{V}/branches/acme-main/link", 200, headers=server.h("acme-admin"))
    a1, a2 = "20300107-A001", "20300107-A002"
    server.clock.t = T0 + 600
    # c1 calls A001 first; c2, not knowing of it (seen: nothing of c1's), calls it later.
    await ingest_branch_events(hq, [
        c1.event("ticket.called", {"ticket": a1, "counter": "c1", "seen": {"kiosk-1": 1}}, T0 + 100),
        c2.event("ticket.called", {"ticket": a1, "counter": "c2", "seen": {"kiosk-1": 1}}, T0 + 110),
        c1.event("ticket.called", {"ticket": a2, "counter": "c1", "seen": {"kiosk-1": 2}}, T0 + 200),
        c1.event("ticket.transferred", {"ticket": a2, "counter": "c1", "to_service": "payments",
                                        "seen": {"kiosk-1": 2, "counter-1": 3}}, T0 + 210)])
    with connect_db(hq.settings) as c:
        rows = dict(((r[0]), r[1:]) for r in c.execute(
            "SELECT id, service, counter, called_ms FROM tickets WHERE branch_id = 'acme-main'"))
    assert rows[a1][1] == "c1"  # the earliest call wins, not the last to arrive
    assert rows[a2] == ("payments", None, None)  # transferred: waiting again, in its new line
    st = await api(session, "GET", f"{server.url}{V}/public/tickets/{token(2)}", 200)
    assert (st["status"], st["service"], st["position"]) == ("waiting", "payments", 1)
    after = await api(session, "GET", f"{server.url}{V}/branches/acme-main/link", 200, headers=server.h("acme-admin"))
    assert len(after["state_hash"]) == 64 and after["state_hash"] != before["state_hash"]
    assert after["vv"]["counter-1"] == 3 and after["events"] >= 6


async def test_the_front_of_each_queue_is_the_waiting_line_ranked_in_sql(server):
    """live.front_of_queues (what 'your turn is near' reads per push) agrees with the full
    waiting_in_order on a real database: priorities, a transfer's effective time, ties on time
    broken by id, services with no name, and tickets that left the queue."""
    import random

    from hq import live

    rng = random.Random(5)
    with connect_db(server) as c:
        for n in range(400):
            issued = T0 * 1000 + rng.randrange(50) * 1000  # many equal times: the id decides
            c.execute("INSERT INTO tickets (branch_id, id, service, day, label, priority, issued_ms, effective_ms,"
                      " called_ms, cancelled_ms) VALUES ('acme-main', ?, ?, '20300107', ?, ?, ?, ?, ?, ?)",
                      (f"20300107-{rng.choice('ABC')}{n:03d}", rng.choice(["general", "passport", None]), f"L{n}",
                       rng.choice([0, 0, 0, 1, 2]), issued, issued - 7000 if rng.random() < 0.1 else None,
                       issued + 1 if rng.random() < 0.2 else None, issued + 2 if rng.random() < 0.05 else None))
        full = live.waiting_in_order(c, "acme-main", "20300107")
        for places in (1, 3, 10):
            front = live.front_of_queues(c, "acme-main", "20300107", places)
            expected = sorted((r for r in full if r["position"] <= places), key=lambda r: (r["service"] or "", r["position"]))
            assert [(r["id"], r["position"]) for r in front] == [(r["id"], r["position"]) for r in expected]
            assert front and len(front) == sum(min(places, n) for n in
                                               (sum(1 for r in full if r["service"] == s) for s in ("general", "passport", None)))
