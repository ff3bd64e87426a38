"""The node's wait estimate: learned from its own history, retrained nightly, shown as a range."""

from __future__ import annotations

import asyncio
import json
import math
import random

from appliance import waits, waits_train
from appliance.config import load_config

from tests.appliance.conftest import Device, ManualClock, copy_branch

DAY_MS = 86_400_000


def issue(d, service="general", **body):
    return d.do(lambda c: d.node.branch.issue(c, {"service": service, **body}))


def serve_day(d, clock, tickets=80):
    """A busy morning at counters c1 and c2: every ticket is issued, called, served."""
    for counter in ("c1", "c2"):
        d.do(lambda c, counter=counter: d.node.branch.set_counter(c, counter, "open", None))
    issued = []
    for i in range(tickets):
        clock.ms += 45_000
        issued.append(issue(d, priority=1 if i % 9 == 0 else 0))
        if i % 2:
            for counter in ("c1", "c2"):
                called = d.do(lambda c, counter=counter: d.node.branch.call_next(c, counter))
                if called:
                    d.do(lambda c, counter=counter, t=called: d.node.branch.act(c, counter, t["id"], "start", {}))
    while True:
        clock.ms += 60_000
        called = d.do(lambda c: d.node.branch.call_next(c, "c1"))
        if called is None:
            break
        d.do(lambda c, t=called: d.node.branch.act(c, "c1", t["id"], "start", {}))
    return issued


def test_each_issued_ticket_keeps_the_signals_it_was_estimated_from(branch):
    kiosk, clock = branch["kiosk"], branch["clock"]
    serve_day(kiosk, clock, tickets=12)
    rows = kiosk.do(lambda c: c.execute("SELECT ticket, signals FROM wait_features ORDER BY issued_ms").fetchall())
    assert len(rows) == 12
    sig = json.loads(rows[-1][1])
    assert {"ahead", "schedule_s", "les_s", "occupancy_s", "hour"} <= set(sig)
    # untrained: the point is today's formula and there is no range
    t = issue(kiosk)
    assert t["estimated_wait_range_s"] is None
    assert t["estimated_wait_s"] == waits.naive(json.loads(kiosk.do(
        lambda c: c.execute("SELECT signals FROM wait_features WHERE ticket = ?", (t["id"],)).fetchone()[0]))).p50
    # the issue event carries the wait as shown (HQ measures its error)
    assert issued_estimate(kiosk, t["id"]) == {"p50": t["estimated_wait_s"]}


def issued_estimate(d, ticket):
    payload = d.do(lambda c: c.execute("SELECT payload FROM events WHERE type = 'ticket.issued' AND subject = ?",
                                       (ticket,)).fetchone()[0])
    return json.loads(payload)["estimate"]


def test_the_node_retrains_at_a_new_day_and_shows_a_range(sample_template, tmp_path):
    paths = copy_branch(sample_template, tmp_path / "branch")
    clock = ManualClock()
    kiosk = Device(load_config(paths["kiosk"]), clock)
    try:
        served = serve_day(kiosk, clock)
        assert len(served) == 80
        clock.ms += DAY_MS
        asyncio.run(kiosk.node.retrain_waits())
        model = kiosk.node.branch.wait_model
        assert model is not None and model.pooled.meta["rows"] >= 60
        saved = json.loads((kiosk.node.data_dir / waits.MODEL_FILE).read_text())
        assert waits.BranchModel.from_json(saved) == model
        # what the day before says about today: the counters' usual hours, from their events
        ctx = kiosk.do(lambda c: kiosk.node.branch.wait_context(c, kiosk.node.branch.model(c),
                                                                kiosk.node.branch.today(kiosk.node.branch.model(c))))
        assert ctx.days == 1 and set(ctx.hours) >= {"c1", "c2"} and ctx.hours["c1"]
        assert "general" in ctx.mean and ctx.speed
        for counter in ("c1", "c2"):
            kiosk.do(lambda c, counter=counter: kiosk.node.branch.set_counter(c, counter, "open", None))
        for _ in range(6):
            clock.ms += 20_000
            t = issue(kiosk)
        low, high = t["estimated_wait_range_s"]
        sig = json.loads(kiosk.do(lambda c: c.execute("SELECT signals FROM wait_features WHERE ticket = ?",
                                                      (t["id"],)).fetchone()[0]))
        assert sig["context_days"] == 1  # the issue read today's usual hours and speeds from yesterday
        assert 0 <= low <= t["estimated_wait_s"] <= high
        # the issue event carries the range as shown, for HQ's estimate-error figures
        assert issued_estimate(kiosk, t["id"]) == {"p50": t["estimated_wait_s"], "p10": low, "p90": high}
        state = kiosk.do(kiosk.node.branch.state)
        general = next(s for s in state["services"] if s["id"] == "general")
        assert general["estimated_wait_range_s"] is not None
    finally:
        kiosk.close()
    # a restarted node uses the model it kept, without retraining
    again = Device(load_config(paths["kiosk"]), clock)
    try:
        assert again.node.branch.wait_model == model
    finally:
        again.close()


