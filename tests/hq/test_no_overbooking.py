"""Capacity under concurrency: hundreds of simultaneous requests over real sockets never overbook."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import aiohttp
from hqtest import connect_db

from hq.web import HQ_KEY

B = "/api/v1/public"
HOT = "2030-01-07T10:00:00+01:00"
HOT_UTC = int(datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc).timestamp())


def _booked(server, start_utc: int) -> int:
    with connect_db(server) as c:
        return c.execute("SELECT COUNT(*) FROM bookings WHERE slot_start = ? AND status = 'booked'", (start_utc,)).fetchone()[0]


async def test_concurrent_bookings_of_a_capacity_3_slot_leave_exactly_3(server):
    body = {"branch": "acme-main", "service": "general", "start": HOT, "email": "a@example.org"}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one() -> int:
            async with s.post(f"{server.url}{B}/bookings", json=body) as resp:
                await resp.read()
                return resp.status
        statuses = await asyncio.gather(*(one() for _ in range(300)))
    assert statuses.count(201) == 3
    assert statuses.count(409) == 297
    assert _booked(server, HOT_UTC) == 3


async def test_concurrent_reschedules_into_a_capacity_3_slot_leave_exactly_3(server):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        # 200 bookings spread over other slots (distinct days), each then tries to move into the hot slot
        codes = []
        days = ["2030-01-08", "2030-01-09", "2030-01-10", "2030-01-11", "2030-01-14", "2030-01-15", "2030-01-16"]
        slots = [f"{d}T{h:02d}:{m:02d}:00+01:00" for d in days for h in range(8, 17) for m in (0, 15, 30, 45)]
        for start in slots[:67]:
            for _ in range(3):
                async with s.post(f"{server.url}{B}/bookings", json={"branch": "acme-main", "service": "general",
                                                                      "start": start, "email": "r@example.org"}) as resp:
                    assert resp.status == 201, await resp.text()
                    codes.append((await resp.json())["code"])
        assert len(codes) == 201

        async def move(code: str) -> int:
            async with s.post(f"{server.url}{B}/bookings/{code}/reschedule",
                              json={"contact": "r@example.org", "start": HOT}) as resp:
                await resp.read()
                return resp.status
        statuses = await asyncio.gather(*(move(c) for c in codes))
    assert statuses.count(200) == 3 and statuses.count(409) == 198
    assert _booked(server, HOT_UTC) == 3
    with connect_db(server) as c:
        worst = c.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM bookings WHERE status = 'booked'"
                          " GROUP BY service_id, slot_start) AS per_slot").fetchone()[0]
    assert worst == 3
