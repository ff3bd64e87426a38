"""Wait estimates: simulator speed, prediction cost, model size, node RSS, learning curves.

- simulated days per second (a scenario run through the real engine, nightly training included);
- prediction cost per ticket: collecting the signals from the store (SQL, the virtual
  schedule and its plays), the model's arithmetic, and the two together as the issue runs them
  (the whole estimate), timed on every issue of a simulated run;
- model size (the JSON a node keeps, or HQ would ship);
- node RSS after a 20,000-event day with a trained model loaded and estimating;
- learning curve: evaluation-day MAE of `learned` trained on the first k days of history,
  against naive and LES, for every scenario in appliance/scenarios/;
- the floor (`--only-floor`, not by default: minutes): a scenario's evaluation days with the
  estimate's plays given the scenario's own service means, spreads and counter speeds in place
  of those the node reads from its history, and many more plays, against the learned estimate
  as it is, with those many plays and with its own: how close the learned estimate is to what
  its plays could do knowing the truth.

    .venv/bin/python -m bench.bench_waits [--scenario NAME] [--skip-curve] [--skip-rss] [--jobs 2]
    .venv/bin/python -m bench.bench_waits --only-lines    # the estimate against line length
    .venv/bin/python -m bench.bench_waits --only-curve    # the learning curves
    .venv/bin/python -m bench.bench_waits --only-floor calm_bank [--seeds own,7,8] [--plays 480]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from appliance import waits, waits_train
from appliance.config import load_config
from appliance.node import Node
from appliance.sample import write_sample
from appliance.scenario import load_scenario
from appliance.simulate import Simulation, score, workspace
from bench.common import latency_summary, rss_mb, write

SCENARIOS = Path(__file__).resolve().parents[1] / "appliance" / "scenarios"
CURVE_DAYS = (1, 2, 4, 8, 12, 16, 20)


def speed_figures(name: str) -> dict[str, Any]:
    """One scenario end to end, timing every signal collection and every prediction."""
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    collect: list[float] = []
    predict: list[float] = []
    coverage: list[float] = []
    whole: list[float] = []
    pending: list[float] = []  # the signals just collected, waiting for their prediction
    real_signals = waits.signals
    real_coverage = waits.coverage_signals
    real_shown = waits.shown

    def timed_signals(*args: Any, **kw: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        out = real_signals(*args, **kw)
        collect.append(time.perf_counter() - t0)
        pending[:] = [collect[-1]]
        return out

    def timed_shown(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = real_shown(*args, **kw)
        if pending:  # an issue: its signals, then the estimate shown from them
            whole.append(pending.pop() + time.perf_counter() - t0)
        return out

    def timed_coverage(*args: Any, **kw: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        out = real_coverage(*args, **kw)
        coverage.append(time.perf_counter() - t0)
        return out

    waits.signals = timed_signals  # type: ignore[assignment]
    waits.coverage_signals = timed_coverage  # type: ignore[assignment]
    waits.shown = timed_shown  # type: ignore[assignment]
    try:
        with workspace() as work:
            sim = Simulation(scenario, work)
            t0 = time.perf_counter()
            days = sim.run()
            elapsed = time.perf_counter() - t0
            events = sim.do(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
            trigger = sim.do(_coverage_trigger_cost)
            sim.close()
    finally:
        waits.signals = real_signals  # type: ignore[assignment]
        waits.coverage_signals = real_coverage  # type: ignore[assignment]
        waits.shown = real_shown  # type: ignore[assignment]
    model = sim.model
    assert model is not None
    people = [p for d in days for p in d.people]
    for p in people:
        t0 = time.perf_counter()
        model.predict(p.signals, p.service)
        predict.append(time.perf_counter() - t0)
    open_days = sum(1 for d in days if d.people)
    return {
        "scenario": name,
        "days": len(days), "open_days": open_days, "tickets": len(people), "events": events,
        "seconds": round(elapsed, 2),
        "simulated_days_per_s": round(open_days / elapsed, 2),
        "tickets_per_s": round(len(people) / elapsed),
        "signals_per_ticket": latency_summary(collect),
        "estimate_per_ticket": latency_summary(whole),  # signals + the shown estimate (model, range), per issue
        "coverage_read_per_ticket": latency_summary(coverage),
        "coverage_trigger_per_start": trigger,
        "predict_per_ticket": latency_summary(predict),
        "model_bytes": model.size_bytes,
        "model_rows": model.pooled.meta.get("rows"),
    }


def _coverage_trigger_cost(conn: Any, rows: int = 1000) -> dict[str, Any]:
    """What wait_coverage's triggers add to a ticket's start: the same row update (started_ms
    set again, which runs the update trigger's two counts, twice a start's one) timed with the
    triggers and, in the same rolled-back transaction, without them."""
    ids = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE started_ms IS NOT NULL ORDER BY id DESC LIMIT ?",
                                      (rows,))]
    out: dict[str, Any] = {}
    conn.execute("SAVEPOINT bench")
    try:
        for label in ("with_triggers", "without_triggers"):
            times = []
            for ticket in ids:
                t0 = time.perf_counter()
                conn.execute("UPDATE tickets SET started_ms = started_ms WHERE id = ?", (ticket,))
                times.append(time.perf_counter() - t0)
            out[label] = latency_summary(times)
            if label == "with_triggers":
                for name in ("wait_coverage_in", "wait_coverage_out", "wait_coverage_move"):
                    conn.execute(f"DROP TRIGGER {name}")
    finally:
        conn.execute("ROLLBACK TO bench")
        conn.execute("RELEASE bench")
    return out


def _curve_one(path: Path) -> tuple[str, dict[str, Any]]:
    """One scenario's learning curve: simulated once (no retraining), then `learned` trained on
    the first k days and scored on the evaluation days, for each k of CURVE_DAYS."""
    scenario = load_scenario(path)
    with workspace() as work:
        sim = Simulation(scenario, work, retrain=False)
        try:
            days = sim.run()
            served = [p for d in days if d.kind == "eval" for p in d.people if p.outcome == "served"]
            truth = [(p.called_ms - p.issued_ms) / 1000 for p in served]  # type: ignore[operator]
            row: dict[str, Any] = {
                "naive_mae_s": score([(p.predictions["naive"], w) for p, w in zip(served, truth)])["mae_s"],
                "les_mae_s": score([(p.predictions["les"], w) for p, w in zip(served, truth)])["mae_s"],
                "learned": {},
            }
            for k in CURVE_DAYS:
                if k > scenario.train_days:
                    break
                first_day = scenario.start_date.isoformat()
                until = (scenario.start_date + timedelta(days=k)).isoformat()
                model = sim.do(lambda c, until=until: waits_train.train(
                    c, sim.node.branch.model(c), before_day=until, since_day=first_day))
                if model is None:
                    continue
                # The model's own range: this run showed no ranges, so there is no day factor to replay.
                s = score([(model.predict(p.signals, p.service, adaptive=False), w) for p, w in zip(served, truth)])
                row["learned"][k] = {"mae_s": s["mae_s"], "coverage_80": s["coverage_80"],
                                     "vs_naive": round(s["mae_s"] / row["naive_mae_s"], 3)}
        finally:
            sim.close()
    return path.stem, row


def curve_figures(jobs: int = 2) -> dict[str, Any]:
    """Per scenario: eval MAE of learned trained on the first k days (no retraining during
    eval); scenarios in `jobs` processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out: dict[str, Any] = {}
    paths = sorted(SCENARIOS.glob("*.toml"))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, row in pool.map(_curve_one, paths):
            out[name] = row
            print(name, row, flush=True)
    return out


