"""Queue rules (DESIGN §5) on a real node: who is called next, numbers, no-shows, estimates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import queue as q
from appliance.config import QueueRules
from appliance.errors import BadRequest, Conflict, NotFound

from .test_conflicts import act, call_next, issue, open_counter, ticket


@pytest.fixture
def kiosk(branch):
    d = branch["kiosk"]
    for counter in ("c1", "c2", "c3"):
        open_counter(d, counter)
    return d


def test_priority_class_first_then_arrival(kiosk, branch):
    first = issue(kiosk)
    branch["clock"].ms += 1000
    urgent = issue(kiosk, priority=1)
    branch["clock"].ms += 1000
    assert call_next(kiosk, "c1")["id"] == urgent["id"]
    assert call_next(kiosk, "c1")["id"] == first["id"]


def test_a_counter_serves_its_services_by_earliest_arrival_then_service_order(kiosk, branch):
    pay = issue(kiosk, "payments")
    branch["clock"].ms += 1000
    gen = issue(kiosk, "general")
    branch["clock"].ms += 1000
    doc = issue(kiosk, "documents")
    # Counter 1 serves general and payments: the earliest of those, then the other.
    assert call_next(kiosk, "c1")["id"] == pay["id"]
    assert call_next(kiosk, "c1")["id"] == gen["id"]
    assert call_next(kiosk, "c1") is None  # documents is not counter 1's
    assert call_next(kiosk, "c3")["id"] == doc["id"]


def test_long_waiters_are_promoted_to_the_top_class():
    rules = QueueRules(max_priority=1, promote_after_s=600)
    old = q.Waiting("old", "general", 0, 0, None)
    urgent = q.Waiting("urgent", "general", 1, 500_000, None)
    assert q.next_for_counter([old, urgent], "c1", ["general"], {"general": rules}, now_ms=550_000).id == "urgent"
    # Ten minutes after arriving the old ticket counts as priority too, and it came first.
    assert q.next_for_counter([old, urgent], "c1", ["general"], {"general": rules}, now_ms=600_000).id == "old"


def test_a_ticket_transferred_to_a_counter_waits_only_for_that_counter():
    rules = {"general": QueueRules()}
    t = q.Waiting("t", "general", 0, 0, "c2")
    assert q.next_for_counter([t], "c1", ["general"], rules, 0) is None
    assert q.next_for_counter([t], "c2", ["documents"], rules, 0).id == "t"


def test_recalls_beyond_the_limit_make_a_no_show_which_can_be_requeued(kiosk):
    t = issue(kiosk)
    call_next(kiosk, "c1")
    for _ in range(3):
        assert act(kiosk, "c1", t["id"], "recall")["status"] == "called"
    assert act(kiosk, "c1", t["id"], "recall")["status"] == "no_show"
    requeued = act(kiosk, "c2", t["id"], "requeue")
    assert requeued["status"] == "waiting" and requeued["position"] == 1


def test_a_called_ticket_not_started_in_time_becomes_a_no_show(kiosk, branch):
    t = issue(kiosk)
    call_next(kiosk, "c1")
    assert kiosk.do(kiosk.node.branch.expire_calls) == 0
    branch["clock"].ms += 601_000
    assert kiosk.do(kiosk.node.branch.expire_calls) == 1
    assert ticket(kiosk, t["id"])["status"] == "no_show"


def test_impossible_transitions_are_refused(kiosk):
    t = issue(kiosk)
    with pytest.raises(Conflict) as err:
        act(kiosk, "c1", t["id"], "complete")
    assert err.value.code == "invalid_transition"
    call_next(kiosk, "c1")
    with pytest.raises(Conflict):
        act(kiosk, "c1", t["id"], "complete")  # called, not yet being served
    with pytest.raises(Conflict) as err:
        act(kiosk, "c2", t["id"], "start")
    assert err.value.code == "not_your_ticket"


def test_call_next_ends_the_current_ticket(kiosk):
    a, b, c = issue(kiosk), issue(kiosk), issue(kiosk)
    call_next(kiosk, "c1")
    act(kiosk, "c1", a["id"], "start")
    call_next(kiosk, "c1")  # a was being served: completed
    call_next(kiosk, "c1")  # b was only called: no-show
    assert [ticket(kiosk, t["id"])["status"] for t in (a, b, c)] == ["completed", "no_show", "called"]


def test_a_closed_counter_cannot_call(branch):
    d = branch["kiosk"]
    issue(d)
    with pytest.raises(Conflict) as err:
        call_next(d, "c1")
    assert err.value.code == "counter_not_open"


def test_numbers_restart_each_day_and_overflow_stays_disjoint(kiosk, branch):
    assert issue(kiosk)["label"] == "A001"
    branch["clock"].ms += 24 * 3600 * 1000
    assert issue(kiosk)["label"] == "A001"
    assert q.ticket_number(599, (1, 599)) == 1001
    assert q.ticket_number(None, (600, 799)) == 600
    assert q.ticket_number(799, (600, 799)) == 1600
    assert q.ticket_number(1799, (600, 799)) == 2600
    assert q.ticket_number(None, (600, 799), digits=4) == 6000
    assert q.ticket_number(7999, (600, 799), digits=4) == 16000


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(1, 998), min_size=1, max_size=7, unique=True), digits=st.integers(3, 4),
       counts=st.lists(st.integers(0, 2500), min_size=8, max_size=8))
def test_every_device_owns_an_endless_sequence_disjoint_from_every_other(cuts, digits, counts):
    """Disjoint roster ranges (any split of 1-999) give each device numbers that never run out,
    only grow, and never meet another device's, whatever each one issues cut off from the rest."""
    bounds = [0, *sorted(cuts), 999]
    ranges = [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i] + 1 <= bounds[i + 1]]
    seen: dict[int, int] = {}
    for device, numbers in enumerate(ranges):
        last = None
        for _ in range(counts[device]):
            n = q.ticket_number(last, numbers, digits)
            assert last is None or n > last
            assert seen.setdefault(n, device) == device, f"{n} given by devices {seen[n]} and {device}"
            last = n
    labels = {q.ticket_label("A", n, digits) for n in seen}
    assert len(labels) == len(seen)


