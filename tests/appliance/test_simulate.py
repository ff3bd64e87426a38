"""The branch-day simulator drives the node's own engine; its estimators are scored on it."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import parse_config
from appliance.node import Node
from appliance import waits
from appliance.projection import Projection, state_hash
from appliance.scenario import ScenarioError, load_scenario, parse_scenario
from appliance.simulate import Simulation, simulate
from sync.db import connect
from sync.log import all_events

SCENARIOS = sorted((Path(__file__).parents[2] / "appliance" / "scenarios").glob("*.toml"))

TINY = """
name = "tiny"
seed = 5
timezone = "Africa/Kigali"
start_date = "2026-03-02"
train_days = 2
eval_days = 1
open = "09:00"
close = "11:00"

[[services]]
id = "a"
letter = "A"
service_minutes = { mean = 4.0, cv = 0.5 }
arrivals_per_hour = [30, 20]
weekday_factor = [1, 1, 1, 1, 1, 1, 1]
priority_share = 0.1
booking_share = 0.2
no_show_share = 0.1
abandon_after_minutes = { mean = 20, cv = 0.5 }

[[services]]
id = "b"
letter = "B"
service_minutes = { mean = 8.0, cv = 0.5 }
arrivals_per_hour = [6, 6]
priority_share = 0.0
booking_share = 0.0
no_show_share = 0.0

[[counters]]
id = "c1"
services = ["a", "b"]
shifts = [["09:00", "11:00"]]

[[counters]]
id = "c2"
services = ["a"]
shifts = [["09:00", "10:00"]]
speed = 1.2
"""


def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_scenario_errors_name_the_field(tmp_path: Path) -> None:
    good = load_scenario(tiny(tmp_path))
    assert [s.id for s in good.services] == ["a", "b"] and good.counters[1].shifts == ((540, 600),)
    import tomllib

    raw = tomllib.loads(TINY)
    raw["services"][0]["arrivals_per_hour"] = [30]
    with pytest.raises(ScenarioError, match=r"services\[0\]\.arrivals_per_hour: expected 2 numbers"):
        parse_scenario(raw)
    raw = tomllib.loads(TINY)
    raw["counters"][0]["services"] = ["nope"]
    with pytest.raises(ScenarioError, match=r"counters\[0\]\.services"):
        parse_scenario(raw)
    raw = tomllib.loads(TINY)
    raw["close"] = "25:00"
    with pytest.raises(ScenarioError, match=r"scenario\.close"):
        parse_scenario(raw)


def test_cli_writes_tickets_and_summary_of_the_evaluation_days(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["simulate", str(tiny(tmp_path)), "--out", str(out), "--seed", "9"]) == 0
    lines = [json.loads(x) for x in (out / "tickets.jsonl").read_text().splitlines()]
    assert lines and all(x["id"].startswith("20260304-") for x in lines)  # only the evaluation day
    for x in lines:
        assert set(x) >= {"id", "service", "priority", "issued_at", "called_at", "actual_wait_s", "people_ahead",
                          "predictions"}
        assert set(x["predictions"]) == {"naive", "les", "learned"}
        for p in x["predictions"].values():
            assert p["p10"] <= p["p50"] <= p["p90"]
        if x["outcome"] == "abandoned":
            assert x["called_at"] is None and x["actual_wait_s"] is None
    served = [x for x in lines if x["outcome"] == "served"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    assert set(summary) == {"naive", "les", "learned"}
    assert all(s["n"] == len(served) for s in summary.values())
    mae = sum(abs(x["predictions"]["naive"]["p50"] - x["actual_wait_s"]) for x in served) / len(served)
    assert summary["naive"]["mae_s"] == pytest.approx(mae, abs=0.1)
    some = [x for x in served if x["people_ahead"] > 0]
    held = sum(1 for x in some if x["predictions"]["learned"]["p10"] <= x["actual_wait_s"] <= x["predictions"]["learned"]["p90"])
    assert summary["learned"]["n_someone_ahead"] == len(some) > 0
    assert summary["learned"]["coverage_80_someone_ahead"] == pytest.approx(held / len(some), abs=0.001)
    # the same seed gives the same day
    again = tmp_path / "again"
    assert main(["simulate", str(tiny(tmp_path)), "--out", str(again), "--seed", "9"]) == 0
    assert (again / "tickets.jsonl").read_text() == (out / "tickets.jsonl").read_text()


def test_the_same_seed_gives_the_same_lines_in_any_process(tmp_path: Path) -> None:
    """Predictions included: the plays' random draws must not follow a set's order, which
    changes with the process's string hashing."""
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"out{hash_seed}"
        subprocess.run([sys.executable, "-m", "appliance.cli", "simulate", str(tiny(tmp_path)), "--out", str(out)],
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True, capture_output=True, timeout=300)
        outs.append((out / "tickets.jsonl").read_text())
    assert outs[0] and outs[0] == outs[1]


