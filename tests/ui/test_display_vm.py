"""Display view-model fed by the real stream of a real ``smartq node`` process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.client import NodeClient, StreamEvent
from display_ui.i18n import CATALOGS, LANGUAGES
from display_ui.viewmodels import (
    CROWD_TEXT,
    DisplayViewModel,
    SilentAnnouncer,
    crowd_level,
)
from ui_common.i18n import used_msgids
from tests.appliance.procs import NodeProcess

from .conftest import Nodes, peer_status, staff_client, wait_for, wait_for_async

DISPLAY_DIR = Path(__file__).resolve().parents[2] / "display_ui"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_crowd_level_compares_waiting_with_open_counters() -> None:
    assert crowd_level(0, 0) == "low"
    assert crowd_level(3, 0) == "high"
    assert crowd_level(3, 1) == "low"
    assert crowd_level(12, 2) == "medium"
    assert crowd_level(25, 2) == "high"


async def follow(client: NodeClient, vm: DisplayViewModel) -> asyncio.Task[None]:
    connected = asyncio.Event()

    def on_conn(ok: bool, why: str) -> None:
        vm.set_connected(ok, why)
        if ok:
            connected.set()

    async def quick_retry(_: float) -> None:
        await asyncio.sleep(0.05)

    task = asyncio.create_task(client.follow(on_state=vm.apply_state, on_event=vm.apply_event,
                                             on_connection=on_conn, sleep=quick_retry))
    await asyncio.wait_for(connected.wait(), 10)
    return task


async def stop(task: asyncio.Task[None], *clients: NodeClient) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for c in clients:
        await c.close()


@pytest.fixture
async def staff(shared_node: NodeProcess) -> AsyncIterator[NodeClient]:
    c = await staff_client(shared_node.url, "c1", "1234")
    await c.set_counter_status("c1", "open")
    try:
        yield c
    finally:
        await c.close()


async def test_a_call_on_the_stream_is_shown_flashing_and_announced(
    shared_node: NodeProcess, staff: NodeClient
) -> None:
    clock = FakeClock()
    announcer = SilentAnnouncer()
    vm = DisplayViewModel(announcer=announcer, clock=clock, flash_s=5, notices=["Welcome"])
    assert vm.status_text == "Connecting…"
    a = await staff.issue_ticket("payments")
    b = await staff.issue_ticket("payments", language="fr")
    client = NodeClient(shared_node.url)
    task = await follow(client, vm)
    try:
        assert not vm.offline and vm.status_text == ""
        assert vm.branch_name == "Kigali Main Office"
        payments = lambda: next(s for s in vm.services if s["id"] == "payments")
        waiting = payments()["waiting"]
        assert waiting >= 2 and payments()["waiting_text"] == f"{waiting} waiting"
        await staff.call_ticket("c1", a["id"])
        await wait_for(lambda: vm.newest_label == a["label"], what="first call shown")
        assert vm.newest_counter == "Counter 1" and vm.flashing
        assert announcer.calls[-1] == (a["label"], "Counter 1", "en")
        await staff.call_ticket("c1", b["id"])
        await wait_for(lambda: vm.newest_label == b["label"], what="second call shown")
        assert vm.recent[0] == {"label": a["label"], "counter_name": "Counter 1", "note": "Please come",
                                "serving": False}
        assert announcer.calls[-1] == (b["label"], "Counter 1", "fr")
        assert payments()["waiting"] == waiting - 2
        await staff.ticket_action("c1", b["id"], "recall")
        await wait_for(lambda: len(announcer.calls) == 3, what="recall announced")
        vm.tick(datetime(2026, 1, 1, 9, 5))
        assert vm.clock_text == "09:05" and vm.flashing
        clock.now += 6
        vm.tick(datetime(2026, 1, 1, 9, 6))
        assert not vm.flashing
        # Local notices first, then the branch's own (from the node's configuration).
        assert vm.ticker_text.startswith("Welcome   •   Please keep your ticket")
        # The citizen reached the counter: the screen says "being served", not "please come".
        assert not vm.newest_serving
        await staff.ticket_action("c1", b["id"], "start")
        await wait_for(lambda: vm.newest_serving, what="serving shown")
    finally:
        await stop(task, client)


def test_the_display_takes_its_languages_in_turn_and_shows_where_each_counter_is() -> None:
    clock = FakeClock()
    vm = DisplayViewModel(clock=clock, language="rw", cycle_languages=["rw", "en", "fr"], cycle_s=10,
                          directions={"c1": "→ left"})
    vm.apply_state({"branch": {"name": "B", "languages": ["en"]},
                    "services": [{"id": "general", "letter": "A", "names": {"en": "General", "rw": "Rusange"}}],
                    "counters": [{"id": "c1", "name": "Counter 1", "names": {"fr": "Guichet 1"}, "status": "open"}],
                    "waiting": [], "recent_calls": [{"label": "A001", "counter": "c1"}]})
    assert vm.cycle_languages == ["rw", "en", "fr"]  # given: the branch's list does not replace it
    now = datetime(2026, 1, 1, 9, 0)
    vm.tick(now)
    assert vm.language == "rw" and vm.services[0]["name"] == "Rusange"
    clock.now += 10
    vm.tick(now)
    assert vm.language == "en" and vm.newest_counter == "Counter 1  → left"
    clock.now += 10
    vm.tick(now)
    # Counter names from configuration in the screen's language, labels too.
    assert vm.language == "fr" and vm.newest_counter == "Guichet 1  → left"
    assert vm.t("Please come") == "Présentez-vous"
    clock.now += 9
    vm.show_call("A002", "Counter 1", "fr", counter="c1")  # a call: the language holds while it flashes
    clock.now += 2
    vm.tick(now)
    assert vm.language == "fr" and vm.flashing
    clock.now += 7
    vm.tick(now)
    assert vm.language == "rw" and not vm.flashing
    assert vm.recent[0]["note"] == vm.t("Please come") and vm.recent[0]["counter_name"].endswith("→ left")


async def test_the_display_speaks_the_waiting_rooms_language(shared_node: NodeProcess) -> None:
    vm = DisplayViewModel(clock=FakeClock(), language="fr")
    client = NodeClient(shared_node.url)
    task = await follow(client, vm)
    try:
        assert {s["name"] for s in vm.services} >= {"Paiements", "Renseignements généraux"}
        assert all(s["wait_text"] in ("pas d'attente", "bientôt") or s["wait_text"].startswith("~")
                   for s in vm.services)
        vm.tick(datetime(2026, 11, 18, 9, 5))
        assert vm.date_text == "mer. 18 nov. 2026"
        assert vm.t(CROWD_TEXT["high"]) == "Forte"
        assert vm.crowd_text == vm.t(CROWD_TEXT[vm.crowd])
        vm.language = "rw"
        assert any(s["name"] == "Kwishyura" for s in vm.services)
        assert vm.t("Recent calls") == "Abahamagawe vuba"
    finally:
        await stop(task, client)


async def test_unreachable_node_shows_offline(dead_client: NodeClient) -> None:
    vm = DisplayViewModel(clock=FakeClock())
    states: list[bool] = []

    def on_conn(ok: bool, why: str) -> None:
        vm.set_connected(ok, why)
        states.append(ok)

    task = asyncio.create_task(dead_client.follow(on_state=vm.apply_state, on_event=vm.apply_event,
                                                  on_connection=on_conn))
    try:
        await wait_for(lambda: bool(states))
        # For staff, small and in a corner: never "no internet" to the waiting room.
        assert vm.offline and vm.status_text == "Staff: this screen is not linked to its device; retrying"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_node_that_stops_turns_the_display_offline(nodes: Nodes) -> None:
    node = nodes.start("display")
    vm = DisplayViewModel(clock=FakeClock(), language="es")
    client = NodeClient(node.url, timeout=1.0)
    task = await follow(client, vm)
    try:
        assert not vm.offline
        node.stop()
        await wait_for(lambda: vm.offline, what="offline noticed")
        assert vm.status_text == "Personal: pantalla sin enlace con su equipo; reintentando"
        assert vm.services  # the last picture stays up
    finally:
        await stop(task, client)


def test_an_announcer_failure_does_not_stop_the_display() -> None:
    class Broken:
        def announce(self, *a: str) -> None:
            raise OSError("no sound card")

    vm = DisplayViewModel(announcer=Broken(), clock=FakeClock())
    vm.apply_event(StreamEvent("x:1", "ticket.called", {
        "event": {"payload": {"ticket": "t", "counter": "c9"}},
        "ticket": {"id": "t", "label": "B007", "status": "called", "counter": "c9"}}))
    assert vm.newest_label == "B007" and vm.newest_counter == "c9"


@pytest.mark.slow
async def test_a_hung_peer_marks_the_display_degraded_until_it_answers_again(branch: Any) -> None:
    """Three real nodes replicating over 127.0.0.1; the kiosk's process is stopped (SIGSTOP:
    its sockets stay open, nothing answers) and continued. The display learns it from the
    `peers` messages of its own node's stream, without fetching /state again."""
    b = branch("display", "kiosk", "counter-1", lan_extra="request_timeout_s = 1.0\n")
    display = b.start("display")
    b.start("kiosk")
    b.start("counter-1")
    client = NodeClient(display.url, timeout=5.0)
    vm = DisplayViewModel(clock=FakeClock())

    async def follow() -> None:
        async for event in client.events():
            vm.apply_event(event)

    async def degraded() -> bool:
        return vm.degraded

    follower = asyncio.ensure_future(follow())
    try:
        async def peers() -> dict[str, str]:
            return peer_status(await client.state())

        await wait_for_async(peers, lambda p: p == {"kiosk": "ok", "counter-1": "ok"},
                             what="both peers ok")
        vm.apply_state(await client.state())
        await wait_for_async(degraded, lambda d: not d, what="the display not degraded")
        assert vm.status_text == ""

        b.pause("kiosk")
        await wait_for_async(degraded, lambda d: d, what="the stream telling the kiosk is unreachable")
        assert vm.status_text == "Staff: some devices do not answer"
        vm.language = "fr"
        assert vm.status_text == "Personnel : des appareils ne répondent pas"
        vm.language = "en"

        b.resume("kiosk")
        await wait_for_async(degraded, lambda d: not d, what="the stream telling the kiosk is back")
        assert vm.status_text == ""
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await client.close()


