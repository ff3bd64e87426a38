"""Each conflict rule of docs/conflicts.md, between real nodes cut off from each other."""

from __future__ import annotations

from appliance.projection import state_hash


def issue(d, service="general", **body):
    return d.do(lambda c: d.node.branch.issue(c, {"service": service, **body}))


def act(d, counter, ticket, action, **body):
    return d.do(lambda c: d.node.branch.act(c, counter, ticket, action, body))


def call_next(d, counter):
    return d.do(lambda c: d.node.branch.call_next(c, counter))


def open_counter(d, counter):
    d.do(lambda c: d.node.branch.set_counter(c, counter, "open", None))


def ticket(d, ticket_id):
    return d.do(lambda c: d.node.branch.ticket(c, ticket_id))


def exchange(*devices):
    events = {(e.origin, e.seq): e for d in devices for e in d.events()}
    for d in devices:
        d.ingest(list(events.values()))
    hashes = {d.do(state_hash) for d in devices}
    assert len(hashes) == 1


def setup_partition(branch):
    kiosk, one, two = branch["kiosk"], branch["counter-1"], branch["counter-2"]
    open_counter(one, "c1")
    open_counter(two, "c2")
    t = issue(kiosk)
    exchange(kiosk, one, two)
    return kiosk, one, two, t


def test_two_counters_call_the_same_ticket_earliest_call_wins(branch):
    kiosk, one, two, t = setup_partition(branch)
    clock = branch["clock"]
    first = call_next(one, "c1")
    clock.ms += 1000
    second = call_next(two, "c2")
    assert first["id"] == second["id"] == t["id"]
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert final["status"] == "called" and final["counter"] == "c1"
    assert final["superseded"] == ["c2"]
    c2 = two.do(lambda c: two.node.branch.counter(c, "c2"))
    assert c2["current"] is None
    assert c2["superseded"] == [{"ticket": t["id"], "label": t["label"], "by_counter": "c1"}]


def test_the_loser_is_told_superseded_when_it_acts(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    exchange(kiosk, one, two)
    import pytest

    from appliance.errors import Conflict

    with pytest.raises(Conflict) as err:
        act(two, "c2", t["id"], "start")
    assert err.value.code == "superseded" and "Counter 1" in err.value.message


def test_a_call_that_went_further_wins_over_an_earlier_one(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], "start")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"], final["superseded"]) == ("serving", "c2", ["c1"])


def test_served_at_one_counter_and_no_show_at_another_completed_wins(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    act(one, "c1", t["id"], "no-show")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], "start")
    act(two, "c2", t["id"], "complete")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"]) == ("completed", "c2")


def test_no_show_beats_serving_and_the_server_can_still_complete(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    act(one, "c1", t["id"], "no-show")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], "start")
    exchange(kiosk, one, two)
    assert ticket(kiosk, t["id"])["status"] == "no_show"
    act(two, "c2", t["id"], "complete")  # the citizen really was at counter 2
    exchange(kiosk, one, two)
    assert ticket(kiosk, t["id"])["status"] == "completed"


def test_cancel_at_the_kiosk_and_call_at_a_counter_the_call_wins(branch):
    kiosk, one, two, t = setup_partition(branch)
    kiosk.do(lambda c: kiosk.node.branch.cancel(c, t["id"]))
    branch["clock"].ms += 1000
    call_next(one, "c1")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"]) == ("called", "c1")
    state = kiosk.do(lambda c: c.execute("SELECT state FROM tickets WHERE id = ?", (t["id"],)).fetchone()[0])
    assert '"cancel_ignored":true' in state  # recorded, ignored


