"""Read side of the branch queue: ticket, counter and branch views, positions, estimates.

Queries take any connection (a reader thread's, or the writer's inside a command). The
model (the configuration as the log holds it) is cached and reloaded after a config change
commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.log import EventLog

from appliance import counter_stats, hours
from appliance import queue as q
from appliance import waits
from appliance.config import Config
from appliance.errors import NotFound
from appliance.model import Model, load_model
from appliance.projection import BUCKET_MS, Projection

_LOWEST, _HIGHEST = -(1 << 62), 1 << 62  # effective times beyond any real one

TICKET_COLUMNS = (
    "id, day, label, number, service, issue_service, issued_by, status, priority, effective_ms, issued_ms,"
    " counter, reserved_counter, called_ms, started_ms, finished_ms, recalls, booking, superseded, state"
)


def iso(ms: int | None, tz: Any) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


class Queries:
    """The read side; Branch (the commands) builds on it."""

    def __init__(self, config: Config, log: EventLog, projection: Projection) -> None:
        self.config = config
        self.log = log
        self.projection = projection
        self.device_id = config.device_id
        self.config_generation = 0
        self._cache: tuple[int, Model] | None = None
        self.hq_key: Ed25519PublicKey | None = None  # verifies HQ booking tokens offline
        # Seals a phone number to HQ's personal-data key (sync.sealed); None: no key yet.
        self.seal_phone: Callable[[str], str | None] = lambda phone: None
        self.wait_model: waits.BranchModel | None = None  # the learned estimator, once trained
        self._wait_context: waits.DayContext | None = None  # what recent days say about today

    def wait_context(self, conn: sqlite3.Connection, m: Model, day: str) -> waits.DayContext:
        """The wait estimate's view of today from the days before (waits.day_context): read
        once a day, at the first estimate of the day, then shared by every reader."""
        ctx = self._wait_context
        if ctx is None or ctx.day != day:
            ctx = waits.day_context(conn, m, day)
            self._wait_context = ctx
        return ctx

    # -- transaction listener: readers reload the model after a config change commits ------
    def job_started(self) -> None: ...
    def job_failed(self) -> None: ...
    def rolled_back(self) -> None:
        self.projection.config_dirty = False

    def committed(self) -> None:
        if self.projection.config_dirty:
            self.projection.config_dirty = False
            self.config_generation += 1

    def model(self, conn: sqlite3.Connection, *, writer: bool = False) -> Model:
        if writer and self.projection.config_dirty:
            return load_model(conn, self.config)  # this transaction's own, uncommitted view
        cached = self._cache
        if cached is None or cached[0] != self.config_generation:
            generation = self.config_generation
            cached = (generation, load_model(conn, self.config))
            self._cache = cached
        return cached[1]

    def now_ms(self) -> int:
        return self.log.clock.wall_ms()

    def today(self, model: Model) -> str:
        return q.business_day(self.now_ms(), model.tz)

    # -- queries (any connection) --------------------------------------------------------
    def _ticket_row(self, conn: sqlite3.Connection, ticket_id: str) -> sqlite3.Row:
        row = conn.execute(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise NotFound(f"no ticket {ticket_id!r}", code="unknown_ticket")
        return row

    def _counter_status(self, conn: sqlite3.Connection, counter: str) -> str:
        row = conn.execute("SELECT status FROM counter_status WHERE id = ?", (counter,)).fetchone()
        return row[0] if row else "closed"

    @staticmethod
    def _counter_name(m: Model, counter: str) -> str:
        c = m.counters.get(counter)
        return c.name if c else counter

    def _waiting(self, conn: sqlite3.Connection, day: str, service: str | None = None) -> list[q.Waiting]:
        sql = "SELECT id, service, priority, effective_ms, reserved_counter FROM tickets WHERE status = 'waiting' AND day = ?"
        args: tuple[Any, ...] = (day,)
        if service is not None:
            sql += " AND service = ?"
            args += (service,)
        return [q.Waiting(*row) for row in conn.execute(sql, args)]

    def _open_counters(self, conn: sqlite3.Connection, m: Model) -> dict[str, int]:
        open_ids = {r[0] for r in conn.execute("SELECT id FROM counter_status WHERE status = 'open'")}
        per_service = {s: 0 for s in m.services}
        for c in m.counters.values():
            if c.id in open_ids:
                for s in c.services:
                    if s in per_service:
                        per_service[s] += 1
        return per_service

    def _mean_service_s(self, conn: sqlite3.Connection, m: Model, day: str, service: str) -> float:
        rules = m.rules_for(service)
        durations = [r[0] for r in conn.execute(
            "SELECT finished_ms - started_ms FROM tickets WHERE day = ? AND service = ? AND status = 'completed'"
            " AND started_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT ?",
            (day, service, rules.estimate_window),
        )]
        return q.mean_service_s(durations, rules.default_service_s)

    # -- the call order, read from the tickets_waiting index (projection._index_call_order) ---
    # A line is (service, day); within it each priority class is an index range ordered by
    # (effective_ms, id). Promotion is a time threshold, so a class splits at `cut` into a
    # promoted part (effective_ms <= cut) and the rest: every part is one index range with one
    # effective priority. Call-next reads the head of each class; position counts ranges.
    _CLASSES_SQL = ("SELECT priority FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                    " AND priority < ? ORDER BY priority DESC LIMIT 1")  # one seek, not a scan
    _HEAD_SQL = ("SELECT id, effective_ms FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                 " AND priority = ? AND reserved_counter IS NULL ORDER BY effective_ms, id LIMIT 1")

    def _classes(self, conn: sqlite3.Connection, service: str, day: str) -> list[int]:
        """The priority classes present in a line, highest first (one index seek each)."""
        out: list[int] = []
        below = 1 << 62
        while True:
            row = conn.execute(self._CLASSES_SQL, (service, day, below)).fetchone()
            if row is None:
                return out
            top = row[0]
            out.append(top)
            below = top

    @staticmethod
    def _cut(rules: Any, now: int) -> int:
        """Tickets with effective_ms <= cut are promoted (queue.effective_priority)."""
        return now - rules.promote_after_s * 1000 if rules.promote_after_s > 0 else -(1 << 62)

    def next_waiting(self, conn: sqlite3.Connection, m: Model, counter: str, day: str, now: int) -> str | None:
        """The ticket `counter` calls next (queue.next_for_counter's order), from index seeks:
        per service of the counter and priority class, the class's first ticket; plus the
        few tickets transferred to this counter by name. Cost: services x classes seeks."""
        services = m.counters[counter].services
        rank = {s: i for i, s in enumerate(services)}
        best: tuple[tuple[int, int, int, str], str] | None = None

        def consider(ticket_id: str, service: str, priority: int, effective_ms: int, service_rank: int) -> None:
            nonlocal best
            rules = m.rules_for(service)
            promoted = effective_ms <= self._cut(rules, now)
            effective = max(priority, rules.max_priority) if promoted else priority
            key = (-effective, effective_ms, service_rank, ticket_id)
            if best is None or key < best[0]:
                best = (key, ticket_id)

        for service in services:
            for priority in self._classes(conn, service, day):
                row = conn.execute(self._HEAD_SQL, (service, day, priority)).fetchone()
                if row is not None:
                    consider(row[0], service, priority, row[1], rank[service])
        for ticket_id, service, priority, effective_ms in conn.execute(
                "SELECT id, service, priority, effective_ms FROM tickets INDEXED BY tickets_reserved"
                " WHERE status = 'waiting' AND reserved_counter IS NOT NULL AND reserved_counter = ? AND day = ?",
                (counter, day)):
            consider(ticket_id, service, priority, effective_ms, rank.get(service, -1))
        return best[1] if best is not None else None

    def _ahead(self, conn: sqlite3.Connection, m: Model, row: sqlite3.Row | dict[str, Any], now: int) -> int:
        """How many of the line's waiting tickets are called before `row` (queue.service_line's
        order): per class and promotion part, all of a part that ranks higher, the earlier
        ones of the part that ranks the same. Each is a range of effective time, counted from
        the per-minute counts (projection.line_counts) and the index within its end minutes."""
        rules = m.rules_for(row["service"])
        cut = self._cut(rules, now)
        me = q.effective_priority(q.Waiting(row["id"], row["service"], row["priority"], row["effective_ms"], None),
                                  rules, now)
        line = (row["service"], row["day"])
        mine = row["effective_ms"]
        ahead = 0
        for priority in self._classes(conn, *line):
            for effective, lo, hi in ((max(priority, rules.max_priority), _LOWEST, cut), (priority, cut, _HIGHEST)):
                if effective > me:
                    ahead += self._count(conn, line, priority, lo, hi)
                elif effective == me and lo < mine:
                    ahead += self._count(conn, line, priority, lo, min(hi, mine - 1))
                    if mine <= hi:  # same effective time: the smaller id is called first
                        ahead += conn.execute(
                            "SELECT count(*) FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                            " AND priority = ? AND effective_ms = ? AND id < ?",
                            (*line, priority, mine, row["id"])).fetchone()[0]
        return ahead

    def _count(self, conn: sqlite3.Connection, line: tuple[str, str], priority: int, lo: int, hi: int) -> int:
        """Waiting tickets of one class with lo < effective_ms <= hi: whole minutes from their
        counts, the two partial minutes at the ends from the index."""
        if hi <= lo:
            return 0
        direct = ("SELECT count(*) FROM tickets WHERE status = 'waiting' AND service = ? AND day = ?"
                  " AND priority = ? AND effective_ms > ? AND effective_ms <= ?")
        first, last = (lo + 1) // BUCKET_MS, hi // BUCKET_MS
        if last - first < 2:
            return conn.execute(direct, (*line, priority, lo, hi)).fetchone()[0]
        head = conn.execute(direct, (*line, priority, lo, (first + 1) * BUCKET_MS - 1)).fetchone()[0]
        tail = conn.execute(direct, (*line, priority, last * BUCKET_MS - 1, hi)).fetchone()[0]
        middle = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM line_counts WHERE service = ? AND day = ? AND priority = ?"
            " AND minute > ? AND minute < ?", (*line, priority, first, last)).fetchone()[0]
        return head + middle + tail

    def line_estimate(self, conn: sqlite3.Connection, m: Model, day: str, service: str,
                      open_counters: int | None = None) -> Callable[[int], int]:
        """people ahead -> estimated wait (s) in `service`'s line today: the one place every
        estimate (a ticket's, a service summary's, GET /state's) comes from, so a better
        estimator plugs in here. Built once per line, cheap per ticket."""
        if open_counters is None:
            open_counters = self._open_counters(conn, m).get(service, 0)
        mean = self._mean_service_s(conn, m, day, service)
        opened = open_counters
        return lambda people_ahead: q.estimate_wait_s(people_ahead, opened, mean)

    def _position(self, conn: sqlite3.Connection, m: Model, row: sqlite3.Row,
                  record: bool = False, shown: tuple[int, list[int] | None] | None = None) -> dict[str, tuple[Any, ...]]:
        """{ticket id: (position, estimated wait s, [p10, p90] or None)} for one waiting ticket;
        `record` keeps the signals for the nightly training (at issue, on the writer); `shown`
        is the estimate already made at issue (the one its issue event carries)."""
        now = self.now_ms()
        ahead = self._ahead(conn, m, row, now)
        if shown is not None:
            return {row["id"]: (ahead + 1, *shown)}
        if self.wait_model is None and not record:
            return {row["id"]: (ahead + 1, self.line_estimate(conn, m, row["day"], row["service"])(ahead), None)}
        wait, span = waits.estimate(conn, m, self.wait_model, service=row["service"], priority=row["priority"],
                                    effective_ms=row["effective_ms"], ahead=ahead, now_ms=now, day=row["day"],
                                    ticket=row["id"], record_issued_ms=row["issued_ms"] if record else None,
                                    ctx=self.wait_context(conn, m, row["day"]))
        return {row["id"]: (ahead + 1, wait, span)}

    def ticket(self, conn: sqlite3.Connection, ticket_id: str, *, model: Model | None = None,
               record: bool = False, shown: tuple[int, list[int] | None] | None = None) -> dict[str, Any]:
        m = model or self.model(conn)
        row = self._ticket_row(conn, ticket_id)
        positions = self._position(conn, m, row, record, shown) if row["status"] == "waiting" else {}
        return self._ticket_view(m, row, positions)

    def _ticket_view(self, m: Model, row: sqlite3.Row, positions: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
        tz = m.tz
        position, wait, *span = positions.get(row["id"], (None, None))
        state = json.loads(row["state"])
        return {
            "id": row["id"],
            "label": row["label"],
            "service": row["service"],
            "status": row["status"],
            "priority": row["priority"],
            "language": state.get("language"),
            "position": position,
            "people_ahead": position - 1 if position else None,
            "estimated_wait_s": wait,
            "estimated_wait_range_s": span[0] if span else None,
            "issued_at": iso(row["issued_ms"], tz),
            "called_at": iso(row["called_ms"], tz),
            "started_at": iso(row["started_ms"], tz),
            "finished_at": iso(row["finished_ms"], tz),
            "counter": row["counter"] or row["reserved_counter"],
            "recalls": row["recalls"],
            "booking_code": row["booking"],
            "superseded": row["superseded"].split(",") if row["superseded"] else [],
            "status_url": self.config.status_url(state.get("status_token")),
        }

    def counter(self, conn: sqlite3.Connection, counter: str, *, model: Model | None = None) -> dict[str, Any]:
        m = model or self.model(conn)
        c = m.counters.get(counter)
        if c is None:
            raise NotFound(f"unknown counter {counter!r}", code="unknown_counter")
        return self._counters(conn, m, only=counter)[0]

    def _counters(self, conn: sqlite3.Connection, m: Model, only: str | None = None) -> list[dict[str, Any]]:
        day = self.today(m)
        statuses = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, staff FROM counter_status")}
        current = {
            r["counter"]: r for r in conn.execute(
                f"SELECT {TICKET_COLUMNS} FROM tickets WHERE status IN ('called', 'serving') AND counter IS NOT NULL")
        }
        lost: dict[str, list[dict[str, Any]]] = {}
        for r in conn.execute("SELECT id, label, counter, superseded FROM tickets WHERE superseded IS NOT NULL AND day = ?", (day,)):
            for loser in r["superseded"].split(","):
                lost.setdefault(loser, []).append({"ticket": r["id"], "label": r["label"], "by_counter": r["counter"]})
        served = counter_stats.served_today(conn, day) if only is None else None
        out = []
        for c in m.counters.values():
            if only is not None and c.id != only:
                continue
            status, staff = statuses.get(c.id, ("closed", None))
            cur = current.get(c.id)
            out.append({
                "id": c.id, "name": c.name, "names": dict(c.names), "services": list(c.services), "status": status,
                "staff": staff,
                "current": self._ticket_view(m, cur, {}) if cur is not None else None,
                "superseded": lost.get(c.id, []),
            })
            if served is not None:
                out[-1]["served_today"] = served.get(c.id, 0)
        return out

    def service_summary(self, conn: sqlite3.Connection, service: str) -> dict[str, Any] | None:
        """One service's line as GET /state shows it (the stream sends it with ticket events)."""
        m = self.model(conn)
        s = m.services.get(service)
        if s is None:
            return None
        day = self.today(m)
        waiting = conn.execute("SELECT count(*) FROM tickets WHERE status = 'waiting' AND day = ? AND service = ?",
                               (day, service)).fetchone()[0]
        opened = self._open_counters(conn, m).get(service, 0)
        wait, span = self._newcomer_estimate(conn, m, day, service, waiting, opened)
        view = {"id": s.id, "letter": s.letter, "names": s.names, "waiting": waiting,
                "estimated_wait_s": wait, "estimated_wait_range_s": span, "open_counters": opened}
        if s.icon:
            view["icon"] = s.icon
        return view

    def _newcomer_estimate(self, conn: sqlite3.Connection, m: Model, day: str, service: str,
                           waiting: int, opened: int) -> tuple[int, list[int] | None]:
        """What a walk-in taking a ticket of `service` now would be told."""
        if self.wait_model is None:
            return self.line_estimate(conn, m, day, service, opened)(waiting), None
        now = self.now_ms()
        return waits.estimate(conn, m, self.wait_model, service=service, priority=0, effective_ms=now,
                              ahead=waiting, now_ms=now, day=day, ctx=self.wait_context(conn, m, day))

    def state(self, conn: sqlite3.Connection) -> dict[str, Any]:
        m = self.model(conn)
        now = self.now_ms()
        day = q.business_day(now, m.tz)
        open_counters = self._open_counters(conn, m)
        waiting_all = self._waiting(conn, day)
        rows = {r["id"]: r for r in conn.execute(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE status = 'waiting' AND day = ?", (day,))}
        services, waiting_views = [], []
        for s in m.services.values():
            rules = m.rules_for(s.id)
            line = q.service_line(waiting_all, s.id, rules, now)
            opened = open_counters.get(s.id, 0)
            estimate = self.line_estimate(conn, m, day, s.id, opened)
            positions = {t.id: (i + 1, estimate(i)) for i, t in enumerate(line)}
            wait, span = self._newcomer_estimate(conn, m, day, s.id, len(line), opened)
            services.append({
                "id": s.id, "letter": s.letter, "names": s.names, "waiting": len(line),
                "estimated_wait_s": wait, "estimated_wait_range_s": span, "open_counters": opened,
                **({"icon": s.icon} if s.icon else {}),
                **({} if s.enabled else {"enabled": False}),
            })
            waiting_views += [(q.order_key(t, rules, now), self._ticket_view(m, rows[t.id], positions)) for t in line]
        waiting_views.sort(key=lambda kv: kv[0])
        recent = []
        for r in conn.execute(
            "SELECT id, label, service, counter, called_ms, recalls FROM tickets"
            " WHERE called_ms IS NOT NULL AND day = ? ORDER BY called_ms DESC LIMIT 10", (day,)
        ):
            recent.append({"ticket": r["id"], "label": r["label"], "service": r["service"], "counter": r["counter"],
                           "counter_name": self._counter_name(m, r["counter"]), "called_at": iso(r["called_ms"], m.tz),
                           "recalls": r["recalls"]})
        return {
            "branch": {"id": m.branch_id, "name": m.name, "timezone": m.timezone, "languages": list(m.languages),
                       "notices": list(m.notices),
                       **({"notices_by_language": {k: list(v) for k, v in m.notices_by_language.items()}}
                          if m.notices_by_language else {}),
                       "hours": hours.status(m.hours, datetime.fromtimestamp(now / 1000, m.tz))},
            "device": {"id": self.device_id, "role": self.config.role},
            "now": iso(now, m.tz),
            "day": day,
            "services": services,
            "counters": self._counters(conn, m),
            "recent_calls": recent,
            "waiting": [v for _, v in waiting_views],
        }
