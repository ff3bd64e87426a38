"""Counter view-model against real ``smartq node`` processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.client import NodeClient, Unauthorized
from counter_ui.i18n import CATALOGS, LANGUAGES
from counter_ui.viewmodels import ACTIONS, NODE_ERRORS, STATES, CounterViewModel, format_duration
from ui_common.i18n import used_msgids
from tests.appliance.procs import NodeProcess

from .conftest import Nodes, set_security, wait_for, wait_for_async

COUNTER_DIR = Path(__file__).resolve().parents[2] / "counter_ui"
PINS = {"c1": "1234", "c2": "2345", "c3": "3456"}


def now() -> datetime:
    return datetime.now(UTC)


async def make_vm(url: str, counter: str, **kw: object) -> CounterViewModel:
    vm = CounterViewModel(NodeClient(url, timeout=5.0), counter, now=now, **kw)  # type: ignore[arg-type]
    vm.apply_state(await vm.client.state())
    return vm


@pytest.fixture
async def vms(shared_node: NodeProcess) -> AsyncIterator[dict[str, CounterViewModel]]:
    """A logged-in screen for each counter of the shared node, every counter open."""
    out = {}
    for counter, pin in PINS.items():
        vm = await make_vm(shared_node.url, counter)
        assert await vm.login(pin)
        assert await vm.open_counter()
        out[counter] = vm
    try:
        yield out
    finally:
        for vm in out.values():
            await vm.client.close()


async def refresh(*vms: CounterViewModel) -> None:
    for vm in vms:
        vm.apply_state(await vm.client.state())


async def test_wrong_pin_is_refused_and_right_pin_logs_in(shared_node: NodeProcess) -> None:
    vm = await make_vm(shared_node.url, "c1")
    try:
        assert not vm.logged_in
        assert not await vm.login("0000")
        assert vm.login_error == "Log in: wrong PIN" and not vm.logged_in
        assert await vm.login("1234")
        assert vm.logged_in and vm.staff_name == "Amina Uwase"
    finally:
        await vm.client.close()


async def test_a_ticket_goes_through_call_start_done(nodes: Nodes) -> None:
    """A fresh node: the queue holds exactly what this test issued."""
    node = nodes.start("counter-2")
    vm = await make_vm(node.url, "c2")
    try:
        assert await vm.login("2345") and await vm.open_counter() and vm.status == "open"
        assert not await vm.call_next()
        assert vm.notice == "Nobody is waiting."
        for service in ("general", "payments", "documents"):
            await vm.client.issue_ticket(service)
        await refresh(vm)
        # c2 serves general and documents: the payments ticket is not its business.
        assert [(w["label"][0], w["service"]) for w in vm.waiting] == [
            ("A", "General enquiries"), ("C", "Documents and certificates")]
        assert await vm.call_next()
        assert vm.current_label.startswith("A") and vm.current_status == "called"
        assert vm.waited_text.startswith("waited 0:0")
        assert [w["label"][0] for w in vm.waiting] == ["C"]
        assert await vm.recall()
        assert await vm.start() and vm.current_status == "serving"
        done_id = vm.current["id"]
        assert await vm.done()
        assert vm.current == {}
        assert (await vm.client.ticket(done_id))["status"] == "completed"
    finally:
        await vm.client.close()


async def test_call_next_at_a_closed_counter_is_the_nodes_409_by_its_code(shared_node: NodeProcess) -> None:
    vm = await make_vm(shared_node.url, "c3")
    try:
        assert await vm.login("3456") and await vm.close_counter()
        assert not vm.can_call_next
        assert not await vm.call_next()  # the shortcut key still reaches the node, which refuses
        assert vm.error == "Call next: the counter is not open; open it first"
        assert vm.logged_in  # a 409 does not log anybody out
    finally:
        await vm.client.close()


async def test_completing_a_ticket_that_is_not_being_served_is_a_409(
    vms: dict[str, CounterViewModel],
) -> None:
    vm = vms["c1"]
    t = await vm.client.issue_ticket("general")
    assert await vm.call_ticket(t["id"])
    # Meanwhile the ticket went back to the queue (this screen did not hear it yet).
    await vm.client.ticket_action("c1", t["id"], "transfer", {"to_service": "payments"})
    assert not await vm.done()
    assert vm.error == "Done: not possible for this ticket now"  # the 409 by its code, translated


async def test_a_ticket_another_counter_called_first_is_a_409(vms: dict[str, CounterViewModel]) -> None:
    t = await vms["c1"].client.issue_ticket("general")
    await refresh(vms["c2"])
    assert any(w["id"] == t["id"] for w in vms["c2"].waiting)
    assert await vms["c1"].call_ticket(t["id"])
    assert not await vms["c2"].call_ticket(t["id"])  # the c2 screen was one step behind
    assert vms["c2"].error == "Call: this ticket is no longer waiting"  # the 409 by its code


async def test_call_a_specific_ticket_no_show_and_transfer_to_a_service(
    vms: dict[str, CounterViewModel],
) -> None:
    vm = vms["c1"]
    a = await vm.client.issue_ticket("general")
    b = await vm.client.issue_ticket("general")
    assert await vm.call_ticket(b["id"])
    assert vm.current_label == b["label"]
    assert not await vm.no_show()  # the first press only asks
    assert vm.confirming == "no_show" and (await vm.client.ticket(b["id"]))["status"] == "called"
    assert await vm.no_show()
    assert (await vm.client.ticket(b["id"]))["status"] == "no_show" and vm.current == {}
    assert await vm.call_ticket(a["id"])
    assert await vm.transfer("documents")
    moved = await vm.client.ticket(a["id"])
    assert (moved["status"], moved["service"]) == ("waiting", "documents")
    await refresh(vm, vms["c3"])
    assert all(w["id"] != a["id"] for w in vm.waiting)  # c1 does not serve documents
    assert any(w["id"] == a["id"] for w in vms["c3"].waiting)


async def test_transfer_to_a_counter_keeps_the_ticket_for_that_counter_only(
    vms: dict[str, CounterViewModel],
) -> None:
    c1, c2, c3 = vms["c1"], vms["c2"], vms["c3"]
    assert c1.counters == [] and not c1.can_transfer  # nothing to transfer yet
    t = await c1.client.issue_ticket("payments")
    assert await c1.call_ticket(t["id"])
    # Only the counters that serve payments (c3; c2 does not) are offered, and every
    # service but the ticket's own.
    assert [c["id"] for c in c1.counters] == ["c3"] and c1.can_transfer
    assert {s["id"] for s in c1.transfer_services} == {"general", "documents"}
    assert await c1.transfer_to("counter:c3")
    assert (await c1.client.ticket(t["id"]))["counter"] == "c3"
    await refresh(c1, c2, c3)
    # c1 serves payments too, but the ticket is kept for c3.
    assert any(w["id"] == t["id"] for w in c3.waiting)
    assert all(w["id"] != t["id"] for w in c1.waiting + c2.waiting)
    assert await c3.call_ticket(t["id"]) and c3.current_label == t["label"]
    with pytest.raises(ValueError):
        await c1.transfer()


class Clock:
    """A clock the test moves by hand (the guard time and the confirmation window)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def ticket_states(client: NodeClient, *tickets: dict[str, Any]) -> list[tuple[str, int | None]]:
    out = []
    for t in tickets:
        now = await client.ticket(t["id"])
        out.append((now["status"], now["position"]))
    return out