def _floor_one(job: tuple[str, str, int, bool]) -> dict[str, Any]:
    """One run of a scenario's days (`seed` "own" or a number) whose estimates play `plays` times;
    with `truth`, from the scenario's true service means, spreads (cv) and counter speeds, and
    an occupancy per call of its true mean and no-show share (a no-show takes the simulator's
    calling time), in place of what the node reads from its history. Everything else (usual
    hours, arrival rates, who is gone when called, late bookings, the model and its range) is
    the node's own. Run in a process of its own: it replaces functions of appliance.waits."""
    from appliance import simulate

    name, seed, plays, truth = job
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    waits.DRAWS, waits.DRAWS_MAX = plays, max(plays, waits.DRAWS_MAX)
    if truth:
        speed = {c.id: c.speed for c in scenario.counters}
        mean = {s.id: s.service_minutes.mean * 60 for s in scenario.services}
        cv = {s.id: s.service_minutes.cv for s in scenario.services}
        occupancy = {s.id: (1 - s.no_show_share) * mean[s.id] + s.no_show_share * simulate.NO_SHOW_WAIT_S
                     for s in scenario.services}
        real_context, real_mean, real_occupancy = waits.day_context, waits._blended_mean_s, waits._occupancy_s

        def day_context(conn: Any, m: Any, day: str) -> waits.DayContext:
            return dataclasses.replace(real_context(conn, m, day), speed=dict(speed), cv=dict(cv), mean=dict(mean),
                                       _cumulative={})

        waits.day_context = day_context  # type: ignore[assignment]
        waits._blended_mean_s = (lambda m, ctx, s, latest: mean[s] if s in mean  # type: ignore[assignment]
                                 else real_mean(m, ctx, s, latest))
        waits._occupancy_s = (lambda conn, m, day, s, done: occupancy[s] if s in occupancy  # type: ignore[assignment]
                              else real_occupancy(conn, m, day, s, done))
    with workspace() as work:
        sim = Simulation(scenario, work, seed=None if seed == "own" else int(seed))
        try:
            days = sim.run()
        finally:
            sim.close()
    served = [p for d in days if d.kind == "eval" for p in d.people if p.outcome == "served" and p.called_ms]
    waited = [(p.called_ms - p.issued_ms) / 1000 for p in served]  # type: ignore[operator]
    naive = score([(p.predictions["naive"], w) for p, w in zip(served, waited)])["mae_s"]
    learned = score([(p.predictions["learned"], w) for p, w in zip(served, waited)])
    return {"scenario": name, "seed": seed, "plays": plays, "truth": truth, "served": len(served),
            "naive_mae_s": naive, "learned_mae_s": learned["mae_s"], "coverage_80": learned["coverage_80"],
            "vs_naive": round(learned["mae_s"] / naive, 4)}


