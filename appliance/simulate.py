"""`smartq simulate`: branch days driven through the node's own engine, on a simulated clock.

A real Node (SQLite file, writer thread, signed log, fold, queue rules) runs in process; its
wall clock is injected, so a day takes as long as its commands, never as long as the day.
Citizens arrive (Poisson per opening hour, lognormal service times, priorities, bookings
that come early or late, people who leave), counters open and close by shift and call the
next ticket through the same `call_next` the API runs. At each issue the three estimators
predict the wait from what the node knows then; after each day the node's nightly training
runs on the history so far. Format and outputs: docs/simulation.md.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sync.keys import load_or_create_key, public_key_text

from appliance import events as ev
from appliance import waits, waits_train
from appliance.config import parse_config
from appliance.node import Node
from appliance.scenario import Scenario, Spread

logger = logging.getLogger(__name__)

ESTIMATORS = ("naive", "les", "learned")
DEVICE = "sim-kiosk"
NO_SHOW_WAIT_S = 60       # how long a counter calls an absent ticket before marking it no-show
SLOT_MINUTES = 10         # booked arrivals hold slots of this length
EARLY_MEAN_MIN, EARLY_SD_MIN = -4.0, 7.0  # booked arrival minus slot start: early (<0) or late


class SimClock:
    """The injected wall clock (unix ms) of the simulated node."""

    def __init__(self, ms: int = 0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def lognormal(rng: random.Random, spread: Spread) -> float:
    sigma2 = math.log(1 + spread.cv ** 2)
    return rng.lognormvariate(math.log(spread.mean) - sigma2 / 2, math.sqrt(sigma2))


@dataclass
class Person:
    ticket: str
    service: str
    priority: int
    issued_ms: int
    leaves_ms: float          # gone unserved from then on (abandonment); inf when patient
    absent: bool              # not there when called (no-show)
    predictions: dict[str, waits.Estimate]
    signals: dict[str, float]
    shown_s: int | None = None  # estimated_wait_s in the node's issue reply
    called_ms: int | None = None
    outcome: str = "unserved"


@dataclass
class CounterState:
    id: str
    services: tuple[str, ...]
    speed: float
    open: bool = False
    busy: str | None = None    # ticket being called or served
    present: bool = False      # the called person came
    closing: bool = False      # close once the current ticket is done
    last_shift: bool = False   # its shift reaches closing time: serve until nobody waits


@dataclass
class DayResult:
    day: str
    kind: str
    people: list[Person] = field(default_factory=list)


def scenario_config(scenario: Scenario, data_dir: Path, public_key: str) -> dict[str, Any]:
    """The node configuration a scenario describes (one device issues and serves)."""
    return {
        "branch": {"id": "sim", "name": scenario.name, "timezone": scenario.timezone, "languages": ["en"]},
        "device": {"id": DEVICE, "role": "kiosk", "data_dir": str(data_dir)},
        "services": [{"id": s.id, "letter": s.letter, "names": {"en": s.id},
                      "default_service_s": int(round(s.service_minutes.mean * 60))} for s in scenario.services],
        "counters": [{"id": c.id, "name": c.id, "services": list(c.services)} for c in scenario.counters],
        "roster": [{"id": DEVICE, "role": "kiosk", "public_key": public_key, "numbers": "1-999"}],
    }


class Simulation:
    """One scenario's branch: a real node in `workdir`, days run one after another."""

    def __init__(self, scenario: Scenario, workdir: Path, *, seed: int | None = None, retrain: bool = True) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.retrain = retrain
        self.clock = SimClock(self._ms(scenario.start_date, scenario.open_min))
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        key = load_or_create_key(data_dir)
        raw = scenario_config(scenario, data_dir, public_key_text(key.public_key()))
        self.config = parse_config(raw, path=workdir / "sim.toml")
        self.node = Node(self.config, clock=self.clock)
        self.node.open()
        self.model: waits.BranchModel | None = None
        self.days: list[DayResult] = []
        self._bookings = 0

    def close(self) -> None:
        self.node.close()

    def _ms(self, day: date, minute: float) -> int:
        start = datetime.combine(day, time(0), tzinfo=self.scenario.tz)
        return int(start.timestamp() * 1000 + minute * 60_000)

    def do(self, fn: Callable[[Any], Any]) -> Any:
        return self.node.writer.call(fn)

    # -- days ----------------------------------------------------------------------------
    def run(self, progress: Callable[[DayResult], None] | None = None) -> list[DayResult]:
        s = self.scenario
        for i in range(s.train_days + s.eval_days):
            kind, n = ("train", i) if i < s.train_days else ("eval", i - s.train_days)
            day = s.start_date + timedelta(days=i)
            result = self.run_day(day, random.Random(f"{self.seed}:{kind}:{n}"), kind)
            self.days.append(result)
            if progress is not None:
                progress(result)
            if self.retrain:
                self.nightly(day + timedelta(days=1))
        return self.days

    def nightly(self, next_day: date) -> None:
        """The node's nightly step: retrain on every served ticket so far."""
        model = self.do(lambda conn: waits_train.train(conn, self.node.branch.model(conn), before_day=next_day.isoformat(),
                                                       meta={"trained_for": next_day.isoformat()}))
        if model is not None:
            self.model = model
            self.node.branch.wait_model = model  # what the node shows from now on

    def run_day(self, day: date, rng: random.Random, kind: str) -> DayResult:
        s = self.scenario
        result = DayResult(day.isoformat(), kind)
        weekday = day.weekday()
        queue: list[tuple[float, int, str, Any]] = []
        order = iter(range(10**9))

        def push(at_ms: float, what: str, data: Any) -> None:
            heapq.heappush(queue, (at_ms, next(order), what, data))

        bookings: list[dict[str, Any]] = []
        for svc in s.services:
            factor = svc.weekday_factor[weekday]
            if factor <= 0:
                continue
            for hour, rate in enumerate(svc.arrivals_per_hour):
                lam = rate * factor / 60.0  # per minute
                if lam <= 0:
                    continue
                t = s.open_min + hour * 60 + rng.expovariate(lam)
                end = min(s.open_min + hour * 60 + 60, s.close_min)
                while t < end:
                    self._arrival(rng, svc, day, t, push, bookings)
                    t += rng.expovariate(lam)
        if not queue:
            return result  # closed
        self.do(lambda conn: [self.node.log.append(conn, ev.BOOKING_CREATED, b) for b in bookings])
        counters = {c.id: CounterState(c.id, c.services, c.speed) for c in s.counters}
        for c in s.counters:
            for a, b in c.shifts:
                push(self._ms(day, a), "shift_start", c.id)
                push(self._ms(day, b), "shift_end", (c.id, b >= s.close_min))
        close_ms = self._ms(day, s.close_min)
        people: dict[str, Person] = {}

        while queue:
            at, _, what, data = heapq.heappop(queue)
            self.clock.ms = max(self.clock.ms, int(at))
            if what == "arrive":
                person = self._issue(data, day)
                if person is None:
                    continue
                people[person.ticket] = person
                for c in counters.values():
                    if c.open and c.busy is None and person.service in c.services:
                        self._next(c, people, push)
                        break
            elif what == "shift_start":
                c = counters[data]
                c.closing, c.last_shift = False, False
                if not c.open:
                    self.do(lambda conn, c=c: self.node.branch.set_counter(conn, c.id, "open", None))
                    c.open = True
                if c.busy is None:
                    self._next(c, people, push)
            elif what == "shift_end":
                c = counters[data[0]]
                if data[1]:
                    c.last_shift = True
                    if c.busy is None:
                        self._next(c, people, push)
                else:
                    c.closing = True
                    if c.busy is None:
                        self._close(c)
            elif what == "done":
                c = counters[data]
                self._finish(c, people)
                if c.closing:
                    self._close(c)
                else:
                    self._next(c, people, push)
            # After closing time an idle counter on its last shift goes home once nobody waits.
            if self.clock.ms >= close_ms:
                for c in counters.values():
                    if c.open and c.busy is None and c.last_shift:
                        self._next(c, people, push)
                        if c.busy is None:
                            self._close(c)
        result.people = sorted(people.values(), key=lambda p: (p.issued_ms, p.ticket))
        return result

    def _arrival(self, rng: random.Random, svc: Any, day: date, minute: float,
                 push: Callable[[float, str, Any], None], bookings: list[dict[str, Any]]) -> None:
        s = self.scenario
        priority = 1 if rng.random() < svc.priority_share else 0
        booked = rng.random() < svc.booking_share
        absent = rng.random() < svc.no_show_share
        patience = lognormal(rng, svc.abandon_after_minutes) if svc.abandon_after_minutes else math.inf
        code = None
        if booked:
            slot = math.floor(minute / SLOT_MINUTES) * SLOT_MINUTES
            self._bookings += 1
            code = f"SIM{self._bookings:07d}"
            start_s = self._ms(day, slot) // 1000
            bookings.append({"code": code, "service": svc.id, "start": start_s, "end": start_s + SLOT_MINUTES * 60,
                             "status": "booked", "source": "simulation"})
            if absent:
                return  # a booked no-show never comes
            minute = min(max(slot + rng.gauss(EARLY_MEAN_MIN, EARLY_SD_MIN), s.open_min), s.close_min - 0.5)
            absent = False
        push(self._ms(day, minute), "arrive", {"service": svc.id, "priority": priority, "booking": code,
                                               "absent": absent, "patience_min": patience})

    def _issue(self, a: dict[str, Any], day: date) -> Person | None:
        body: dict[str, Any] = {"priority": a["priority"]}
        if a["booking"]:
            body["booking_code"] = a["booking"]
        else:
            body["service"] = a["service"]

        def job(conn: Any) -> tuple[dict[str, Any], dict[str, float]]:
            branch = self.node.branch
            ticket = branch.issue(conn, body)  # records the signals it estimated from
            sig = json.loads(conn.execute("SELECT signals FROM wait_features WHERE ticket = ?",
                                          (ticket["id"],)).fetchone()[0])
            return ticket, sig

        ticket, sig = self.do(job)
        # The learned estimate is the one the node showed (its reply): the model's range as
        # today's coverage of earlier tickets scaled it (waits.adaptive_range).
        span = ticket.get("estimated_wait_range_s")
        shown = (waits.Estimate(span[0], ticket["estimated_wait_s"], span[1]) if span is not None
                 else waits.point(ticket["estimated_wait_s"]))
        predictions = {"naive": waits.naive(sig), "les": waits.les(sig), "learned": shown}
        return Person(ticket["id"], ticket["service"], a["priority"], self.clock.ms,
                      self.clock.ms + a["patience_min"] * 60_000, a["absent"], predictions, sig,
                      ticket.get("estimated_wait_s"))

    def _next(self, c: CounterState, people: dict[str, Person], push: Callable[[float, str, Any], None]) -> None:
        now = self.clock.ms

        def job(conn: Any) -> tuple[str | None, bool]:
            called = self.node.branch.call_next(conn, c.id)
            if called is None:
                return None, False
            p = people.get(called["id"])
            present = p is not None and not p.absent and now < p.leaves_ms
            if present:
                self.node.branch.act(conn, c.id, called["id"], "start", {})
            return called["id"], present

        ticket, present = self.do(job)
        c.busy, c.present = ticket, present
        if ticket is None:
            return
        p = people.get(ticket)
        if p is not None:
            p.called_ms = now
            p.outcome = "served" if present else ("no_show" if p.absent else "abandoned")
        if present and p is not None:
            spec = next(x for x in self.scenario.services if x.id == p.service)
            duration_s = lognormal(self._service_rng(ticket), spec.service_minutes) * 60 / c.speed
            push(now + duration_s * 1000, "done", c.id)
        else:
            push(now + NO_SHOW_WAIT_S * 1000, "done", c.id)

    def _service_rng(self, ticket: str) -> random.Random:
        # Per ticket, so a service time does not depend on which counter happened to call it.
        return random.Random(f"{self.seed}:service:{ticket}")

    def _finish(self, c: CounterState, people: dict[str, Person]) -> None:
        ticket, action = c.busy, "complete" if c.present else "no-show"
        if ticket is not None:
            self.do(lambda conn: self.node.branch.act(conn, c.id, ticket, action, {}))
        c.busy, c.present = None, False

    def _close(self, c: CounterState) -> None:
        if c.open:
            self.do(lambda conn: self.node.branch.set_counter(conn, c.id, "close", None))
        c.open, c.closing, c.last_shift = False, False, False