def test_a_device_past_its_range_keeps_issuing_and_a_service_may_use_four_digits(sample_template, tmp_path):
    import dataclasses

    from appliance.config import load_config

    from .conftest import Device, ManualClock, copy_branch

    base = load_config(copy_branch(sample_template, tmp_path / "b")["kiosk"])
    config = dataclasses.replace(
        base,
        roster=tuple(dataclasses.replace(r, numbers=(1, 3)) if r.id == "kiosk" else r for r in base.roster),
        services=tuple(dataclasses.replace(s, rules={**s.rules, "digits": 4}) if s.id == "payments" else s
                       for s in base.services))
    d = Device(config, ManualClock())
    try:
        assert [issue(d)["label"] for _ in range(8)] == ["A001", "A002", "A003", "A1001", "A1002", "A1003",
                                                         "A2001", "A2002"]
        assert [issue(d, "payments")["label"] for _ in range(2)] == ["B0001", "B0002"]
    finally:
        d.close()


def test_wait_estimate_uses_position_open_counters_and_recent_service_times(kiosk, branch):
    clock = branch["clock"]
    served = issue(kiosk)
    call_next(kiosk, "c1")
    act(kiosk, "c1", served["id"], "start")
    clock.ms += 120_000
    act(kiosk, "c1", served["id"], "complete")
    tickets = [issue(kiosk) for _ in range(4)]
    # general is served by c1 and c2 (both open): 3 people ahead * 120 s / 2 counters.
    assert tickets[-1]["people_ahead"] == 3
    assert tickets[-1]["estimated_wait_s"] == 180
    assert q.estimate_wait_s(3, 0, 100) == 300  # nobody open yet: one counter assumed


def test_booking_check_in_uses_the_slot_start_and_refuses_twice(kiosk, branch):
    clock = branch["clock"]
    slot = clock.ms + 15 * 60_000
    kiosk.do(lambda c: kiosk.node.log.append(c, "booking.created", {
        "code": "K7Q2M9", "service": "documents", "start": slot // 1000, "end": slot // 1000 + 900,
        "status": "booked", "language": "en"}))
    walk_in = issue(kiosk, "documents")
    booked = kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": "K7Q2M9"}))
    assert booked["booking_code"] == "K7Q2M9" and booked["service"] == "documents"
    assert booked["position"] == 2  # its slot starts after the walk-in arrived
    with pytest.raises(Conflict) as err:
        kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": "K7Q2M9"}))
    assert err.value.code == "already_checked_in"
    assert walk_in["position"] == 1