def test_cancel_after_the_call_is_ignored_too(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    branch["clock"].ms += 1000
    kiosk.do(lambda c: kiosk.node.branch.cancel(c, t["id"]))
    exchange(kiosk, one, two)
    assert ticket(kiosk, t["id"])["status"] == "called"


def test_two_issuing_devices_never_give_the_same_number(branch):
    kiosk, one = branch["kiosk"], branch["counter-1"]
    a = [issue(kiosk)["label"] for _ in range(3)]
    b = [issue(one)["label"] for _ in range(3)]
    exchange(kiosk, one)
    assert a == ["A001", "A002", "A003"]
    assert b == ["A600", "A601", "A602"]
    labels = kiosk.do(lambda c: [r[0] for r in c.execute("SELECT label FROM tickets")])
    assert len(labels) == len(set(labels)) == 6


def test_transfer_while_recalled_elsewhere_last_transfer_decides_and_arrival_is_kept(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    branch["clock"].ms += 1000
    call_next(two, "c2")  # the same ticket, concurrently
    act(two, "c2", t["id"], "recall")
    branch["clock"].ms += 1000
    act(one, "c1", t["id"], "transfer", to_service="payments")
    branch["clock"].ms += 1000
    act(two, "c2", t["id"], "transfer", to_service="documents")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert final["service"] == "documents" and final["status"] == "waiting"
    assert final["issued_at"] == t["issued_at"]
    effective = kiosk.do(lambda c: c.execute("SELECT effective_ms, issued_ms FROM tickets WHERE id = ?",
                                             (t["id"],)).fetchone())
    assert effective[0] == effective[1]  # arrival time kept through transfers


# -- causal rules: completion and no-show are terminal against concurrent actions ------------

import itertools  # noqa: E402

import pytest  # noqa: E402

from appliance.errors import Conflict  # noqa: E402


def own_events(d, since=0):
    return [e for e in d.events() if e.origin == d.id and e.seq > since]


def head(d):
    return max((e.seq for e in d.events() if e.origin == d.id), default=0)


def counter_view(d, counter):
    return d.do(lambda c: d.node.branch.counter(c, counter))


def every_order(branch, devices, check):
    """Deliver each device's events to a fresh observer in every order of the devices
    (an origin's events arrive in their own order, as replication sends them); `check`
    sees the observer after each complete delivery; all orders must agree on the state."""
    import tempfile
    from pathlib import Path

    from appliance.config import load_config

    from .conftest import Device

    batches = [own_events(d) for d in devices]
    display = load_config(branch["kiosk"].node.config.data_dir.parent.parent / "display.toml")
    digests = set()
    for order in itertools.permutations(range(len(batches))):
        with tempfile.TemporaryDirectory() as tmp:
            import dataclasses

            # the display's identity (its key is on the roster) with an empty store
            config = dataclasses.replace(display, data_dir=Path(tmp))
            (Path(tmp) / "device.key").write_bytes((display.data_dir / "device.key").read_bytes())
            observer = Device(config, branch["clock"])
            try:
                for i in order:
                    assert observer.ingest(batches[i]).rejected == []
                check(observer)
                digests.add(observer.do(state_hash))
            finally:
                observer.close()
    assert len(digests) == 1


def complete(d, counter, t):
    act(d, counter, t["id"], "start")
    return act(d, counter, t["id"], "complete")


@pytest.mark.parametrize("loser_first", [False, True], ids=["winner-clock-first", "loser-clock-first"])
def test_both_counters_complete_the_same_ticket_the_loser_is_in_both_superseded_lists(branch, loser_first):
    """Issue 11, scenario 2: counter 1 calls, starts and completes a ticket; counter 2, cut
    off, then does the same (every answer 200). After the merge the ticket is completed and
    counter 2 is in the ticket's and its own `superseded`, whichever clock ran first."""
    kiosk, one, two, t = setup_partition(branch)
    clock = branch["clock"]
    first, second = (two, one) if loser_first else (one, two)
    first_counter, second_counter = ("c2", "c1") if loser_first else ("c1", "c2")
    assert call_next(first, first_counter)["id"] == t["id"]
    assert complete(first, first_counter, t)["status"] == "completed"
    clock.ms += 1000
    assert call_next(second, second_counter)["id"] == t["id"]
    assert complete(second, second_counter, t)["status"] == "completed"
    exchange(kiosk, one, two)

    def check(d):
        final = ticket(d, t["id"])
        assert (final["status"], final["counter"]) == ("completed", first_counter)
        assert final["superseded"] == [second_counter]
        lost = counter_view(d, second_counter)["superseded"]
        assert lost == [{"ticket": t["id"], "label": t["label"], "by_counter": first_counter}]

    for d in (kiosk, one, two):
        check(d)
    every_order(branch, [kiosk, one, two], check)


def test_the_loser_is_told_while_its_events_are_still_arriving(branch):
    """Issue 11, scenario 2 during catch-up: counter 2's call, start and complete reach
    counter 1 one at a time; from the moment its call is there, it is superseded."""
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    complete(one, "c1", t)
    branch["clock"].ms += 1000
    mark = head(two)
    call_next(two, "c2")
    complete(two, "c2", t)
    late = own_events(two, since=mark)
    assert [e.type for e in late] == ["ticket.called", "ticket.started", "ticket.completed"]
    for i, event in enumerate(late):
        one.ingest([event])
        final = ticket(one, t["id"])
        assert (final["status"], final["counter"], final["superseded"]) == ("completed", "c1", ["c2"]), i
        assert [s["ticket"] for s in counter_view(one, "c2")["superseded"]] == [t["id"]]


@pytest.mark.parametrize("transfer_clock_first", [True, False], ids=["transfer-clock-first", "completion-clock-first"])
def test_a_transfer_across_a_partition_never_reopens_a_completed_ticket(branch, transfer_clock_first):
    """Issue 11, scenario 3: counter 1 calls, starts and completes B004; counter 2, cut
    off, called it and transferred it to another service. After the merge B004 stays
    completed at counter 1 (the transfer is void), whichever clock ran first, and counter 1
    never calls the same citizen again."""
    kiosk, one, two = branch["kiosk"], branch["counter-1"], branch["counter-2"]
    clock = branch["clock"]
    open_counter(one, "c1")
    open_counter(two, "c2")
    for _ in range(4):
        issue(kiosk, "payments")
    exchange(kiosk, one, two)
    waiting = kiosk.do(lambda c: kiosk.node.branch.state(c))["waiting"]
    b004 = next(w for w in waiting if w["label"] == "B004")

    def counter_1():
        assert one.do(lambda c: one.node.branch.call_ticket(c, "c1", b004["id"]))["counter"] == "c1"
        assert complete(one, "c1", b004)["status"] == "completed"

    def counter_2():
        assert two.do(lambda c: two.node.branch.call_ticket(c, "c2", b004["id"]))["counter"] == "c2"
        moved = act(two, "c2", b004["id"], "transfer", to_service="documents")
        assert (moved["status"], moved["service"]) == ("waiting", "documents")

    first, second = (counter_2, counter_1) if transfer_clock_first else (counter_1, counter_2)
    first()
    clock.ms += 1000
    second()
    exchange(kiosk, one, two)

    def check(d):
        final = ticket(d, b004["id"])
        assert (final["status"], final["counter"], final["service"]) == ("completed", "c1", "payments")
        assert final["superseded"] == ["c2"]

    for d in (kiosk, one, two):
        check(d)
    every_order(branch, [kiosk, one, two], check)
    # counter 1 serves on: B004 is not called a second time
    called = []
    while (t := call_next(one, "c1")) is not None:
        called.append(t["label"])
        complete(one, "c1", t)
    assert "B004" not in called and called


@pytest.mark.parametrize("action", ["requeue", "transfer"])
@pytest.mark.parametrize("terminal", ["complete", "no-show"])
def test_completion_and_no_show_void_a_concurrent_requeue_or_transfer(branch, action, terminal):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    if terminal == "complete":
        complete(one, "c1", t)
    else:
        act(one, "c1", t["id"], "no-show")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], action, **({"to_service": "payments"} if action == "transfer" else {}))
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    status = "completed" if terminal == "complete" else "no_show"
    assert (final["status"], final["counter"], final["service"], final["superseded"]) == (status, "c1", "general", ["c2"])
    if terminal == "no-show":
        # A requeue made knowing of the no-show is a new decision: it stands.
        back = act(two, "c2", t["id"], "requeue")
        assert back["status"] == "waiting"
        exchange(kiosk, one, two)
        assert ticket(one, t["id"])["status"] == "waiting"