def test_every_display_message_is_in_the_template_and_translated() -> None:
    used = used_msgids(DISPLAY_DIR / "display.kv", DISPLAY_DIR / "viewmodels.py") | set(CROWD_TEXT.values())
    ids = CATALOGS.template_ids()
    assert used - set(ids) == set()
    for lang in LANGUAGES:
        missing = [i for i in ids if i not in CATALOGS.messages(lang)]
        assert not missing, (lang, missing)


NOTICES_BY_LANGUAGE = {
    "en": "Payments close at 15:00 today.",
    "fr": "Les paiements ferment à 15h00 aujourd'hui.",
    "rw": "Kwishyura birafunga saa cyenda uyu munsi.",
    "sw": "Malipo yanafungwa saa tisa leo.",
}


async def test_notices_per_language_follow_the_language_the_display_shows(nodes: Nodes) -> None:
    """``notices = { en = [...], fr = [...], ... }`` in the device file reaches the display
    through /state; the ticker shows the lines of the language the screen is cycling through
    (English for a language the table lacks: es here), after the ``--notice`` lines."""

    def per_language(config: Path) -> None:
        text = config.read_text(encoding="utf-8")
        table = ", ".join(f'{lang} = ["{line}"]' for lang, line in NOTICES_BY_LANGUAGE.items())
        start = text.index("[branch.notices]")
        end = text.index("\n\n", start)
        config.write_text(text[:start] + f"notices = {{ {table} }}" + text[end:], encoding="utf-8")

    node = nodes.start("display", edit=per_language)
    clock = FakeClock()
    langs = ["en", "fr", "rw", "sw", "es"]
    vm = DisplayViewModel(clock=clock, notices=["Welcome"], cycle_languages=langs, cycle_s=10)
    client = NodeClient(node.url)
    task = await follow(client, vm)
    try:
        state = await client.state()
        assert state["branch"]["notices"] == []
        assert state["branch"]["notices_by_language"] == {k: [v] for k, v in NOTICES_BY_LANGUAGE.items()}
        seen = {}
        vm.tick(datetime(2026, 1, 1, 9, 0))  # the cycle starts: en gets its full turn
        for _ in langs:
            seen[vm.language] = vm.ticker_text
            clock.now += 10
            vm.tick(datetime(2026, 1, 1, 9, 0))
        assert vm.language == "en"  # round the cycle
        assert seen == {lang: "Welcome   •   " + NOTICES_BY_LANGUAGE.get(lang, NOTICES_BY_LANGUAGE["en"])
                        for lang in langs}
    finally:
        await stop(task, client)


