"""Display view-model fed by a real stream from a contract-shaped node."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from appliance.client import NodeClient, StreamEvent
from display_ui.viewmodels import DisplayViewModel, SilentAnnouncer, crowd_level

from .contract_node import ContractNode


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

    task = asyncio.create_task(client.follow(on_state=vm.apply_state, on_event=vm.apply_event,
                                             on_connection=on_conn))
    await asyncio.wait_for(connected.wait(), 5)
    return task


async def wait_for(pred, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


async def test_a_call_on_the_stream_is_shown_flashing_and_announced(
    client: NodeClient, node: ContractNode
) -> None:
    clock = FakeClock()
    announcer = SilentAnnouncer()
    vm = DisplayViewModel(announcer=announcer, clock=clock, flash_s=5, notices=["Welcome"])
    node.counters["c1"]["status"] = "open"
    node.issue("general")
    t2 = node.issue("general", language="fr")
    task = await follow(client, vm)
    try:
        assert not vm.offline and vm.services[0]["waiting"] == 2
        assert vm.newest_label == ""
        node.call("c1", node.tickets["20260101-A001"])
        await wait_for(lambda: vm.newest_label == "A001")
        assert vm.newest_counter == "Counter 1" and vm.flashing
        assert announcer.calls == [("A001", "Counter 1", "en")]
        node.call("c1", t2)
        await wait_for(lambda: vm.newest_label == "A002")
        assert vm.recent == [{"label": "A001", "counter_name": "Counter 1"}]
        assert announcer.calls[-1] == ("A002", "Counter 1", "fr")
        assert vm.services[0]["waiting"] == 0
        vm.tick(datetime(2026, 1, 1, 9, 5))
        assert vm.clock_text == "09:05" and vm.flashing
        clock.now += 6
        vm.tick(datetime(2026, 1, 1, 9, 6))
        assert not vm.flashing
        assert vm.ticker_text == "Welcome"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
        assert vm.offline and "reconnecting" in vm.status_text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_an_announcer_failure_does_not_stop_the_display() -> None:
    class Broken:
        def announce(self, *a: str) -> None:
            raise OSError("no sound card")

    vm = DisplayViewModel(announcer=Broken(), clock=FakeClock())
    vm.apply_event(StreamEvent("x:1", "ticket.called", {
        "event": {"payload": {"ticket": "t", "counter": "c9"}},
        "ticket": {"id": "t", "label": "B007", "status": "called", "counter": "c9"}}))
    assert vm.newest_label == "B007" and vm.newest_counter == "c9"


def test_peers_down_mark_the_display_degraded() -> None:
    vm = DisplayViewModel(clock=FakeClock())
    vm.apply_state({"services": [], "counters": [], "peers": [{"id": "k", "status": "unreachable"}]})
    assert vm.degraded and vm.status_text.startswith("Degraded")