async def test_two_call_next_presses_within_the_guard_call_one_ticket_and_undo_restores_its_place(
    nodes: Nodes,
) -> None:
    node = nodes.start("counter-1")
    clock = Clock()
    vm = await make_vm(node.url, "c1", clock=clock, guard_s=3.0)
    try:
        assert await vm.login("1234") and await vm.open_counter()
        a, b, c = [await vm.client.issue_ticket("general") for _ in range(3)]
        before = await ticket_states(vm.client, a, b, c)
        assert before == [("waiting", 1), ("waiting", 2), ("waiting", 3)]
        # A double tap: both presses land before the first reply.
        first, second = await asyncio.gather(vm.call_next(), vm.call_next())
        assert (first, second) == (True, False)
        clock.now += 0.009  # and a third press 9 ms later
        assert not await vm.call_next()
        assert vm.notice == f"{a['label']} was just called."
        assert await ticket_states(vm.client, a, b, c) == [("called", None), ("waiting", 1), ("waiting", 2)]
        assert vm.current_label == a["label"] and vm.can_undo
        # Undo: the ticket goes back to its own place, first in line.
        assert await vm.undo()
        assert await ticket_states(vm.client, a, b, c) == before
        assert vm.current == {} and not vm.can_undo
        assert vm.notice == f"{a['label']} is back in the queue at its place."
        await refresh(vm)
        assert [w["id"] for w in vm.waiting] == [a["id"], b["id"], c["id"]]
    finally:
        await vm.client.close()