def floor_figures(name: str, seeds: list[str], plays: int, jobs: int = 2) -> list[dict[str, Any]]:
    """Per seed: the learned estimate as it is, with `plays` plays, and with `plays` plays of the
    truth (`_floor_one`), each run in a fresh process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    runs = [(name, seed, n, truth) for seed in seeds
            for n, truth in ((waits.DRAWS, False), (plays, False), (plays, True))]
    out = []
    with ProcessPoolExecutor(max_workers=jobs, max_tasks_per_child=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        for row in pool.map(_floor_one, runs):
            out.append(row)
            print(row, flush=True)
    return out


def rss_figure(events: int = 20_000) -> dict[str, Any]:
    """A sample branch's kiosk after a 20,000-event day, a model trained on it, serving the API
    (its first housekeeping also retrains, in a process of its own, as every night)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.bench_core import START_MS, Clock, simulate, start_node

    tmp = Path(tempfile.mkdtemp(prefix="smartq-bench-waits-"))
    try:
        base = tmp / "branch"
        write_sample(base)
        clock = Clock()
        node = Node(load_config(base / "kiosk.toml"), clock=clock)
        node.open()
        simulate(node, clock, events, random.Random(7), per_day=events)
        day = date.fromtimestamp(START_MS / 1000) + timedelta(days=2)
        t0 = time.perf_counter()
        model = node.writer.call(lambda c: waits_train.train(c, node.branch.model(c), before_day=day.isoformat()))
        train_s = time.perf_counter() - t0
        node.close()
        assert model is not None
        waits.save_model(node.data_dir, model)
        proc, url = start_node(base / "kiosk.toml")
        try:
            latencies: list[float] = []

            async def touch() -> None:
                async with aiohttp.ClientSession() as s:
                    for _ in range(50):
                        async with s.get(f"{url}/api/v1/state") as r:
                            await r.read()
                        t1 = time.perf_counter()
                        async with s.post(f"{url}/api/v1/tickets", json={"service": "general"}) as r:
                            body = await r.json()
                        latencies.append(time.perf_counter() - t1)
                    assert body.get("estimated_wait_range_s") is not None, body
            asyncio.run(touch())
            await_retrain = time.monotonic() + 20  # let the first housekeeping's retrain finish
            while time.monotonic() < await_retrain and "retrained" not in (base / "node.log").read_text():
                time.sleep(0.5)
            return {"rss_after_day_with_model_mb": rss_mb(proc.proc.pid), "day_events": events,
                    "train_s": round(train_s, 2), "trained_rows": model.pooled.meta.get("rows"),
                    "post_tickets_with_learned_estimate": latency_summary(latencies)}
        finally:
            proc.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def line_length_figures(sizes: tuple[int, ...] = (100, 1000, 5000, 20_000), samples: int = 300) -> dict[str, Any]:
    """What one estimate costs as the lines grow: the sample branch with `size` tickets waiting
    over three services (bench_queue's fill, 10% priority), three counters open and busy; per
    sample, the signals of a newcomer read on a reader connection (waits.signals: every read
    of the store and the virtual schedule; no commit), then the model's prediction."""
    from bench.bench_queue import SERVICES, Clock, fill
    from sync.db import connect

    out = []
    tmp = Path(tempfile.mkdtemp(prefix="smartq-bench-waits-lines-"))
    try:
        base = tmp / "branch"
        write_sample(base)
        for size in sizes:
            folder = tmp / f"q{size}"
            shutil.copytree(base, folder)
            clock = Clock()
            node = Node(load_config(folder / "kiosk.toml"), clock=clock)
            node.open()
            try:
                fill(node, clock, size, random.Random(size))
                for c in ("c1", "c2", "c3"):
                    node.writer.call(lambda conn, c=c: node.branch.set_counter(conn, c, "open", None))
                    node.writer.call(lambda conn, c=c: node.branch.call_next(conn, c))
                reader = connect(node.db_path, readonly=True)
                m = node.branch.model(reader)
                day = node.branch.today(m)
                ctx = node.branch.wait_context(reader, m, day)
                collect, predict = [], []
                model = None
                for i in range(samples):
                    service = SERVICES[i % len(SERVICES)]
                    ahead = reader.execute("SELECT count(*) FROM tickets WHERE status = 'waiting' AND service = ?",
                                           (service,)).fetchone()[0]
                    now = clock.ms + i * 1000
                    t0 = time.perf_counter()
                    sig = waits.signals(reader, m, service=service, priority=0, effective_ms=now, ahead=ahead,
                                        now_ms=now, day=day, ctx=ctx)
                    collect.append(time.perf_counter() - t0)
                    if model is None:
                        model = _toy_model(sig)
                    t0 = time.perf_counter()
                    model.predict(sig, service)
                    predict.append(time.perf_counter() - t0)
                reader.close()
                out.append({"waiting": size, "signals": latency_summary(collect), "predict": latency_summary(predict)})
                print(out[-1], flush=True)
            finally:
                node.close()
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"samples": samples, "sizes": out}


