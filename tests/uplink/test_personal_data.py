"""Personal data at the branch and at HQ: a phone number given at the kiosk never enters a log in
clear (sealed to HQ's personal-data key), HQ can still text the citizen, and after the retention
period no phone number remains in any table or event at HQ or at the branch, while the events,
their signatures and the state hash stay as they were. A real HQ on 127.0.0.1 and a real node
(SQLite files) in one process."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.config import load_config
from appliance.node import Node
from appliance.uplink import from_config
from hq.gateways import mask_recipient, mask_text
from hq.notifications import purge_personal_data
from hq.personal import open_value
from hq.web import HQ_KEY

from linktest import await_for, enroll_sample, midday_timezone, start_hq_in_process

PHONE = "+41 79 123 45 67"
DIGITS = "791234567"


@pytest.fixture()
async def hq(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession, object]]:
    runner, url, app = await start_hq_in_process(tmp_path / "hq")
    async with aiohttp.ClientSession() as session:
        try:
            yield url, session, app
        finally:
            await runner.cleanup()


def everything(path: Path) -> str:
    """Every value of every row of every table of a SQLite file, as text."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for t in tables for row in c.execute(f'SELECT * FROM "{t}"'))


async def test_a_phone_number_is_sealed_in_the_log_and_gone_everywhere_after_retention(tmp_path, hq) -> None:
    url, session, app = hq
    core = app[HQ_KEY]  # type: ignore[index]
    folder = tmp_path / "branch"
    await enroll_sample(session, url, folder, tz=midday_timezone())
    node = Node(load_config(folder / "kiosk.toml"))
    node.open()
    uplink = from_config(node.config)
    await node.start([uplink])
    try:
        async def linked() -> bool:
            return uplink.status == "online" and node.branch.seal_phone("+1") is not None
        await await_for(linked)
        ticket = await node.write(lambda c: node.branch.issue(c, {"service": "general", "phone": PHONE}))
        async def pushed() -> bool:
            return uplink.status == "online" and uplink.pending == 0
        await await_for(pushed)

        # In the branch's log: sealed, not readable. At HQ: opened for the "turn near" SMS.
        event = await node.read(lambda c: c.execute(
            "SELECT payload FROM events WHERE type = 'ticket.issued' AND subject IS NOT NULL").fetchone()[0])
        assert "phone_sealed" in event and DIGITS not in event and "phone\"" not in event
        assert DIGITS not in everything(node.db_path)
        phone = core.db.read_sync(lambda c: c.execute("SELECT phone FROM tickets WHERE id = ?",
                                                      (ticket["id"],)).fetchone()[0])
        assert phone == PHONE.replace(" ", "")
        stored = core.db.read_sync(lambda c: c.execute(
            "SELECT envelope FROM events WHERE type = 'ticket.issued'").fetchone()[0])
        assert DIGITS not in stored  # HQ's copy of the event is sealed too
        state_before = await node.state_hash()

        # The retention period passes: HQ's purge job.
        days = int(core.settings.purge_after_days)
        later = core.now() + (days + 2) * 86400
        counts = core.db.write_sync(lambda c: purge_personal_data(c, later, days))
        assert counts["tickets"] == 1 and counts["pd_keys"] >= 1
        assert DIGITS not in everything(core.settings.database_path)
        assert DIGITS not in everything(node.db_path)
        sealed = __import__("json").loads(stored)["payload"]["phone_sealed"]
        assert core.db.read_sync(lambda c: open_value(c, sealed)) is None  # unreadable for good

        # Nothing else changed: the same events, valid signatures, the same state hash.
        await uplink.sync_once()
        assert await node.state_hash() == state_before
        assert node.verify() == []
    finally:
        await node.stop()


def test_the_log_gateway_writes_no_full_phone_email_or_booking_code() -> None:
    assert DIGITS not in mask_recipient(PHONE.replace(" ", ""))
    assert "ana@" not in mask_recipient("ana@example.org")
    text = mask_text("Booking 7KQ2-M9XD at 10:00. Questions: +41 44 668 18 00")
    assert "7KQ2" not in text and "668" not in text and "10:00" in text