def random_scenario(seed: int) -> str:
    """A scenario of a random shape, as someone else might write one: one to three services
    with any mix of priority, bookings, no-shows and abandonment (some closed on some days),
    one to four counters serving random subsets in random orders with split or short shifts."""
    r = random.Random(seed)
    start = r.choice([7 * 60, 8 * 60 + 30, 13 * 60])
    hours = r.randint(2, 5)
    hm = lambda m: f"{m // 60:02d}:{m % 60:02d}"  # noqa: E731
    close = start + hours * 60 - r.choice([0, 20])
    lines = [f'name = "random {seed}"', f"seed = {seed}",
             f'timezone = "{r.choice(["Africa/Kigali", "Europe/Madrid", "America/New_York"])}"',
             'start_date = "2026-03-05"', "train_days = 4", "eval_days = 1", f'open = "{hm(start)}"',
             f'close = "{hm(close)}"']
    services = [f"s{i}" for i in range(r.randint(1, 3))]
    for i, sid in enumerate(services):
        rate = r.uniform(2, 30)
        abandon = f"abandon_after_minutes = {{ mean = {r.randint(5, 40)}, cv = 0.6 }}" if r.random() < 0.4 else ""
        lines += ["[[services]]", f'id = "{sid}"', f'letter = "{"ABC"[i]}"',
                  f"service_minutes = {{ mean = {r.uniform(1, 15):.1f}, cv = {r.choice([0.0, 0.3, 0.8, 1.4])} }}",
                  f"arrivals_per_hour = {[round(rate * r.uniform(0.2, 1.8), 1) for _ in range(hours)]}",
                  f"weekday_factor = {[r.choice([1, 1, 0.5, 1.5, 0]) for _ in range(7)]}",
                  f"priority_share = {r.choice([0, 0.1, 0.5, 1.0])}", f"booking_share = {r.choice([0, 0.3, 1.0])}",
                  f"no_show_share = {r.choice([0, 0.1, 0.5])}", abandon]
    for j in range(r.randint(1, 4)):
        a = start + r.choice([0, 0, 30, 60])
        b = min(close + r.choice([0, 0, 30]), a + r.randint(30, 5 * 60))
        shifts = [[hm(a), hm(b)]] if b - a < 90 or r.random() < 0.6 else [[hm(a), hm(a + 40)], [hm(a + 60), hm(b)]]
        served = r.sample(services, r.randint(1, len(services)))
        lines += ["[[counters]]", f'id = "c{j}"', "services = " + str(served).replace("'", '"'),
                  "shifts = " + str(shifts).replace("'", '"'), f"speed = {r.uniform(0.6, 1.5):.2f}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_scenarios_of_shapes_nobody_tried_run_to_the_end(tmp_path: Path, capsys, seed: int) -> None:
    """Other people write scenarios: whatever the shape (a service no counter serves today,
    only priority tickets, only bookings, nobody served at all), the run ends with well-formed
    outputs and every estimate a range around its point."""
    path = tmp_path / "random.toml"
    path.write_text(random_scenario(seed))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out)]) == 0, path.read_text()
    lines = [json.loads(x) for x in (out / "tickets.jsonl").read_text().splitlines()]
    for x in lines:
        assert x["outcome"] in ("served", "no_show", "abandoned", "unserved")
        assert (x["actual_wait_s"] is not None) == (x["outcome"] == "served")
        for p in x["predictions"].values():
            assert 0 <= p["p10"] <= p["p50"] <= p["p90"]
    served = [x for x in lines if x["outcome"] == "served"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    for s in summary.values():
        assert s["n"] == len(served)
        assert (s["mae_s"] is None) == (not served)
        assert s["coverage_80"] is None or 0 <= s["coverage_80"] <= 1


def test_bad_scenario_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('letter = "B"', 'letter = "b"'))
    assert main(["simulate", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "services[1].letter" in err


def test_the_node_shows_the_learned_estimate_and_naive_before_any_training(tmp_path: Path) -> None:
    sim = Simulation(load_scenario(tiny(tmp_path)), tmp_path / "work")
    try:
        days = sim.run()
    finally:
        sim.close()
    people = [p for d in days for p in d.people]
    assert len(people) > 50
    first = days[0].people
    assert all(p.predictions["naive"].p50 == p.shown_s for p in first)  # no model yet: today's formula
    assert all(p.predictions["learned"].p50 == p.shown_s for p in people)
    assert sim.model is not None and any(p.predictions["learned"] != p.predictions["naive"] for p in days[-1].people)
    outcomes = {p.outcome for p in people}
    assert {"served", "abandoned"} <= outcomes


def test_a_simulated_day_replays_into_a_real_node_with_the_same_state_hash(tmp_path: Path) -> None:
    sim = Simulation(load_scenario(tiny(tmp_path)), tmp_path / "work")
    try:
        sim.run()
        events = sim.do(all_events)
        sim_hash = sim.do(state_hash)
        sim_coverage = sim.do(coverage)
        raw = json.loads(json.dumps(sim.config.raw))
    finally:
        sim.close()
    assert len(events) > 300
    raw["device"] = {"id": "replay", "role": "display", "data_dir": str(tmp_path / "replay")}
    node = Node(parse_config(raw, path=tmp_path / "replay.toml"))
    node.writer.start()
    try:
        result = node.writer.call(lambda c: node.log.ingest(c, [e.to_dict() for e in events]))
        assert len(result.accepted) == len(events) and not result.rejected
        assert node.writer.call(state_hash) == sim_hash
        # The coverage of today's shown ranges (what scales the next range) is the same on a
        # node that only received the events, and again after a whole re-fold.
        replayed = node.writer.call(coverage)
        assert replayed == sim_coverage and replayed[-1][1] > 20
        node.writer.call(lambda c: c.execute("DELETE FROM tickets"))  # the triggers take every ticket out
        assert all(n == 0 for _, n, _, _ in node.writer.call(coverage))
        node.writer.call(lambda c: Projection().rebuild(c))  # a bulk re-fold runs without them, then recounts
        assert node.writer.call(coverage) == sim_coverage
    finally:
        node.close()


def coverage(conn) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT day, n, low, high FROM wait_coverage ORDER BY day")]


def test_the_shown_range_adapts_to_how_the_day_s_earlier_ranges_held(tmp_path: Path) -> None:
    """Adaptive conformal inference within the day: each range is the model's, scaled by a
    factor that today's served tickets' shown ranges (counted from the log) decide."""
    scenario = load_scenario(tiny(tmp_path))
    sim = Simulation(scenario, tmp_path / "work", retrain=False)
    try:
        for i in range(3):
            day = scenario.start_date + timedelta(days=i)
            model = sim.model
            result = sim.run_day(day, random.Random(f"t:{i}"), "train")
            sim.nightly(day + timedelta(days=1))
        counted = sim.do(coverage)
    finally:
        sim.close()
    people = [p for p in result.people if p.signals["cov_n"] > 0]
    assert model is not None and len(people) > 30
    factors = set()
    for p in result.people:
        raw = model.predict(p.signals, p.service, adaptive=False)
        assert p.predictions["learned"] == waits.adaptive_range(raw, p.signals)  # what the node showed
        factors.add(round(waits.aci_log_factor(p.signals["cov_n"], p.signals["cov_missed"], p.signals["cov_carried"]), 3))
    assert len(factors) > 10  # it moved during the day
    # The counts are the day's served tickets and their shown ranges' misses.
    served = [p for p in result.people if p.outcome == "served"]
    low = sum(1 for p in served if (p.called_ms - p.issued_ms) < p.predictions["learned"].p10 * 1000)
    high = sum(1 for p in served if (p.called_ms - p.issued_ms) > p.predictions["learned"].p90 * 1000)
    assert counted[-1] == (result.day, len(served), low, high)


def _simulate(path: Path, out: Path) -> dict:
    return simulate(load_scenario(path), out)


class Summaries(dict):
    """The six scenarios simulated once, in parallel processes (one per core), started when a
    test first needs one; each test waits only for its own."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base
        self.pool: ProcessPoolExecutor | None = None
        self.futures: dict[str, Future] = {}

    def __missing__(self, name: str) -> dict:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=max(1, min(len(SCENARIOS), os.cpu_count() or 1)),
                                            mp_context=multiprocessing.get_context("spawn"))
            self.futures = {p.stem: self.pool.submit(_simulate, p, self.base / p.stem) for p in SCENARIOS}
        self[name] = self.futures[name].result()
        return self[name]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    found = Summaries(tmp_path_factory.mktemp("scenarios"))
    yield found
    found.close()


# Where the learned estimator does not reach the issue's bar yet on the scenarios' own seeds
# (docs/wait-estimates.md, "Results"); strict, so the day it does, these lists must shrink.
# MAE above 0.7 x naive: the calm bank (0.72; 0.73 on seed 7's days).
SHORT_OF_TARGET = {"calm_bank"}
# The 80% range outside 75-85% on the evaluation days: none since the day's adaptive factor
# (waits.adaptive_range; 78.0-81.8% on these seeds and on seeds 7 and 8).
RANGE_OFF: set[str] = set()


def test_six_scenarios_of_different_shapes() -> None:
    assert len(SCENARIOS) >= 6
    for path in SCENARIOS:
        s = load_scenario(path)
        assert s.train_days >= 10 and s.eval_days >= 3


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [p.stem for p in SCENARIOS])
def test_learned_beats_naive_and_les(summaries, name) -> None:
    s = summaries[name]
    assert s["learned"]["n"] > 300
    assert s["learned"]["mae_s"] < s["naive"]["mae_s"]
    assert s["learned"]["mae_s"] <= s["les"]["mae_s"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [
    pytest.param(p.stem, marks=pytest.mark.xfail(p.stem in RANGE_OFF, strict=True,
                                                  reason="80% range outside 75-85% on these evaluation days"))
    for p in SCENARIOS])
def test_the_80_range_holds_75_to_85_percent(summaries, name) -> None:
    assert 0.75 <= summaries[name]["learned"]["coverage_80"] <= 0.85


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [
    pytest.param(p.stem, marks=pytest.mark.xfail(p.stem in SHORT_OF_TARGET | RANGE_OFF, strict=True,
                                                  reason="learned not yet <= 0.7 x naive with 75-85% coverage here"))
    for p in SCENARIOS])
def test_learned_meets_the_target(summaries, name) -> None:
    s = summaries[name]
    assert s["learned"]["mae_s"] <= 0.7 * s["naive"]["mae_s"]
    assert s["learned"]["mae_s"] <= s["les"]["mae_s"]
    assert 0.75 <= s["learned"]["coverage_80"] <= 0.85