async def test_call_next_over_a_called_ticket_and_no_show_need_a_second_press_and_undo_reinstates(
    nodes: Nodes,
) -> None:
    node = nodes.start("counter-1")
    clock = Clock()
    vm = await make_vm(node.url, "c1", clock=clock, guard_s=3.0, confirm_s=8.0)
    try:
        assert await vm.login("1234") and await vm.open_counter()
        a, b = [await vm.client.issue_ticket("general") for _ in range(2)]
        assert await vm.call_next()
        clock.now += 5  # past the guard: the citizen has not come
        assert not await vm.call_next()
        assert vm.confirming == "call_next" and vm.notice.startswith(f"{a['label']} has not come.")
        assert await ticket_states(vm.client, a, b) == [("called", None), ("waiting", 1)]
        clock.now += 9  # the confirmation ran out: the next press asks again
        assert not await vm.call_next()
        assert await vm.call_next()  # confirmed
        assert await ticket_states(vm.client, a, b) == [("no_show", None), ("called", None)]
        # No-show by the button: asks first, then marks; undo reinstates b at its place.
        assert vm.can_no_show and not vm.can_done
        assert not await vm.no_show() and vm.confirming == "no_show"
        assert (await vm.client.ticket(b["id"]))["status"] == "called"
        assert await vm.no_show()
        assert (await vm.client.ticket(b["id"]))["status"] == "no_show" and vm.can_undo
        c = await vm.client.issue_ticket("general")
        assert await vm.undo()
        assert await ticket_states(vm.client, b, c) == [("waiting", 1), ("waiting", 2)]
    finally:
        await vm.client.close()


async def test_buttons_follow_what_is_possible_and_the_ticket_shows_its_details(nodes: Nodes) -> None:
    node = nodes.start("counter-1")
    clock = Clock()
    vm = await make_vm(node.url, "c1", clock=clock, language="fr")
    try:
        assert not (vm.can_call_next or vm.can_recall or vm.can_done or vm.can_undo)  # locked
        assert await vm.login("1234")
        assert not vm.can_call_next  # closed
        assert (vm.can_open, vm.can_pause, vm.can_close) == (True, False, False)
        assert await vm.open_counter() and vm.can_call_next
        assert (vm.can_open, vm.can_pause, vm.can_close) == (False, True, True)
        assert vm.header_text == "Guichet 1 : ouvert"  # its name from configuration, in French
        vm.language = "sw"
        assert vm.header_text == "Dirisha 1: wazi"
        vm.language = "fr"
        t = await vm.client.issue_ticket("payments", priority=1, language="sw")
        assert await vm.call_next()
        assert (vm.can_recall, vm.can_start, vm.can_no_show, vm.can_done) == (True, True, True, False)
        assert vm.current_details == "Paiements  ·  Kiswahili  ·  Prioritaire"
        assert await vm.start()
        assert (vm.can_recall, vm.can_start, vm.can_no_show, vm.can_done) == (False, False, False, True)
        assert not vm.can_undo  # starting cannot be undone; the call before it no longer either
        before = vm.served_today
        assert await vm.done()
        assert vm.served_today == before + 1 and vm.current_details == ""
        await refresh(vm)
        assert vm.served_today == before + 1  # the node counts the same
        assert (await vm.client.ticket(t["id"]))["status"] == "completed"
    finally:
        await vm.client.close()