# -- outputs ----------------------------------------------------------------------------------
def ticket_line(p: Person, tz: Any) -> dict[str, Any]:
    served = p.outcome == "served"
    def iso(ms: int | None) -> str | None:
        return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds") if ms is not None else None
    return {
        "id": p.ticket, "service": p.service, "priority": p.priority, "issued_at": iso(p.issued_ms),
        "called_at": iso(p.called_ms) if p.outcome != "abandoned" else None,
        "actual_wait_s": round((p.called_ms - p.issued_ms) / 1000, 1) if served and p.called_ms else None,
        "outcome": p.outcome,
        "people_ahead": int(p.signals["ahead"]),
        "predictions": {name: est.as_dict() for name, est in p.predictions.items()},
    }


def score(pairs: list[tuple[waits.Estimate, float]], ahead: list[bool] | None = None) -> dict[str, Any]:
    n = len(pairs)
    if not n:
        return {"mae_s": None, "rmse_s": None, "coverage_80": None, "n": 0}
    mae = sum(abs(e.p50 - w) for e, w in pairs) / n
    rmse = math.sqrt(sum((e.p50 - w) ** 2 for e, w in pairs) / n)
    cover = sum(1 for e, w in pairs if e.p10 <= w <= e.p90) / n
    out = {"mae_s": round(mae, 1), "rmse_s": round(rmse, 1), "coverage_80": round(cover, 3), "n": n}
    if ahead is not None:  # the range's coverage over the tickets with someone ahead at issue
        some = [(e, w) for (e, w), a in zip(pairs, ahead) if a]
        out["coverage_80_someone_ahead"] = round(sum(1 for e, w in some if e.p10 <= w <= e.p90) / len(some), 3) if some else None
        out["n_someone_ahead"] = len(some)
    return out