@pytest.mark.parametrize("action", ["requeue", "transfer"])
def test_a_start_elsewhere_voids_a_concurrent_requeue_or_transfer(branch, action):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    act(one, "c1", t["id"], action, **({"to_service": "payments"} if action == "transfer" else {}))
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], "start")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"], final["service"], final["superseded"]) == ("serving", "c2", "general", ["c1"])
    assert act(two, "c2", t["id"], "complete")["status"] == "completed"
    exchange(kiosk, one, two)
    assert ticket(one, t["id"])["status"] == "completed"
    every_order(branch, [kiosk, one, two], lambda d: None)


@pytest.mark.parametrize("action", ["requeue", "transfer"])
@pytest.mark.parametrize("call_clock_first", [True, False], ids=["call-clock-first", "move-clock-first"])
def test_a_requeue_or_transfer_wins_over_a_concurrent_call_and_the_caller_is_told(branch, call_clock_first, action):
    kiosk, one, two, t = setup_partition(branch)

    def counter_1():
        call_next(one, "c1")
        act(one, "c1", t["id"], action, **({"to_service": "payments"} if action == "transfer" else {}))

    def counter_2():
        assert call_next(two, "c2")["id"] == t["id"]

    first, second = (counter_2, counter_1) if call_clock_first else (counter_1, counter_2)
    first()
    branch["clock"].ms += 1000
    second()
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["superseded"]) == ("waiting", ["c2"])
    assert final["service"] == ("payments" if action == "transfer" else "general")
    assert [s["ticket"] for s in counter_view(two, "c2")["superseded"]] == [t["id"]]
    assert counter_view(two, "c2")["current"] is None
    with pytest.raises(Conflict) as err:
        act(two, "c2", t["id"], "start")
    assert err.value.code == "superseded"
    every_order(branch, [kiosk, one, two], lambda d: None)