def test_notices_in_a_list_are_shown_in_every_language_and_a_bad_table_is_one_line(tmp_path: Path) -> None:
    from appliance.config import ConfigError, parse_config

    vm = DisplayViewModel(clock=FakeClock(), language="fr")
    vm.apply_state({"branch": {"notices": ["Wi-Fi: SmartQ"], "notices_by_language": {"en": ["Hello"]}},
                    "services": [], "counters": [], "waiting": []})
    assert vm.ticker_text == "Wi-Fi: SmartQ   •   Hello"  # fr has none: English
    vm.language = "en"
    assert vm.notices == ["Wi-Fi: SmartQ", "Hello"]

    def branch(notices: object) -> dict[str, Any]:
        return {"branch": {"id": "b1", "name": "B", "notices": notices}, "device": {"id": "d1", "role": "display"}}

    for notices, error in (
        ({"en": "one text"}, "branch.notices.en: expected a list of texts"),
        ({"english": ["x"]}, "branch.notices: 'english' is not a language code such as en or fr"),
        ({"fr": ["x" * 201]}, "branch.notices.fr: at most 20 texts of at most 200 characters"),
        ("Welcome", "branch.notices: expected a list of texts or a table of lists per language"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(branch(notices), path=tmp_path / "d.toml")
        assert str(err.value) == error
