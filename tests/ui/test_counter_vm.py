"""Counter view-model against a real HTTP server speaking the node's contract."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from appliance.client import NodeClient, StreamEvent
from counter_ui.viewmodels import CounterViewModel, format_duration

from .contract_node import ContractNode


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
async def vm(client: NodeClient, node: ContractNode) -> CounterViewModel:
    node.require_login = True
    vm = CounterViewModel(client, "c1", now=now)
    vm.apply_state(await client.state())
    return vm


async def test_wrong_pin_is_refused_and_right_pin_logs_in(vm: CounterViewModel) -> None:
    assert not vm.logged_in
    assert not await vm.login("0000")
    assert "wrong PIN" in vm.login_error and not vm.logged_in
    assert await vm.login("1234")
    assert vm.logged_in and vm.staff_name == "Amina"


async def test_a_ticket_goes_through_call_start_done(vm: CounterViewModel, node: ContractNode) -> None:
    await vm.login("1234")
    assert await vm.open_counter() and vm.status == "open"
    node.issue("general")
    node.issue("payments")
    vm.apply_state(await vm.client.state())
    assert [w["label"] for w in vm.waiting] == ["A001", "B001"]
    assert await vm.call_next()
    assert vm.current_label == "A001" and vm.current_status == "called"
    assert vm.waited_text.startswith("waited 0:0")
    assert [w["label"] for w in vm.waiting] == ["B001"]
    assert await vm.recall()
    assert await vm.start() and vm.current_status == "serving"
    assert await vm.done()
    assert vm.current == {} and node.tickets["20260101-A001"]["status"] == "completed"


async def test_nobody_waiting_is_a_notice(vm: CounterViewModel) -> None:
    await vm.login("1234")
    await vm.open_counter()
    assert not await vm.call_next()
    assert vm.notice == "Nobody is waiting."


async def test_a_409_is_shown_as_an_error(vm: CounterViewModel, node: ContractNode) -> None:
    await vm.login("1234")
    node.issue("general")
    assert not await vm.call_next()  # counter still closed
    assert vm.error == "Call next: open the counter first"


async def test_call_a_specific_ticket_no_show_and_transfer(vm: CounterViewModel, node: ContractNode) -> None:
    await vm.login("1234")
    await vm.open_counter()
    node.issue("general")
    b = node.issue("general")
    assert await vm.call_ticket(b["id"])
    assert vm.current_label == "A002"
    assert await vm.no_show()
    assert node.tickets[b["id"]]["status"] == "no_show" and vm.current == {}
    assert await vm.call_next()
    assert await vm.transfer("payments")
    assert node.tickets["20260101-A001"]["service"] == "payments"
    assert [w["label"] for w in vm.waiting] == ["A001"]


async def test_walk_in_ticket(vm: CounterViewModel) -> None:
    await vm.login("1234")
    assert await vm.issue_walkin("payments") == "B001"
    assert vm.notice == "Issued B001" and vm.waiting[0]["label"] == "B001"


async def test_expired_session_asks_to_log_in_again(vm: CounterViewModel, node: ContractNode) -> None:
    await vm.login("1234")
    vm.client.token = "stale"
    assert not await vm.open_counter()
    assert not vm.logged_in and "Log in again" in vm.error


async def test_unreachable_node(dead_client: NodeClient) -> None:
    vm = CounterViewModel(dead_client, "c1", now=now, login_required=False)
    assert not await vm.call_next()
    assert vm.offline and vm.error.startswith("Cannot reach the node")


def test_losing_a_concurrent_call_shows_who_won() -> None:
    vm = CounterViewModel(NodeClient("http://127.0.0.1:9"), "c1", now=now, login_required=False)
    vm._set_current({"id": "t1", "label": "A004", "status": "called", "counter": "c1"})
    vm.apply_event(StreamEvent("k:9", "ticket.called", {"ticket": {
        "id": "t1", "label": "A004", "status": "called", "counter": "c2", "superseded": ["c1"]}}))
    assert vm.current == {}
    assert vm.superseded_notice == "A004 was called at c2 first. Call next."
    vm.superseded_notice = ""
    vm.apply_state({"counters": [{"id": "c1", "name": "Counter 1", "status": "open", "current": None,
                                  "superseded": [{"ticket": "t1", "label": "A004", "by_counter": "c2"}]}]})
    assert vm.superseded_notice == ""  # the same loss is told once


def test_keyboard_shortcuts_need_a_login() -> None:
    vm = CounterViewModel(NodeClient("http://127.0.0.1:9"), "c1", now=now)
    assert not vm.handle_key("n")


def test_durations_read_as_clock_times() -> None:
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(-3) == "0:00"