def summarize(days: list[DayResult], estimators: tuple[str, ...] = ESTIMATORS) -> dict[str, Any]:
    served = [p for d in days if d.kind == "eval" for p in d.people if p.outcome == "served" and p.called_ms]
    ahead = [p.signals["ahead"] > 0 for p in served]
    return {name: score([(p.predictions[name], (p.called_ms - p.issued_ms) / 1000) for p in served],  # type: ignore[operator]
                        ahead if name == "learned" else None)
            for name in estimators}


@contextmanager
def workspace(keep: Path | None = None) -> Iterator[Path]:
    """Where the simulated node keeps its store: tmpfs when there is one (nothing to keep)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="smartq-sim-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def simulate(scenario: Scenario, out: Path, *, seed: int | None = None, store: Path | None = None,
             progress: Callable[[DayResult], None] | None = None) -> dict[str, Any]:
    """Run the scenario, write out/tickets.jsonl and out/summary.json; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    with workspace(store) as work:
        sim = Simulation(scenario, work, seed=seed)
        try:
            days = sim.run(progress)
        finally:
            sim.close()
    tz = scenario.tz
    with (out / "tickets.jsonl").open("w", encoding="utf-8") as f:
        for d in days:
            if d.kind == "eval":
                for p in d.people:
                    f.write(json.dumps(ticket_line(p, tz), separators=(",", ":")) + "\n")
    summary = summarize(days)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