async def test_walk_in_ticket(vms: dict[str, CounterViewModel]) -> None:
    vm = vms["c1"]
    label = await vm.issue_walkin("payments")
    assert label and label.startswith("B")
    assert vm.notice == f"Issued {label}" and any(w["label"] == label for w in vm.waiting)


async def test_logout_ends_the_session_at_the_node(shared_node: NodeProcess) -> None:
    vm = await make_vm(shared_node.url, "c2")
    try:
        assert await vm.login("2345")
        token = vm.client.token
        assert await vm.logout()
        assert not vm.logged_in and vm.staff_name == "" and vm.client.token is None
        async with NodeClient(shared_node.url, token=token) as thief:
            with pytest.raises(Unauthorized):
                await thief.set_counter_status("c2", "pause")
    finally:
        await vm.client.close()


async def test_logout_with_the_node_gone_still_locks_the_screen(dead_client: NodeClient) -> None:
    vm = CounterViewModel(dead_client, "c1", now=now)
    vm.logged_in, vm.staff_name, dead_client.token = True, "Amina", "some-token"
    assert not await vm.logout()
    assert not vm.logged_in and dead_client.token is None
    assert vm.login_error == "Logged out here; the node could not be told."


async def test_an_expired_session_asks_to_log_in_again(nodes: Nodes) -> None:
    node = nodes.start("counter-1", edit=lambda c: set_security(c, "session_ttl_s = 1"))
    vm = await make_vm(node.url, "c1")
    try:
        assert await vm.login("1234")
        await asyncio.sleep(1.2)
        assert not await vm.open_counter()
        assert not vm.logged_in and vm.error.endswith("Log in again.")
        assert vm.error == "Open: not allowed (your session has ended). Log in again."
    finally:
        await vm.client.close()


async def test_the_counter_speaks_the_staff_language(shared_node: NodeProcess) -> None:
    vm = await make_vm(shared_node.url, "c3", language="fr")
    try:
        assert not await vm.login("0000")
        # The node's refusals by their code, in the clerk's language (never its English text).
        assert vm.login_error == "Se connecter : code PIN erroné"
        assert await vm.login("3456") and await vm.close_counter()
        assert not await vm.call_next()
        assert vm.error == "Appeler le suivant : le guichet n'est pas ouvert ; ouvrez-le d'abord"
        assert vm.header_text == "Guichet 3 : fermé"  # the counter's name from configuration
        assert vm.state_text("closed") == "fermé"
        assert any(s["name"] == "Paiements" for s in vm.services)
        vm.language = "sw"
        assert vm.state_text("closed") == "imefungwa"
        assert any(s["name"] == "Malipo" for s in vm.services)
    finally:
        await vm.client.close()


async def test_unreachable_node(dead_client: NodeClient) -> None:
    vm = CounterViewModel(dead_client, "c1", now=now, login_required=False)
    assert not await vm.call_next()
    assert vm.offline and vm.error.startswith("Cannot reach the node")


