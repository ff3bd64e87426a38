"""The nightly job against a real HQ: day close, digest reconcile repairing a gap HQ's version
vector cannot see, compaction that leaves the projection intact, and catch-up of a new device."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.config import load_config
from appliance.nightly import DAY_MS, close_past_days, compaction_floors, utc_day
from appliance.node import Node
from appliance.uplink import from_config
from hq.web import HQ_KEY

from linktest import enroll_sample, start_hq_in_process


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture()
async def hq(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession, object]]:
    runner, url, app = await start_hq_in_process(tmp_path / "hq")
    async with aiohttp.ClientSession() as session:
        try:
            yield url, session, app
        finally:
            await runner.cleanup()


async def node_with(folder: Path, device: str, clock: Clock) -> Node:
    node = Node(load_config(folder / f"{device}.toml"), clock=clock)
    node.open()
    await node.start([from_config(node.config)])
    return node


async def test_nightly_closes_days_repairs_gaps_compacts_and_a_new_device_catches_up(tmp_path, hq):
    url, session, app = hq
    folder = tmp_path / "branch"
    # Slow link loop, nightly scheduled but run by hand with an injected time.
    await enroll_sample(session, url, folder, tz="Africa/Kigali", devices=("kiosk", "display"),
                        extra={"interval_s": 3600, "retention_days": 30, "nightly_at": "02:30"})
    now = int(time.time() * 1000)
    clock = Clock(now - 40 * DAY_MS)
    kiosk = await node_with(folder, "kiosk", clock)
    display = None
    try:
        uplink, job = kiosk.service("hq"), kiosk.service("hq").nightly
        nxt = job.next_run()
        assert (nxt.hour, nxt.minute, str(nxt.tzinfo)) == (2, 30, "Africa/Kigali")
        # 40 days ago: five tickets; one served, one called, three left waiting at closing time.
        for _ in range(5):
            await kiosk.write(lambda c: kiosk.branch.issue(c, {"service": "general"}))
        await kiosk.write(lambda c: kiosk.branch.set_counter(c, "c1", "open", None))
        first = await kiosk.write(lambda c: kiosk.branch.call_next(c, "c1"))
        await kiosk.write(lambda c: kiosk.branch.act(c, "c1", first["id"], "start", {}))
        clock.ms += 60_000
        await kiosk.write(lambda c: kiosk.branch.call_next(c, "c1"))  # completes the first, calls the second
        await uplink.sync_once()
        old_day = utc_day(clock.ms << 16)

        # HQ loses two of the kiosk's events (say, a restore from an older backup) while its
        # cached version vector still claims them: only the digests can tell.
        hq_ = app[HQ_KEY]
        lost = await hq_.db.write(lambda c: c.execute(
            "DELETE FROM events WHERE origin = 'kiosk' AND seq IN (SELECT seq FROM events WHERE origin = 'kiosk'"
            " AND type = 'ticket.issued' ORDER BY seq DESC LIMIT 2)").rowcount)
        assert lost == 2

        clock.ms = now
        closed = await kiosk.write(lambda c: close_past_days(c, kiosk, clock.ms))
        assert closed == 4  # one completed already; called -> no-show, three waiting -> cancelled
        statuses = await kiosk.read(lambda c: sorted(r[0] for r in c.execute("SELECT status FROM tickets")))
        assert statuses == ["cancelled", "cancelled", "cancelled", "completed", "no_show"]
        await uplink.sync_once()
        before = await kiosk.state_hash()
        events_before = await kiosk.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])

        report = await job.run(now_ms=clock.ms)
        assert report["error"] is None, report
        assert report["closed"] == 0
        assert old_day in report["days_differing"] and old_day in report["days_repaired"]
        assert report["repushed"] == 2
        assert report["compacted"].get("kiosk", 0) > 0
        # compaction kept every projected row: same state hash, fewer events
        assert await kiosk.state_hash() == before
        assert await kiosk.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]) < events_before
        assert (await kiosk.read(compaction_floors))["kiosk"] >= 5
        # HQ holds every kiosk event exactly once, gapless again
        seqs = await hq_.db.read(lambda c: [r[0] for r in c.execute("SELECT seq FROM events WHERE origin = 'kiosk' ORDER BY seq")])
        head = (await kiosk.read(lambda c: c.execute("SELECT seq FROM heads WHERE origin = 'kiosk'").fetchone()))[0]
        assert seqs == list(range(1, head + 1))
        # the node still works after compaction
        ticket = await kiosk.write(lambda c: kiosk.branch.issue(c, {"service": "general"}))
        assert ticket["status"] == "waiting" and ticket["label"] == "A001"
        await uplink.sync_once()
        again = await job.run(now_ms=clock.ms)
        assert again["days_differing"] == [] and again["compacted"] == {}

        # A new, empty display device catches the whole history up from HQ (kiosk compacted it).
        display = await node_with(folder, "display", Clock(now))
        await display.service("hq").sync_once()
        await kiosk.write(kiosk.log.release_quarantine)  # HQ's events, from "the future" of 40 days ago
        for sql in ("SELECT state FROM tickets ORDER BY id", "SELECT kind, id, body FROM config ORDER BY kind, id",
                    "SELECT id, status FROM counter_status ORDER BY id"):
            assert [tuple(r) for r in await display.read(lambda c: c.execute(sql).fetchall())] == [tuple(r) for r in await kiosk.read(lambda c: c.execute(sql).fetchall())], sql
        assert await display.state_hash() == await kiosk.state_hash()
    finally:
        await kiosk.stop()
        if display is not None:
            await display.stop()