def test_a_model_of_another_version_is_ignored(tmp_path):
    (tmp_path / waits.MODEL_FILE).write_text(json.dumps({"version": 99}))
    assert waits.load_model(tmp_path) is None
    (tmp_path / waits.MODEL_FILE).write_text("{not json")
    assert waits.load_model(tmp_path) is None


def test_training_needs_enough_history():
    assert waits_train.fit([({"x": 1.0}, 10.0)] * 5) is None


H = 3_600_000


def test_a_counter_finishing_its_last_ticket_before_a_break_is_not_open_all_afternoon():
    ctx = waits.DayContext("2026-03-02", 0, {"c1": ((9 * H, 12 * H), (13 * H, 16 * H)), "c2": ((9 * H, 12 * H),)},
                           {}, {}, {})
    # still open at 12:05, serving the ticket it called before noon: back at 13:00, not before
    assert waits._availability("c1", True, ctx, 12 * H + 300_000) == [(13 * H, 16 * H)]
    # a counter that goes home at noon calls nobody after its last ticket
    assert waits._availability("c2", True, ctx, 12 * H + 300_000) == []
    # open long after its usual hours (staff stayed): it counts as open
    assert waits._availability("c2", True, ctx, 13 * H) == [(13 * H, waits.INF_MS)]


def _counter(free_at: float, services=("a",), call_s: float = 300.0) -> list:
    return [float(free_at), [(0, waits.INF_MS)], 0, services, 1.0, "c1", {s: lambda _waited_s: call_s for s in services}]


def test_a_free_counter_calls_the_ticket_before_a_booking_that_has_not_checked_in():
    now = 10 * H
    booking = ((0, now - 600_000, 0, "BOOK1"), "a", 1.0, True)   # its slot started 10 min ago
    walk_in = ((0, now - 600_000, 0, "A001"), "a", 1.0, False)  # someone waiting since then
    assert waits._play([_counter(now)], {"a": [booking]}, set(), None, "a", now) == (now, 0)
    assert waits._play([_counter(now)], {"a": [walk_in]}, set(), None, "a", now) == (now + 300_000, 1)
    # a counter that frees up later may find the booking checked in by then: it goes first
    assert waits._play([_counter(now + 60_000)], {"a": [booking]}, set(), None, "a", now) == (now + 360_000, 1)


def test_walk_ins_before_its_slot_go_before_a_booking_checked_in_early():
    rates = tuple([0.0] * 40 + [0.2] * 8 + [0.0] * 48)  # 0.2 walk-ins a minute from 10:00 to 12:00
    ctx = waits.DayContext("2026-03-02", 0, {}, {}, {}, {}, walkin_rate={"a": rates})
    assert abs(ctx.walkin_arrivals("a", 10 * H, 10 * H + 1_800_000) - 6.0) < 1e-9
    assert ctx.walkin_arrivals("a", 12 * H, 13 * H) == 0.0 and ctx.prio_arrivals("a", 10 * H, 11 * H) == 0.0