@pytest.mark.slow
async def test_losing_a_call_made_while_apart_shows_who_won(branch: Any) -> None:
    """Two counter nodes replicating over 127.0.0.1 (counter-1 serves c1, counter-2 serves c2
    and c3). While they are apart (one node stopped, then the other) both call the same
    ticket; after the heal the earliest call (c1's) wins and c2's screen, a view-model
    following its own node, says who won, once, in its language."""
    b = branch("counter-1", "counter-2")
    one, two = b.start("counter-1"), b.start("counter-2")
    c1 = await make_vm(one.url, "c1")
    c2 = await make_vm(two.url, "c2")
    try:
        assert await c1.login("1234") and await c1.open_counter()
        assert await c2.login("2345") and await c2.open_counter()
        label = await c1.issue_walkin("general")
        assert label
        state = await wait_for_async(
            c2.client.state, lambda s: any(t["label"] == label for t in s["waiting"]), what="ticket replicated")
        ticket_id = next(t["id"] for t in state["waiting"] if t["label"] == label)
        await c2.client.close()

        # Apart: counter-2 is down while c1 calls, counter-1 is down while c2 calls.
        two.stop()
        assert await c1.call_ticket(ticket_id) and c1.current["label"] == label
        await c1.client.close()
        one.stop()
        two = b.start("counter-2")
        c2 = await make_vm(two.url, "c2", language="es")
        assert await c2.login("2345")
        assert await c2.call_ticket(ticket_id) and c2.current["label"] == label
        assert c2.superseded_notice == ""

        # Heal: counter-1 comes back; c2's screen follows its own node's stream.
        connected = asyncio.Event()

        def on_conn(ok: bool, why: str) -> None:
            c2.set_connected(ok, why)
            if ok:
                connected.set()

        follow = asyncio.create_task(c2.client.follow(
            on_state=c2.apply_state, on_event=c2.apply_event, on_connection=on_conn))
        try:
            await asyncio.wait_for(connected.wait(), 10)
            b.start("counter-1")
            await wait_for(lambda: c2.superseded_notice, timeout=30, what="the superseded notice")
            assert c2.superseded_notice == f"{label} fue llamado primero en Ventanilla 1. Llame al siguiente."
            assert c2.current == {}
            c2.language = "en"
            assert c2.superseded_notice == f"{label} was called at Counter 1 first. Call next."
            c2.dismiss_superseded()
            c2.apply_state(await c2.client.state())  # the counter's own superseded entry again
            assert c2.superseded_notice == ""  # the same loss is told once
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
    finally:
        await c1.client.close()
        await c2.client.close()


async def test_served_today_counts_completions_made_elsewhere_at_this_counter_once(nodes: Nodes) -> None:
    """The screen follows its node's stream. Tickets its counter completes through another
    client (the counter's serial keypad, a second screen) count as served here too, as soon
    as the event comes, and its own Done is not counted again when its event comes back."""
    node = nodes.start("counter-2")
    vm = await make_vm(node.url, "c2")
    keypad = NodeClient(node.url, timeout=5.0)
    connected = asyncio.Event()

    def on_conn(ok: bool, why: str) -> None:
        vm.set_connected(ok, why)
        if ok:
            connected.set()

    follow = asyncio.create_task(vm.client.follow(on_state=vm.apply_state, on_event=vm.apply_event,
                                                  on_connection=on_conn))
    try:
        assert await vm.login("2345") and await vm.open_counter()
        await asyncio.wait_for(connected.wait(), 10)
        assert vm.served_today == 0
        await keypad.login("c2", "2345")
        for _ in range(2):
            await keypad.issue_ticket("general")
        t = await keypad.call_next("c2")
        await wait_for(lambda: vm.current.get("id") == t["id"], what="the keypad's call on the screen")
        await keypad.ticket_action("c2", t["id"], "start")
        await keypad.ticket_action("c2", t["id"], "complete")
        await wait_for(lambda: vm.served_today == 1, what="the keypad's completion counted")
        assert vm.current == {}
        # The screen's own Done counts once, also after its event comes back by the stream.
        assert await vm.call_next() and await vm.start() and await vm.done()
        assert vm.served_today == 2
        await keypad.issue_ticket("general")  # a later event: the Done's has been applied by then
        await wait_for(lambda: len(vm.waiting) == 1, what="the later ticket on the screen")
        assert vm.served_today == 2
        vm.apply_state(await vm.client.state())
        assert vm.served_today == 2  # the node counts the same
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await keypad.close()
        await vm.client.close()


def test_keyboard_shortcuts_need_a_login() -> None:
    vm = CounterViewModel(NodeClient("http://127.0.0.1:9"), "c1", now=now)
    assert not vm.handle_key("n")


def test_durations_read_as_clock_times() -> None:
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(-3) == "0:00"


def test_every_counter_message_is_in_the_template_and_translated() -> None:
    used = (used_msgids(COUNTER_DIR / "counter.kv", COUNTER_DIR / "viewmodels.py")
            | set(ACTIONS.values()) | set(STATES.values()) | set(NODE_ERRORS.values()))
    ids = CATALOGS.template_ids()
    assert used - set(ids) == set()
    for lang in LANGUAGES:
        missing = [i for i in ids if i not in CATALOGS.messages(lang)]
        assert not missing, (lang, missing)
