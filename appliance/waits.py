"""Wait estimates: the signals a node reads at issue time and three estimators over them.

- `naive`: today's formula (people ahead x recent mean service time / open counters);
- `les`: the delay of the last ticket of the same service and class to be called
  (Ibrahim & Whitt's last-to-enter-service predictor), naive until the day has one;
- `learned`: a linear model over queue-aware features with calibrated residual quantiles,
  trained nightly on the branch's own history (appliance/waits_train.py). The model is plain
  JSON data, so HQ can ship one down; predicting is a dot product, no numpy in the node.

The signals of each ticket a node issues are kept in the node-local table `wait_features`
(not replicated, not in the state hash) so that the nightly job can learn from them once
the ticket has been called. See docs/wait-estimates.md.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance import queue as q
from appliance.model import Model

logger = logging.getLogger(__name__)

MODEL_FILE = "wait_model.json"
MODEL_VERSION = 1
BOOKED_LATE_S = 45 * 60  # a booking whose slot started this long ago may still check in ahead
HOURS = tuple(range(6, 22))
SLOT_MIN = 15  # staffing profile resolution  # hour-of-day interactions the model may learn


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE wait_features (ticket TEXT PRIMARY KEY, day TEXT NOT NULL, service TEXT NOT NULL,"
                 " issued_ms INTEGER NOT NULL, signals TEXT NOT NULL)")
    conn.execute("CREATE INDEX wait_features_by_day ON wait_features (day)")
    # Late booked arrivals are found by slot start: without this each estimate scans every booking.
    conn.execute("CREATE INDEX bookings_by_start ON bookings (json_extract(body, '$.start'))")


MIGRATIONS = [_create_tables]


@dataclass(frozen=True, slots=True)
class Estimate:
    p10: int
    p50: int
    p90: int

    def as_dict(self) -> dict[str, int]:
        return {"p10": self.p10, "p50": self.p50, "p90": self.p90}


def point(seconds: float) -> Estimate:
    s = max(int(math.ceil(seconds)), 0)
    return Estimate(s, s, s)


# -- signals ------------------------------------------------------------------------------------
def signals(conn: sqlite3.Connection, m: Model, *, service: str, priority: int, effective_ms: int, ahead: int,
            now_ms: int, day: str, ticket: str | None = None) -> dict[str, float]:
    """What the node knows at `now_ms` about the wait of one ticket (or a newcomer) of `service`
    with `ahead` people before it in the line (the engine's count)."""
    open_ids = {r[0] for r in conn.execute("SELECT id FROM counter_status WHERE status = 'open'")}
    serving = [c for c in m.counters.values() if service in c.services and c.id in open_ids]
    open_counters = len(serving)
    mean_s = _mean_service_s(conn, m, day, service)
    busy = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT counter, service, called_ms FROM tickets WHERE status IN ('called', 'serving') AND counter IS NOT NULL")}
    shared = sorted({s for c in serving for s in c.services if s != service and s in m.services})
    occupancy = {s: _occupancy_s(conn, m, day, s) for s in m.services}
    shared_ahead = 0.0
    for s in shared:
        n = conn.execute("SELECT count(*) FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                         " AND effective_ms < ?", (s, day, effective_ms)).fetchone()[0]
        shared_ahead += n * occupancy[s]
    # The time until the first counter of this service is free (0 when one is idle).
    first_free = 0.0
    if serving and all(c.id in busy for c in serving):
        first_free = min(max(occupancy.get(busy[c.id][0], mean_s) - (now_ms - busy[c.id][1]) / 1000, 0.0)
                         for c in serving)
    sched = schedule_s(conn, m, open_ids, busy, occupancy, service=service, priority=priority,
                       effective_ms=effective_ms, ahead=ahead, now_ms=now_ms, day=day, ticket=ticket)
    recent = conn.execute(
        "SELECT called_ms - issued_ms, status, priority, called_ms FROM tickets WHERE day = ? AND service = ?"
        " AND called_ms IS NOT NULL ORDER BY called_ms DESC LIMIT 20", (day, service)).fetchall()
    les_row = conn.execute(
        "SELECT called_ms - issued_ms, called_ms FROM tickets WHERE day = ? AND service = ? AND priority = ?"
        " AND called_ms IS NOT NULL ORDER BY called_ms DESC LIMIT 1", (day, service, priority)).fetchone()
    start_s = now_ms // 1000
    booked_late = conn.execute(
        "SELECT count(*) FROM bookings b WHERE json_extract(body, '$.start') BETWEEN ? AND ? AND status = 'booked'"
        " AND json_extract(body, '$.service') = ? AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.booking = b.code)",
        (start_s - BOOKED_LATE_S, min(start_s, effective_ms // 1000), service)).fetchone()[0]
    n = max(len(recent), 1)
    local = datetime.fromtimestamp(now_ms / 1000, m.tz)
    return {
        "ahead": float(ahead),
        "open": float(open_counters),
        "serving": float(len(serving)),
        "mean_s": float(mean_s),
        "occupancy_s": occupancy[service],
        "schedule_s": sched,
        "shared_work_s": shared_ahead,
        "first_free_s": first_free,
        "les_s": les_row[0] / 1000 if les_row else -1.0,
        "les_age_s": (now_ms - les_row[1]) / 1000 if les_row else -1.0,
        "recent_delay_s": sum(r[0] for r in recent[:5]) / 1000 / min(n, 5) if recent else -1.0,
        "noshow_share": sum(1 for r in recent if r[1] == "no_show") / n,
        "prio_share": sum(1 for r in recent if r[2] > 0) / n,
        "priority": float(priority),
        "booked_late": float(booked_late),
        "gap_s": max(effective_ms - now_ms, 0) / 1000,
        "hour": local.hour + local.minute / 60,
        "weekday": float(local.weekday()),
    }


def _mean_service_s(conn: sqlite3.Connection, m: Model, day: str, service: str) -> float:
    rules = m.rules_for(service)
    durations = [r[0] for r in conn.execute(
        "SELECT finished_ms - started_ms FROM tickets WHERE status = 'completed' AND service = ? AND day = ?"
        " AND started_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT ?", (service, day, rules.estimate_window))]
    return q.mean_service_s(durations, rules.default_service_s)


def _occupancy_s(conn: sqlite3.Connection, m: Model, day: str, service: str) -> float:
    """How long a counter is taken per call of this service lately: service time for those
    served, the calling time for those who did not come (so people who left count less)."""
    rules = m.rules_for(service)
    rows = []
    for status in ("completed", "no_show"):
        rows += [tuple(r) for r in conn.execute(
            "SELECT finished_ms, finished_ms - called_ms FROM tickets WHERE status = ? AND service = ? AND day = ?"
            " AND called_ms IS NOT NULL AND finished_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT ?",
            (status, service, day, rules.estimate_window)).fetchall()]
    rows.sort(reverse=True)
    usable = [r[1] for r in rows[:rules.estimate_window] if r[1] is not None and r[1] >= 0]
    return sum(usable) / len(usable) / 1000 if usable else float(rules.default_service_s)


SCHEDULE_ROWS = 80  # tickets per service played through the virtual schedule; beyond, a fluid rate


def schedule_s(conn: sqlite3.Connection, m: Model, open_ids: set[str], busy: dict[str, tuple[str, int]],
               occupancy: dict[str, float], *, service: str, priority: int, effective_ms: int, ahead: int,
               now_ms: int, day: str, ticket: str | None = None) -> float:
    """Play the waiting line through the open counters with recent occupancy times and the
    engine's own calling rule; the time at which some counter would call this ticket."""
    counters = [c for c in m.counters.values() if c.id in open_ids]
    if not any(service in c.services for c in counters):
        return -1.0
    wanted = {s for c in counters for s in c.services}
    rules = {s: m.rules_for(s) for s in m.services}
    lines: dict[str, list[tuple[tuple[int, int, int, str], str]]] = {}
    truncated: set[str] = set()
    mine_key = q.order_key(q.Waiting(ticket or "~", service, priority, effective_ms, None), rules[service], now_ms)
    for s in wanted:
        rows = conn.execute("SELECT id, service, priority, effective_ms, reserved_counter FROM tickets"
                            " WHERE status = 'waiting' AND service = ? AND day = ? ORDER BY effective_ms LIMIT ?",
                            (s, day, SCHEDULE_ROWS)).fetchall()
        if len(rows) >= SCHEDULE_ROWS:
            truncated.add(s)
        rows += conn.execute("SELECT id, service, priority, effective_ms, reserved_counter FROM tickets"
                             " WHERE status = 'waiting' AND service = ? AND day = ? AND priority > 0"
                             " ORDER BY effective_ms LIMIT ?", (s, day, SCHEDULE_ROWS)).fetchall()
        seen: dict[str, tuple[tuple[int, int, int, str], str]] = {}
        for r in rows:
            w = q.Waiting(*r)
            key = q.order_key(w, rules[s], now_ms)
            if w.reserved_counter is None and key < mine_key and w.id != ticket:
                seen[w.id] = (key, s)
        lines[s] = sorted(seen.values())
    free = []
    for c in counters:
        cur = busy.get(c.id)
        left = max(occupancy.get(cur[0], 0.0) - (now_ms - cur[1]) / 1000, 0.0) if cur else 0.0
        free.append([left, c.services])
    heads = {s: 0 for s in lines}
    same_done = 0
    while True:
        slot, best = None, None
        for f in sorted(free, key=lambda f: f[0]):
            pick = None
            for s in f[1]:
                if s in lines and heads[s] < len(lines[s]) and (pick is None or lines[s][heads[s]][0] < pick[0]):
                    pick = lines[s][heads[s]]
            if pick is not None or service in f[1]:
                slot, best = f, pick
                break
        if slot is None:
            return -1.0
        if best is None:  # the first counter free for this service finds nobody ahead: this ticket
            return float(slot[0])
        heads[best[1]] += 1
        slot[0] += occupancy.get(best[1], 0.0)
        if best[1] == service:
            same_done += 1
        if heads[best[1]] >= len(lines[best[1]]) and best[1] in truncated:
            break
    # Played out what was fetched: the rest of this line at the fluid rate of its counters.
    rest = max(ahead - same_done, 0) * occupancy[service]
    mine = [f[0] for f in free if service in f[1]]
    return float(min(mine) + rest / len(mine))


# -- estimators ---------------------------------------------------------------------------------
def naive(sig: dict[str, float]) -> Estimate:
    return point(q.estimate_wait_s(int(sig["ahead"]), int(sig["open"]), sig["mean_s"]))


def les(sig: dict[str, float]) -> Estimate:
    """Last-to-enter-service: the delay of the latest ticket of this service and class called."""
    if sig["les_s"] < 0:
        return naive(sig)
    return point(sig["les_s"])


def capacity_ahead(profile: list[float] | None, sig: dict[str, float]) -> float:
    """How much longer (>1) or shorter (<1) the schedule takes with the counters usually open
    in the coming slots of the day (the staffing profile) than with those open now: the work
    ahead, schedule_s x counters open now, is spent slot by slot at each slot's usual staffing
    (so counters that are finishing their last ticket before a break count as leaving)."""
    sched = sig["schedule_s"]
    if not profile or sched <= 0:
        return 1.0
    minute = sig["hour"] * 60
    slot = int(minute // SLOT_MIN)
    if not 0 <= slot < len(profile):
        return 1.0
    here = max(sig["serving"], 0.5)
    work = sched / 60 * here  # counter-minutes
    elapsed = 0.0
    while work > 1e-9 and slot < len(profile):
        # Slots nobody usually staffs (after closing) still serve those waiting, at today's rate.
        rate = profile[slot] if profile[slot] >= 0.25 else here
        span = (slot + 1) * SLOT_MIN - minute
        if rate * span >= work:
            elapsed += work / rate
            work = 0.0
            break
        work -= rate * span
        elapsed += span
        minute = (slot + 1) * SLOT_MIN
        slot += 1
    elapsed += work / here
    return min(max(elapsed * 60 / sched, 0.25), 4.0)


def features(sig: dict[str, float]) -> list[float]:
    """The learned model's inputs: queue-aware terms in seconds, then hour of day x schedule."""
    servers = max(sig["serving"], 1.0)
    occ = sig["occupancy_s"]
    work = (sig["ahead"] * occ + sig["shared_work_s"]) / servers
    no_counter = sig["schedule_s"] < 0
    sched = (sig["ahead"] + 1) * occ if no_counter else sig["schedule_s"]
    les_s = sig["les_s"] if sig["les_s"] >= 0 else sched
    recent = sig["recent_delay_s"] if sig["recent_delay_s"] >= 0 else sched
    jump = sched * sig["prio_share"] if sig["priority"] == 0 else 0.0
    booked = sig["booked_late"] * occ / servers
    gap = sig["gap_s"]
    base = [1.0, sched, sched * sig.get("capacity_ahead", 1.0), work, sig["first_free_s"], les_s, recent, jump, booked, gap, max(sched, gap),
            sched if no_counter else 0.0]
    hour = int(sig["hour"])
    return base + [sched if hour == h else 0.0 for h in HOURS]


FEATURE_NAMES = ("intercept", "schedule_s", "schedule_x_capacity_s", "work_s", "first_free_s", "les_s", "recent_delay_s", "priority_jumps_s",
                 "booked_late_s", "gap_s", "max_schedule_gap_s", "no_counter_s") + tuple(
                     f"schedule_s_at_{h:02d}h" for h in HOURS)


@dataclass(frozen=True)
class WaitModel:
    """A trained model: coefficients, then residual quantiles per bin of the linear prediction."""

    coef: tuple[float, ...]
    edges: tuple[float, ...]          # bin edges of the linear prediction (len = bins - 1)
    q10: tuple[float, ...]
    q50: tuple[float, ...]
    q90: tuple[float, ...]
    meta: dict[str, Any]

    def predict(self, sig: dict[str, float]) -> Estimate:
        x = features(sig)
        base = sum(c * v for c, v in zip(self.coef, x))
        b = bisect_right(self.edges, base)
        p50 = max(base + self.q50[b], 0.0)
        p10 = min(max(base + self.q10[b], 0.0), p50)
        p90 = max(base + self.q90[b], p50)
        return Estimate(int(round(p10)), int(round(p50)), int(round(p90)))

    def to_json(self) -> dict[str, Any]:
        return {"version": MODEL_VERSION, "features": list(FEATURE_NAMES), "coef": list(self.coef),
                "edges": list(self.edges), "q10": list(self.q10), "q50": list(self.q50), "q90": list(self.q90),
                "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WaitModel:
        if data.get("version") != MODEL_VERSION or list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError("wait model of another version or feature set")
        bins = len(data["edges"]) + 1
        if len(data["coef"]) != len(FEATURE_NAMES) or not all(len(data[k]) == bins for k in ("q10", "q50", "q90")):
            raise ValueError("wait model arrays have the wrong lengths")
        return cls(tuple(map(float, data["coef"])), tuple(map(float, data["edges"])), tuple(map(float, data["q10"])),
                   tuple(map(float, data["q50"])), tuple(map(float, data["q90"])), dict(data.get("meta") or {}))


@dataclass(frozen=True)
class BranchModel:
    """The branch's models: one per service with enough history, a pooled one for the rest."""

    pooled: WaitModel
    services: dict[str, WaitModel]
    staffing: dict[str, list[float]]  # per service, counters usually open per SLOT_MIN of the day

    def predict(self, sig: dict[str, float], service: str) -> Estimate:
        sig = {**sig, "capacity_ahead": capacity_ahead(self.staffing.get(service), sig)}
        return self.services.get(service, self.pooled).predict(sig)

    def to_json(self) -> dict[str, Any]:
        return {"version": MODEL_VERSION, "pooled": self.pooled.to_json(),
                "services": {s: m.to_json() for s, m in sorted(self.services.items())},
                "staffing": self.staffing}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchModel:
        if data.get("version") != MODEL_VERSION:
            raise ValueError("wait model of another version")
        return cls(WaitModel.from_json(data["pooled"]),
                   {str(s): WaitModel.from_json(m) for s, m in (data.get("services") or {}).items()},
                   {str(s): [float(v) for v in row] for s, row in (data.get("staffing") or {}).items()})

    @property
    def size_bytes(self) -> int:
        return len(json.dumps(self.to_json(), separators=(",", ":")))


def load_model(data_dir: Path) -> BranchModel | None:
    path = data_dir / MODEL_FILE
    if not path.exists():
        return None
    try:
        return BranchModel.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring %s: %s", path, err)
        return None


def save_model(data_dir: Path, model: BranchModel) -> None:
    path = data_dir / MODEL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(model.to_json(), separators=(",", ":")))
    tmp.replace(path)


def learned(sig: dict[str, float], model: BranchModel | None, service: str) -> Estimate:
    """The learned estimate, or naive until a model has been trained."""
    return model.predict(sig, service) if model is not None else naive(sig)


def shown(sig: dict[str, float], model: BranchModel | None, service: str) -> tuple[int, list[int] | None]:
    """(point s, [p10, p90] or None) from a ticket's signals: naive with no range until trained."""
    if model is None:
        return naive(sig).p50, None
    est = model.predict(sig, service)
    return est.p50, [est.p10, est.p90]


def estimate(conn: sqlite3.Connection, m: Model, model: BranchModel | None, *, service: str, priority: int,
             effective_ms: int, ahead: int, now_ms: int, day: str, ticket: str | None = None,
             record_issued_ms: int | None = None) -> tuple[int, list[int] | None]:
    """The node's estimate for one ticket (or a newcomer): (point s, [p10, p90] or None).

    Until a model has been trained it is the naive formula, with no range. With
    `record_issued_ms` (at issue, on the writer) the signals are kept for training."""
    sig = signals(conn, m, service=service, priority=priority, effective_ms=effective_ms, ahead=ahead,
                  now_ms=now_ms, day=day, ticket=ticket)
    if record_issued_ms is not None and ticket is not None:
        record(conn, ticket, day, service, record_issued_ms, sig)
    return shown(sig, model, service)


def record(conn: sqlite3.Connection, ticket: str, day: str, service: str, issued_ms: int,
           sig: dict[str, float]) -> None:
    """Keep a new ticket's signals for the nightly training (writer thread, in the issue transaction)."""
    conn.execute("INSERT OR REPLACE INTO wait_features (ticket, day, service, issued_ms, signals) VALUES (?, ?, ?, ?, ?)",
                 (ticket, day, service, issued_ms, json.dumps(sig, separators=(",", ":"))))
