"""Calls are announced on the display: made on its own API (real process) or ingested from a counter.

The silent and wav sinks remember what they played; the node shows it in
GET /api/v1/state -> hardware.announcer.played, so a real process can be checked from outside.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.devices import HardwareService, from_config
from appliance.node import Node
from appliance.sample import write_sample
from hardware.speech import spoken_call
from sync.log import all_events

from .test_node_config import hardware, sample_device, start_node, wait_for

BRANCH_LANGUAGES = ["en", "fr", "rw", "sw", "es"]
#: The silent fake (the sample's display speaks through the speakers when it can).
SILENT = '[hardware.announcer]\nengine = "none"\nsink = "silent"\nchime = false\n'


def display_config(directory: Path, hardware_toml: str | None = None) -> Path:
    """The sample display, given ticket numbers 500-599 so the test can issue on its own API."""
    write_sample(directory)
    return sample_device(directory, "display", hardware_toml, roster_numbers={"kiosk": "1-499", "display": "500-599"})


def staff_call_twice(node) -> list[dict[str, Any]]:
    """Log in at c1, open it, issue two tickets, call both back to back, recall the second."""
    status, login = node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
    assert status == 200, login
    auth = {"Authorization": f"Bearer {login['token']}"}
    assert node.request("POST", "/api/v1/counters/c1/open", headers=auth)[0] == 200
    tickets = [node.request("POST", "/api/v1/tickets", {"service": "general"})[1] for _ in range(2)]
    called = []
    for _ in tickets:
        status, ticket = node.request("POST", "/api/v1/counters/c1/call-next", headers=auth)
        assert status == 200, ticket
        called.append(ticket)
    status, recalled = node.request("POST", f"/api/v1/counters/c1/tickets/{called[1]['id']}/recall", headers=auth)
    assert status == 200, recalled
    return called


@pytest.mark.slow
def test_display_announces_calls_in_order_in_the_branch_languages(tmp_path: Path) -> None:
    node = start_node(display_config(tmp_path / "branch", SILENT), tmp_path, "display")
    try:
        first, second = staff_call_twice(node)
        view = wait_for(lambda: (v := hardware(node)["announcer"])["calls_played"] == 3 and v, what="3 calls played")
        expected = [spoken_call(t["label"], "1", lang).plain for t in (first, second, second) for lang in BRANCH_LANGUAGES]
        assert view["played"] == expected
        assert [(a["label"], a["type"]) for a in view["announced"]] == [
            (first["label"], "ticket.called"), (second["label"], "ticket.called"), (second["label"], "ticket.recalled")]
        assert view["languages"] == "branch"
        assert "Ticket A 5 0 0, counter 1" in view["played"]
        assert "Nimero A gatanu zeru zeru, idirishya rimwe" in view["played"]
    finally:
        node.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_display_speaks_calls_with_espeak_into_a_wav_file(tmp_path: Path) -> None:
    wav_path = tmp_path / "calls.wav"
    config = display_config(tmp_path / "branch", f"""
[hardware.announcer]
engine = "espeak-ng"
sink = "wav"
wav_path = "{wav_path}"
languages = ["en", "fr"]
""")
    node = start_node(config, tmp_path, "display")
    try:
        first, second = staff_call_twice(node)
        view = wait_for(lambda: (v := hardware(node)["announcer"])["calls_played"] == 3 and v, timeout=60,
                        what="3 calls spoken")
        texts = [(t["label"], lang) for t in (first, second, second) for lang in ("en", "fr")]
        assert view["played"] == [x for label, lang in texts
                                  for x in ((["<chime>"] if lang == "en" else []) + [spoken_call(label, "1", lang).plain])]
        assert view["last_error"] is None
        with wave.open(str(wav_path)) as w:
            seconds = w.getnframes() / w.getframerate()
        assert seconds > 3 * 1.0  # three chimes (0.6 s each) and six phrases of real speech
    finally:
        node.stop()


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_calls_ingested_from_a_counter_are_announced_and_stale_ones_are_not(tmp_path: Path) -> None:
    write_sample(tmp_path / "branch")
    # The sample's display speaks through the speakers when it can; here, the silent fake.
    sample_device(tmp_path / "branch", "display", SILENT)
    now = {"ms": 1_795_000_000_000}
    counter = Node(load_config(tmp_path / "branch" / "counter-1.toml"), clock=lambda: now["ms"])
    display = Node(load_config(tmp_path / "branch" / "display.toml"), clock=lambda: now["ms"])
    await asyncio.to_thread(counter.open)
    await asyncio.to_thread(display.open)
    service = from_config(display.config)
    assert isinstance(service, HardwareService)
    await display.start([service])
    try:
        def call(conn):
            counter.branch.set_counter(conn, "c1", "open", "amina")
            ticket = counter.branch.issue(conn, {"service": "payments"})
            counter.branch.call_next(conn, "c1")
            return ticket

        ticket = await counter.write(call)
        events = await counter.read(all_events)
        await display.write(lambda conn: display.log.ingest(conn, events))
        await until(lambda: len(service.announced) == 1)
        assert service.announced[0]["label"] == ticket["label"] and service.announced[0]["counter"] == "c1"
        assert await asyncio.to_thread(service.announcer.wait_idle, 10)
        assert service.announcer.sink.texts[:1] == [spoken_call(ticket["label"], "1", "en").plain]

        # a call that arrives long after it was made (a partition healing) is not announced;
        # a fresh call in the same batch is
        def call_again(conn):
            counter.branch.issue(conn, {"service": "general"})
            counter.branch.issue(conn, {"service": "general"})
            return counter.branch.call_next(conn, "c1")

        late = await counter.write(call_again)
        now["ms"] += 10 * 60 * 1000
        fresh = await counter.write(lambda conn: counter.branch.call_next(conn, "c1"))
        events = await counter.read(all_events)
        await display.write(lambda conn: display.log.ingest(conn, events))
        await until(lambda: len(service.announced) == 2)
        assert [a["label"] for a in service.announced] == [ticket["label"], fresh["label"]]
        assert late["label"] not in [a["label"] for a in service.announced]
    finally:
        await display.stop()
        await asyncio.to_thread(counter.close)