def test_a_play_draws_arrivals_only_as_far_as_it_asks_at_the_usual_rates():
    import random

    prio = tuple([0.0] * 40 + [0.1] * 8 + [0.0] * 48)    # 0.1 priority tickets a minute, 10:00-12:00
    walkin = tuple([0.0] * 40 + [0.3] * 8 + [0.0] * 48)  # 0.3 walk-ins a minute, 10:00-12:00
    now = 10 * H
    # a booking due at 10:20: walk-ins until then, priority tickets for the hour
    segments = waits._arrival_segments(prio, walkin, 0, now, now + H, now + 1_200_000)
    assert segments == [(0.4 / 60_000, now + 900_000), (0.4 / 60_000, now + 1_200_000),
                        (0.1 / 60_000, now + 1_800_000), (0.1 / 60_000, now + 2_700_000),
                        (0.1 / 60_000, now + H)]
    assert waits._arrival_segments(None, walkin, 0, now, now + H, now) == []  # nobody expected
    rng = random.Random(1)
    counts, drawn = [], []
    for _ in range(4000):
        calls = 0

        def counted() -> float:
            nonlocal calls
            calls += 1
            return rng.random()
        arrivals = waits._Arrivals({"a": segments}, now, counted)
        assert arrivals.by("b", now + H) == 0.0  # a line nobody comes to
        by_10 = arrivals.by("a", now + 600_000)
        drawn.append(calls)
        counts.append((by_10, arrivals.by("a", now + 1_200_000), arrivals.by("a", now + H)))
        assert counts[-1][0] <= counts[-1][1] <= counts[-1][2]
    mean = [sum(c[k] for c in counts) / len(counts) for k in range(3)]
    # Poisson: 4 by 10:10, 8 by 10:20, then 0.1 a minute for 40 minutes more: 12 by 11:00
    assert abs(mean[0] - 4.0) < 0.15 and abs(mean[1] - 8.0) < 0.2 and abs(mean[2] - 12.0) < 0.25
    # asking about the first ten minutes drew about as many moments as came then, not the hour's
    assert sum(drawn) / len(drawn) < 6.0


def test_service_draws_are_the_standard_librarys_lognormal_numbers():
    s2 = math.log(1 + 0.7 * 0.7)
    mu, sigma = math.log(240.0) - s2 / 2, math.sqrt(s2)
    ours = waits._service_draw(random.Random(42), 240.0, 0.7)
    theirs = random.Random(42)
    assert [ours(0.0) for _ in range(2000)] == [theirs.lognormvariate(mu, sigma) for _ in range(2000)]


def test_a_calls_draws_are_the_calling_time_as_often_as_people_are_gone_else_a_lognormal():
    from bisect import bisect_right

    curve = tuple(0.05 * k for k in range(len(waits.GONE_EDGES_S) + 1))  # more gone the longer they waited
    s2 = math.log(1 + 0.7 * 0.7)
    mu, sigma = math.log(240.0) - s2 / 2, math.sqrt(s2)
    ours = waits._gone_draw(random.Random(7), curve, 60.0, 240.0, 0.7)
    theirs = random.Random(7)
    waited = [float(w) for w in range(0, 12_000, 6)]
    expected = [60.0 if theirs.random() < curve[bisect_right(waits.GONE_EDGES_S, w)] else theirs.lognormvariate(mu, sigma)
                for w in waited]
    assert [ours(w) for w in waited] == expected
    assert 0.2 < expected.count(60.0) / len(expected) < 0.4  # the curve's mean over these waits: 0.31


def test_the_range_widens_after_misses_and_narrows_after_holds_today():
    est = waits.Estimate(300, 600, 1200)
    assert waits.adaptive_range(est, {}) == est  # nothing served yet today, nothing carried
    missed = waits.adaptive_range(est, {"cov_n": 50, "cov_missed": 20})  # 40% missed: wider
    held = waits.adaptive_range(est, {"cov_n": 50, "cov_missed": 2})     # 4% missed: narrower
    assert missed.p10 < 300 and missed.p90 > 1200 and missed.p50 == 600
    assert 300 < held.p10 <= 600 <= held.p90 < 1200
    assert waits.adaptive_range(waits.Estimate(0, 0, 0), {"cov_n": 50, "cov_missed": 40}) == waits.Estimate(0, 0, 0)
    huge = waits.adaptive_range(est, {"cov_n": 1000, "cov_missed": 900})
    assert huge.p90 == 600 + waits.ACI_MAX * 600  # bounded
    # Yesterday's end carries over at half weight: a day of misses starts today wider.
    carried = waits.aci_carried([(100, 40)])
    assert carried == waits.ACI_CARRY * waits.ACI_GAMMA * (40 - 0.2 * 100)
    assert waits.adaptive_range(est, {"cov_carried": carried}).p90 > 1200
