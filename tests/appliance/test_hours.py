"""Opening hours at the node: the device file's [hours] until HQ's config.hours arrives, folded
like the other config events; GET /state says whether the branch is open and when it opens."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance import events as ev
from appliance.config import ConfigError, load_config
from appliance.hours import parse_hours, status
from appliance.node import Node
from appliance.sample import write_sample

KIGALI = ZoneInfo("Africa/Kigali")
WEEK = {str(d): {"opens": "08:00", "closes": "17:00"} for d in range(5)}  # Monday to Friday


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=KIGALI)


def test_open_closed_and_the_next_opening() -> None:
    hours = parse_hours({"weekdays": WEEK, "closed_days": [{"day": "2026-12-01", "reason": "holiday"}]})
    assert status(hours, at("2026-11-30T10:00"))["open"]  # a Monday morning
    assert status(hours, at("2026-11-30T10:00"))["closes_at"] == "2026-11-30T17:00+02:00"
    evening = status(hours, at("2026-11-30T18:30"))
    # Tuesday is a closed day: the next opening is Wednesday.
    assert not evening["open"] and evening["opens_at"] == "2026-12-02T08:00+02:00"
    assert status(hours, at("2026-12-02T07:00"))["opens_at"] == "2026-12-02T08:00+02:00"
    assert status(hours, at("2026-12-05T12:00"))["opens_at"] == "2026-12-07T08:00+02:00"  # Saturday
    # Nothing known: never "closed" from a guess.
    assert status(None, at("2026-12-05T23:00")) == {"open": True, "opens_at": None, "closes_at": None,
                                                    "known": False}


@pytest.mark.parametrize("table, message", [
    ('[hours.weekdays]\n"7" = { opens = "08:00", closes = "17:00" }', 'keys are "0" (Monday)'),
    ('[hours.weekdays]\n"0" = { opens = "8am", closes = "17:00" }', "hours.weekdays.0"),
    ('[hours.weekdays]\n"0" = { opens = "17:00", closes = "08:00" }', "opens must be before closes"),
    ('[hours]\nclosed_days = ["25/12"]', "hours.closed_days"),
    ('[hours]\nopen = true', "unknown key"),
])
def test_bad_hours_in_the_device_file_are_a_config_error_naming_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    write_sample(tmp_path / "b")
    path = tmp_path / "b" / "kiosk.toml"
    path.write_text(path.read_text() + "\n" + table + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


async def test_the_files_hours_stand_until_hqs_config_hours_arrives(tmp_path: Path) -> None:
    write_sample(tmp_path / "b")
    path = tmp_path / "b" / "kiosk.toml"
    path.write_text(path.read_text() + "\n[hours.weekdays]\n" + "".join(
        f'"{d}" = {{ opens = "08:00", closes = "17:00" }}\n' for d in range(5)))
    now = {"ms": int(at("2026-11-30T10:00").timestamp() * 1000)}  # Monday 10:00 in Kigali
    node = Node(load_config(path), clock=lambda: now["ms"])
    await asyncio.to_thread(node.open)
    try:
        state = await node.read(node.branch.state)
        assert state["branch"]["hours"] == {"open": True, "opens_at": None,
                                            "closes_at": "2026-11-30T17:00+02:00", "known": True}
        # HQ closes the branch today; its hours replace the file's once folded.
        await node.write(lambda conn: node.log.append(conn, ev.CONFIG_HOURS, {
            "weekdays": WEEK, "closed_days": [{"day": "2026-11-30", "reason": "holiday"}]}))
        state = await node.read(node.branch.state)
        assert state["branch"]["hours"]["open"] is False
        assert state["branch"]["hours"]["opens_at"] == "2026-12-01T08:00+02:00"
    finally:
        await asyncio.to_thread(node.close)