def test_a_booking_that_never_reached_the_branch_checks_in_from_its_signed_qr(sample_template, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.config import load_config
    from sync.keys import public_key_text
    from sync.tokens import sign_token

    from .conftest import Device, ManualClock, copy_branch

    hq = Ed25519PrivateKey.generate()
    paths = copy_branch(sample_template, tmp_path / "b")
    with paths["kiosk"].open("a") as fh:
        fh.write(f'\n[hq]\npublic_key = "{public_key_text(hq.public_key())}"\n')
    clock = ManualClock()
    kiosk = Device(load_config(paths["kiosk"]), clock)
    try:
        start = clock.ms // 1000 + 600
        claims = {"typ": "booking", "code": "ABCD-2345", "branch": "kigali-main", "service": "payments",
                  "start": start, "end": start + 900, "exp": start + 3600}
        token = sign_token(hq, claims)
        with pytest.raises(NotFound) as err:  # a typed code the branch never heard of
            kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": "ABCD-2345"}))
        assert err.value.code == "unknown_booking" and "scan the QR" in err.value.message
        ticket = kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": token}))
        assert (ticket["booking_code"], ticket["service"], ticket["label"]) == ("ABCD-2345", "payments", "B001")
        forged = sign_token(Ed25519PrivateKey.generate(), {**claims, "code": "EVIL-0000"})
        with pytest.raises(BadRequest, match="not valid"):
            kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": forged}))
        other = sign_token(hq, {**claims, "code": "WXYZ-0000", "branch": "elsewhere"})
        with pytest.raises(Conflict, match="another branch"):
            kiosk.do(lambda c: kiosk.node.branch.issue(c, {"booking_code": other}))
    finally:
        kiosk.close()


def test_a_restart_never_overwrites_configuration_hq_set(branch):
    from appliance.model import config_events

    kiosk = branch["kiosk"]
    node = kiosk.node
    # HQ renamed a service (an event of origin hq:<branch>, here written straight to the projection).
    kiosk.do(lambda c: c.execute(
        "UPDATE config SET body = json_set(body, '$.names.en', 'Cashier'), origin = 'hq:kigali-main'"
        " WHERE kind = 'service' AND id = 'payments'"))
    appended = kiosk.do(lambda c: node.branch.sync_config(c, config_events(node.config)))
    assert appended == 0
    names = kiosk.do(lambda c: c.execute("SELECT json_extract(body, '$.names.en') FROM config"
                                         " WHERE kind = 'service' AND id = 'payments'").fetchone()[0])
    assert names == "Cashier"


def test_each_tickets_position_is_its_place_in_the_call_order(kiosk, branch):
    """The SQL position count agrees with the order call-next uses (queue.service_line)."""
    import random

    rnd = random.Random(7)
    clock = branch["clock"]
    for i in range(40):
        clock.ms += rnd.choice([1, 1000, 700_000])  # some long waits: promotion kicks in
        if rnd.random() < 0.2:
            code = f"BK{i:04d}"
            slot = clock.ms + rnd.choice([-1, 1]) * rnd.randint(0, 3_600_000)
            kiosk.do(lambda c, code=code, slot=slot: kiosk.node.log.append(c, "booking.created", {
                "code": code, "service": "general", "start": slot // 1000, "end": slot // 1000 + 900,
                "status": "booked"}))
            try:
                kiosk.do(lambda c, code=code: kiosk.node.branch.issue(c, {"booking_code": code}))
            except Conflict:
                pass  # a slot of another day
        else:
            issue(kiosk, rnd.choice(["general", "payments"]), priority=int(rnd.random() < 0.25))
    state = kiosk.do(lambda c: kiosk.node.branch.state(c))
    for service in ("general", "payments"):
        line = [t["id"] for t in state["waiting"] if t["service"] == service]
        assert len(line) > 5
        for place, ticket_id in enumerate(line, start=1):
            assert ticket(kiosk, ticket_id)["position"] == place, (service, ticket_id)
