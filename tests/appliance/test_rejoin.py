"""A device offline for an hour of a busy day (DESIGN §4 and issue 17): a counter whose call
is stuck while it is away does not hold up the line, and a display and that counter show the
branch's state again as soon as they have the hour's events."""

from __future__ import annotations

import random

from appliance.projection import state_hash

from .test_conflicts import call_next, exchange, issue, open_counter

HOUR_MS = 3600 * 1000
SERVICES = ("general", "payments", "documents")


def test_a_stuck_call_does_not_block_the_line_and_devices_back_after_an_hour_show_the_state(branch):
    kiosk, one, two, display, clock = (branch[k] for k in ("kiosk", "counter-1", "counter-2", "display", "clock"))
    open_counter(one, "c1")
    open_counter(two, "c2")
    open_counter(two, "c3")
    first = issue(kiosk)
    second = issue(kiosk)
    exchange(kiosk, one, two, display)
    stuck = call_next(one, "c1")
    assert stuck["id"] == first["id"]
    exchange(kiosk, one, two, display)

    # counter-1 and the display lose the LAN for an hour; the kiosk and counter-2 go on
    rnd = random.Random(7)
    for minute in range(60):
        clock.ms += 60_000
        for _ in range(10):  # 600 tickets in the hour
            issue(kiosk, rnd.choice(SERVICES))
        for counter in ("c2", "c3"):
            for _ in range(3):
                t = call_next(two, counter)
                if t is not None:
                    two.do(lambda c, t=t, counter=counter: two.node.branch.act(c, counter, t["id"], "start", {}))
        if minute % 10 == 9:
            exchange(kiosk, two)
        if minute == 9:
            # the line moved past the ticket stuck at counter 1: it is not waiting, nobody else calls it
            held = two.do(lambda c: two.node.branch.ticket(c, first["id"]))
            assert held["status"] == "called" and held["counter"] == "c1"
            assert call_next(two, "c2")["id"] != first["id"]
    # counter-1, alone, notices its call timed out (call_timeout_s) and closes it as a no-show
    assert one.do(one.node.branch.expire_calls) == 1

    # back on the LAN: one exchange of the hour's events and both show the branch's state
    exchange(kiosk, one, two, display)
    truth = kiosk.do(lambda c: kiosk.node.branch.state(c))
    for d in (display, one):
        seen = d.do(lambda c, d=d: d.node.branch.state(c))
        assert [s["waiting"] for s in seen["services"]] == [s["waiting"] for s in truth["services"]]
        assert [(c["id"], c["current"] and c["current"]["id"]) for c in seen["counters"]] == \
               [(c["id"], c["current"] and c["current"]["id"]) for c in truth["counters"]]
        assert seen["recent_calls"] == truth["recent_calls"]
        assert d.do(state_hash) == kiosk.do(state_hash)
    after = kiosk.do(lambda c: kiosk.node.branch.ticket(c, first["id"]))
    assert after["status"] == "no_show"
    assert sum(s["waiting"] for s in truth["services"]) > 0
    # counter 1 picks up the line where it stands now
    nxt = call_next(one, "c1")
    assert nxt is not None and nxt["id"] not in (first["id"],)