def _toy_model(sig: dict[str, float]) -> waits.BranchModel:
    """A model of the full shape (every regime, all features) to time predictions with."""
    rows = [("general", {**sig, "ahead": float(a), "schedule_s": 60.0 * a, "draws_p50_s": 55.0 * a}, 58.0 * a + (a % 7) * 9)
            for a in range(400)]
    model = waits_train.fit_branch(rows)
    assert model is not None
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="hospital_rush")
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only-rss", action="store_true")
    parser.add_argument("--only-lines", action="store_true", help="only the estimate's cost against line length")
    parser.add_argument("--only-curve", action="store_true", help="only the learning curves")
    parser.add_argument("--only-floor", metavar="SCENARIO",
                        help="only the floor: SCENARIO's plays with its true parameters against the learned estimate")
    parser.add_argument("--seeds", default="own,7,8", help="for --only-floor: the seeds run (own: the scenario's)")
    parser.add_argument("--plays", type=int, default=480, help="for --only-floor: plays per estimate")
    parser.add_argument("--jobs", type=int, default=2, help="scenarios simulated at once for the curves")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    if args.only_floor:
        figures["floor"] = floor_figures(args.only_floor, args.seeds.split(","), args.plays, args.jobs)
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write("waits_floor", figures)
        return
    if args.only_lines:
        figures["line_length"] = line_length_figures()
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write("waits_lines", figures)
        return
    if args.only_curve:
        figures["learning_curve"] = curve_figures(args.jobs)
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write("waits_curve", figures)
        return
    if args.only_rss:
        args.skip_curve = True
    else:
        figures["speed"] = speed_figures(args.scenario)
        print(figures["speed"], flush=True)
    if not args.skip_rss:
        figures["rss"] = rss_figure()
        print(figures["rss"], flush=True)
    if not args.skip_curve:
        figures["learning_curve"] = curve_figures(args.jobs)
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write("waits", figures)


if __name__ == "__main__":
    main()
