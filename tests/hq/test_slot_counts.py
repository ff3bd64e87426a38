"""The per-slot counters (slot_counts) stay equal to the count of bookings holding a place after a
random concurrent mix of every path that changes a booking's slot or status, on both backends."""

from __future__ import annotations

import asyncio
import random

from hqtest import T0, api, connect_db

from hq import booking, reassign
from hq.booking import BookingContext
from hq.errors import ApiError
from hq.web import HQ_KEY

B = "/api/v1/public"
DAYS = ["2030-01-07", "2030-01-08"]
SLOTS = [f"{d}T{h:02d}:{m:02d}:00+01:00" for d in DAYS for h in (10, 11) for m in (0, 15, 30, 45)]


def _mismatch(server) -> tuple[dict, dict]:
    with connect_db(server) as c:
        counters = {(r[0], r[1], r[2]): r[3] for r in c.execute(
            "SELECT branch_id, service_id, slot_start, booked FROM slot_counts WHERE booked <> 0")}
        counted = {(r[0], r[1], r[2]): r[3] for r in c.execute(
            "SELECT branch_id, service_id, slot_start, COUNT(*) FROM bookings WHERE status = 'booked'"
            " GROUP BY branch_id, service_id, slot_start")}
    return counters, counted


def _ctx(hq, rng: random.Random) -> BookingContext:
    s = hq.settings
    return BookingContext(key=hq.key, now=int(hq.now()), horizon_days=s.booking_horizon_days,
                          token_grace_s=s.booking_token_grace_s, phone_region=s.default_phone_region, rng=rng)


async def test_counters_equal_active_bookings_after_a_random_concurrent_mix(server, session):
    rng = random.Random(16)
    hq = server.app[HQ_KEY]
    await api(session, "PUT", f"{server.url}/api/v1/branches/acme-main/services/other", 200, headers=server.h("super"),
              json={"letter": "B", "names": {"en": "Other"}, "slot_minutes": 15, "capacity": 2})
    codes: list[str] = []
    statuses: list[int] = []

    async def call(path: str, body: dict) -> None:
        async with session.post(f"{server.url}{B}{path}", json=body) as resp:
            data = await resp.json()
            statuses.append(resp.status)
            assert resp.status < 500, data
            if path == "/bookings" and resp.status == 201:
                codes.append(data["code"])

    for _ in range(6):  # rounds of concurrent books, reschedules and (double) cancels
        ops = []
        for _ in range(40):
            kind = rng.random()
            if kind < 0.5 or not codes:
                ops.append(call("/bookings", {"branch": "acme-main", "service": rng.choice(["general", "other"]),
                                              "start": rng.choice(SLOTS), "email": "mix@example.org"}))
            elif kind < 0.8:
                ops.append(call(f"/bookings/{rng.choice(codes)}/reschedule",
                                {"contact": "mix@example.org", "start": rng.choice(SLOTS)}))
            else:
                code = rng.choice(codes)
                ops += [call(f"/bookings/{code}/cancel", {"contact": "mix@example.org"})] * 2
        await asyncio.gather(*ops)
    assert statuses.count(201) > 10 and statuses.count(409) > 0  # the slots filled up and refused

    # reassign between services of the branch, then no-shows after the slots and late check-ins
    with connect_db(server) as c:
        booked = [tuple(r) for r in c.execute("SELECT code, service_id FROM bookings WHERE status = 'booked'"
                                              " ORDER BY code")]
    for code, service in rng.sample(booked, min(8, len(booked))):
        target = "other" if service == "general" else "general"
        try:
            await hq.db.write(lambda c, code=code, target=target: reassign.move_booking(
                c, _ctx(hq, rng), "acme-main", code, "acme-main", target))
        except ApiError as err:  # a full target slot is refused, as it must be
            assert err.code == "slot_full", err
    server.clock.t = T0 + 3 * 86400
    marked = await hq.db.write(lambda c: booking.mark_no_shows(c, int(server.clock.t)))
    assert marked > 0
    with connect_db(server) as c:
        missed = [r[0] for r in c.execute("SELECT code FROM bookings WHERE status = 'no_show' ORDER BY code")]
    for code in rng.sample(missed, len(missed) // 2) + missed[:1]:  # one checked in twice
        await hq.db.write(lambda c, code=code: booking.checked_in(c, "acme-main", code, int(server.clock.t)))

    counters, counted = _mismatch(server)
    assert counters == counted
    assert counted and max(counted.values()) <= 3


async def test_migration_back_fills_counters_from_existing_bookings(server, session):
    for start in SLOTS[:3]:
        for _ in range(2):
            async with session.post(f"{server.url}{B}/bookings", json={
                    "branch": "acme-main", "service": "general", "start": start, "email": "m@example.org"}) as resp:
                assert resp.status == 201
    with connect_db(server) as c:  # as before migration 29, then run it again
        c.execute("DROP TABLE slot_counts")
        c.execute("DELETE FROM migrations WHERE number = 29")
    server.app[HQ_KEY].db.migrate()
    counters, counted = _mismatch(server)
    assert counters == counted and sorted(counted.values()) == [2, 2, 2]
