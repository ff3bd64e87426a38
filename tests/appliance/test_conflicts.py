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