def test_call_against_a_concurrent_no_show_the_no_show_stands(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(two, "c2")
    branch["clock"].ms += 1000
    call_next(one, "c1")
    act(one, "c1", t["id"], "no-show")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"], final["superseded"]) == ("no_show", "c1", ["c2"])
    assert act(two, "c2", t["id"], "requeue")["status"] == "waiting"  # the citizen turned up after all
    every_order(branch, [kiosk, one, two], lambda d: None)


def test_two_counters_start_the_same_ticket_the_earliest_call_serves(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(two, "c2")
    act(two, "c2", t["id"], "start")
    branch["clock"].ms += 1000
    call_next(one, "c1")
    act(one, "c1", t["id"], "start")
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"], final["superseded"]) == ("serving", "c2", ["c1"])
    with pytest.raises(Conflict):
        act(one, "c1", t["id"], "transfer", to_service="payments")


def test_a_transfer_of_a_waiting_ticket_loses_to_a_concurrent_cancel(branch):
    kiosk, one, two, t = setup_partition(branch)
    act(one, "c1", t["id"], "transfer", to_service="payments")  # waiting: no call needed
    branch["clock"].ms += 1000
    kiosk.do(lambda c: kiosk.node.branch.cancel(c, t["id"]))
    exchange(kiosk, one, two)
    assert ticket(two, t["id"])["status"] == "cancelled"
    every_order(branch, [kiosk, one, two], lambda d: None)


def test_one_booking_checked_in_at_two_kiosks_during_a_partition(branch):
    kiosk, one, two = branch["kiosk"], branch["counter-1"], branch["counter-2"]
    slot = branch["clock"].ms + 15 * 60_000
    kiosk.do(lambda c: kiosk.node.log.append(c, "booking.created", {
        "code": "K7Q2M9", "service": "general", "start": slot // 1000, "end": slot // 1000 + 900,
        "status": "booked", "language": "en"}))
    exchange(kiosk, one, two)
    a = kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": "K7Q2M9"}))
    b = one.do(lambda c: one.node.branch.issue(c, {"booking_code": "K7Q2M9"}))
    assert a["label"] != b["label"]
    exchange(kiosk, one, two)
    for d in (kiosk, one, two):
        assert {ticket(d, x["id"])["booking_code"] for x in (a, b)} == {"K7Q2M9"}
    with pytest.raises(Conflict) as err:
        two.do(lambda c: two.node.branch.issue(c, {"booking_code": "K7Q2M9"}))
    assert err.value.code == "already_checked_in"


def test_a_recall_elsewhere_does_not_undo_a_completion(branch):
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    branch["clock"].ms += 1000
    call_next(two, "c2")
    act(two, "c2", t["id"], "recall")
    branch["clock"].ms += 1000
    complete(one, "c1", t)  # the clock says the recall came first: it does not matter
    exchange(kiosk, one, two)
    final = ticket(kiosk, t["id"])
    assert (final["status"], final["counter"], final["superseded"]) == ("completed", "c1", ["c2"])


def test_a_cancel_concurrent_with_a_call_stays_void_after_a_requeue(branch):
    """The cancel loses to a concurrent call even when that call's claim is gone by the
    time the cancel sorts (the counter requeued): the ticket waits, it is not cancelled."""
    kiosk, one, two, t = setup_partition(branch)
    call_next(one, "c1")
    act(one, "c1", t["id"], "requeue")
    branch["clock"].ms += 1000
    kiosk.do(lambda c: kiosk.node.branch.cancel(c, t["id"]))
    exchange(kiosk, one, two)
    final = ticket(two, t["id"])
    assert final["status"] == "waiting"
    every_order(branch, [kiosk, one, two], lambda d: None)


def test_events_without_seen_fold_as_before_in_clock_order(branch):
    """Events written before `seen` existed count as having seen everything earlier in the
    total order: a transfer after a completion is ignored, one before it reopens the ticket."""
    kiosk, one, two, t = setup_partition(branch)
    d = one

    def old(c, type_, **payload):
        d.node.log.append(c, type_, {"ticket": t["id"], **payload})

    d.do(lambda c: old(c, "ticket.called", counter="c1"))
    d.do(lambda c: old(c, "ticket.transferred", counter="c1", to_service="payments"))
    d.do(lambda c: old(c, "ticket.called", counter="c1"))
    d.do(lambda c: old(c, "ticket.started", counter="c1"))
    d.do(lambda c: old(c, "ticket.completed", counter="c1"))
    d.do(lambda c: old(c, "ticket.transferred", counter="c1", to_service="documents"))
    final = ticket(d, t["id"])
    assert (final["status"], final["service"], final["superseded"]) == ("completed", "payments", [])
    d.do(d.node.projection.rebuild)
    assert ticket(d, t["id"]) == final
