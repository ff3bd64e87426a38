"""Projection tables folded from the log, in the same transaction as each append.

- tickets: one row per ticket, its fold state as canonical JSON plus indexed columns;
  a late event (sorting before the ticket's last applied event) re-folds that ticket from
  its own events, which the log indexes by subject (the ticket id);
- counters, config and bookings: last writer wins by the total order (hlc, origin, seq),
  which is order-independent by construction.
The state hash covers every projected row, so two devices with the same events agree on it.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sync.db import run_script
from sync.envelope import Event, canonical_json, loads
from sync.log import events_about

from appliance import events as ev
from appliance import fold

logger = logging.getLogger(__name__)


def _create_projection(conn: sqlite3.Connection) -> None:
    run_script(conn, 
        """
        CREATE TABLE tickets (
            id TEXT PRIMARY KEY, day TEXT NOT NULL, label TEXT NOT NULL, number INTEGER NOT NULL,
            service TEXT NOT NULL, issue_service TEXT NOT NULL, issued_by TEXT NOT NULL,
            status TEXT NOT NULL, priority INTEGER NOT NULL, effective_ms INTEGER NOT NULL,
            issued_ms INTEGER NOT NULL, counter TEXT, reserved_counter TEXT, called_ms INTEGER,
            started_ms INTEGER, finished_ms INTEGER, recalls INTEGER NOT NULL DEFAULT 0,
            booking TEXT, superseded TEXT, state TEXT NOT NULL
        );
        CREATE INDEX tickets_by_status ON tickets (status, service, effective_ms);
        CREATE INDEX tickets_by_number ON tickets (day, issue_service, issued_by, number);
        CREATE INDEX tickets_by_called ON tickets (called_ms);
        CREATE INDEX tickets_by_booking ON tickets (booking);
        CREATE INDEX tickets_by_superseded ON tickets (day) WHERE superseded IS NOT NULL;
        CREATE TABLE counter_status (
            id TEXT PRIMARY KEY, status TEXT NOT NULL, staff TEXT,
            hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL
        );
        CREATE TABLE config (
            kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
            hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL,
            PRIMARY KEY (kind, id)
        );
        CREATE TABLE bookings (
            code TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL,
            hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL
        );
        """
    )


def _index_lines(conn: sqlite3.Connection) -> None:
    """Every issue counts the people ahead in its line and reads the latest services: both
    from indexes alone, without visiting ticket rows (which carry their fold state)."""
    conn.execute("DROP INDEX tickets_by_status")
    conn.execute("CREATE INDEX tickets_by_line ON tickets (status, service, day, effective_ms)")
    conn.execute("CREATE INDEX tickets_by_finish ON tickets (status, service, finished_ms)")


def _index_call_order(conn: sqlite3.Connection) -> None:
    """Call-next reads the head of each (service, priority class) line from an index shaped
    for the call order, never scanning the waiting line (queries.next_waiting); a counter
    finds what it holds without a scan."""
    conn.execute("CREATE INDEX tickets_waiting ON tickets (status, service, day, priority, effective_ms, id, reserved_counter)"
                 " WHERE status = 'waiting'")
    conn.execute("CREATE INDEX tickets_reserved ON tickets (reserved_counter, day) WHERE status = 'waiting'"
                 " AND reserved_counter IS NOT NULL")
    conn.execute("CREATE INDEX tickets_held ON tickets (counter) WHERE status IN ('called', 'serving')")


def _refold_causal(conn: sqlite3.Connection) -> None:
    """Re-fold every ticket under the causal conflict rules (fold state gained fields)."""
    Projection().rebuild(conn)


# Waiting tickets counted per line, priority class and minute of effective time, kept by
# triggers in the same transaction as every ticket write: a position sums the minutes ahead
# and counts the tickets of at most two minutes, whatever the length of the line.
BUCKET_MS = 60_000
LINE_TRIGGERS = (
    """CREATE TRIGGER line_in AFTER INSERT ON tickets WHEN new.status = 'waiting' BEGIN
        INSERT INTO line_counts VALUES (new.service, new.day, new.priority, new.effective_ms / 60000, 1)
        ON CONFLICT DO UPDATE SET n = n + 1; END""",
    """CREATE TRIGGER line_out AFTER DELETE ON tickets WHEN old.status = 'waiting' BEGIN
        UPDATE line_counts SET n = n - 1 WHERE service = old.service AND day = old.day
        AND priority = old.priority AND minute = old.effective_ms / 60000; END""",
    """CREATE TRIGGER line_move AFTER UPDATE OF status, service, day, priority, effective_ms ON tickets
        WHEN old.status = 'waiting' OR new.status = 'waiting' BEGIN
        UPDATE line_counts SET n = n - 1 WHERE old.status = 'waiting' AND service = old.service
        AND day = old.day AND priority = old.priority AND minute = old.effective_ms / 60000;
        INSERT INTO line_counts SELECT new.service, new.day, new.priority, new.effective_ms / 60000, 1
        WHERE new.status = 'waiting' ON CONFLICT DO UPDATE SET n = n + 1; END""",
)
COUNT_LINES = ("INSERT INTO line_counts SELECT service, day, priority, effective_ms / 60000, count(*) FROM tickets"
               " WHERE status = 'waiting' GROUP BY 1, 2, 3, 4")


def _line_counts(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE line_counts (service TEXT NOT NULL, day TEXT NOT NULL, priority INTEGER NOT NULL,"
                 " minute INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (service, day, priority, minute))"
                 " WITHOUT ROWID")
    for sql in LINE_TRIGGERS:
        conn.execute(sql)
    conn.execute(COUNT_LINES)


def _index_recent_calls(conn: sqlite3.Connection) -> None:
    """The wait estimate reads a line's latest calls (appliance.waits): from an index, not by
    sorting the day's tickets at every issue."""
    conn.execute("CREATE INDEX tickets_by_call ON tickets (service, day, called_ms) WHERE called_ms IS NOT NULL")


def _index_called_only(conn: sqlite3.Connection) -> None:
    """The recent calls read called tickets only: the waiting ones (no called_ms) were entries
    every issue inserted and every call moved, a page written per command for nothing."""
    conn.execute("DROP INDEX tickets_by_called")
    conn.execute("CREATE INDEX tickets_by_called ON tickets (called_ms) WHERE called_ms IS NOT NULL")


def _index_finish_by_day(conn: sqlite3.Connection) -> None:
    """A line's latest services of the day (the estimates' mean service time and occupancy)
    from a bounded index range: by (status, service) alone, a line with fewer services today
    than the window (every morning, and no-shows most of the day) walked back through every
    earlier day's tickets at each issue."""
    conn.execute("DROP INDEX tickets_by_finish")
    conn.execute("CREATE INDEX tickets_by_finish ON tickets (status, service, day, finished_ms)")


MIGRATIONS = [_create_projection, _index_lines, _index_call_order, _refold_causal, _line_counts,
              _index_recent_calls, _index_called_only, _index_finish_by_day]
PROJECTION_TABLES = ("tickets", "counter_status", "config", "bookings")

CONFIG_KINDS = {ev.CONFIG_BRANCH: "branch", ev.CONFIG_SERVICE: "service",
                ev.CONFIG_COUNTER: "counter", ev.CONFIG_ROSTER: "roster", ev.CONFIG_HOURS: "hours"}


def subject_of(event: Event) -> str | None:
    """What the log indexes an event by: its ticket, so one ticket can re-fold alone."""
    if event.type in ev.TICKET_TYPES:
        ticket = event.payload.get("ticket")
        return ticket if isinstance(ticket, str) else None
    return None


class Projection:
    """Folds events into the projection tables; called by the log inside its transaction."""

    def __init__(self) -> None:
        self.folded = 0
        self.refolds = 0
        self.skipped = 0
        self.config_dirty = False  # a config event was folded in the running transaction

    def apply(self, conn: sqlite3.Connection, event: Event) -> None:
        if not ev.foldable(event.type, event.schema):
            self.skipped += 1  # stored and forwarded; a newer version folds it
            return
        try:
            if event.type in ev.TICKET_TYPES:
                self._apply_ticket(conn, event)
            elif event.type in ev.COUNTER_TYPES:
                self._apply_counter(conn, event)
            elif event.type in CONFIG_KINDS:
                self._apply_config(conn, event)
            elif event.type in ev.BOOKING_TYPES:
                self._apply_booking(conn, event)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            # A signed but ill-formed payload: keep the event, fold nothing from it.
            self.skipped += 1
            logger.warning("not folding %s/%d (%s): bad payload: %r", event.origin, event.seq, event.type, err)
            return
        self.folded += 1

    # -- tickets -------------------------------------------------------------------------
    def _apply_ticket(self, conn: sqlite3.Connection, event: Event) -> None:
        ticket_id = event.payload["ticket"]
        if not isinstance(ticket_id, str):
            raise TypeError("ticket id must be a string")
        if event.type == ev.TICKET_ISSUED:
            _check_issued(event.payload)
        row = conn.execute(f"SELECT {TICKET_FIELDS} FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        state = loads(row[-1]) if row else None
        if state is None and event.type != ev.TICKET_ISSUED:
            return  # folded when its ticket.issued arrives
        if state is not None and event.key > tuple(state["last_key"]) and \
                (applied := fold.apply(state, event)) is not fold.REFOLD:
            state = applied  # type: ignore[assignment]
        elif state is None and conn.execute(
            "SELECT count(*) FROM events WHERE subject = ?", (ticket_id,)
        ).fetchone()[0] == 1:
            state = fold.new_ticket(event)
        else:
            self.refolds += 1
            state = fold.refold(events_about(conn, ticket_id))
        if state is not None:
            write_ticket(conn, state, stored=tuple(row) if row else None)

    # -- last writer wins ----------------------------------------------------------------
    def _apply_counter(self, conn: sqlite3.Connection, event: Event) -> None:
        counter = event.payload["counter"]
        if not isinstance(counter, str):
            raise TypeError("counter must be a string")
        conn.execute(
            "INSERT INTO counter_status (id, status, staff, hlc, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, staff = excluded.staff,"
            " hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq"
            " WHERE (excluded.hlc, excluded.origin, excluded.seq) > (counter_status.hlc, counter_status.origin, counter_status.seq)",
            (counter, ev.COUNTER_TYPES[event.type], event.payload.get("staff"), event.hlc, event.origin, event.seq),
        )

    def _apply_config(self, conn: sqlite3.Connection, event: Event) -> None:
        kind = CONFIG_KINDS[event.type]
        self.config_dirty = True
        entity = "branch" if kind in ("branch", "roster", "hours") else event.payload["id"]
        if not isinstance(entity, str):
            raise TypeError("config id must be a string")
        conn.execute(
            "INSERT INTO config (kind, id, body, hlc, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body,"
            " hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq"
            " WHERE (excluded.hlc, excluded.origin, excluded.seq) > (config.hlc, config.origin, config.seq)",
            (kind, entity, canonical_json(event.payload).decode(), event.hlc, event.origin, event.seq),
        )

    def _apply_booking(self, conn: sqlite3.Connection, event: Event) -> None:
        code = event.payload["code"]
        if not isinstance(code, str):
            raise TypeError("booking code must be a string")
        status = "cancelled" if event.type == ev.BOOKING_CANCELLED else "booked"
        conn.execute(
            "INSERT INTO bookings (code, body, status, hlc, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (code) DO UPDATE SET body = excluded.body, status = excluded.status,"
            " hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq"
            " WHERE (excluded.hlc, excluded.origin, excluded.seq) > (bookings.hlc, bookings.origin, bookings.seq)",
            (code, canonical_json(event.payload).decode(), status, event.hlc, event.origin, event.seq),
        )

    # -- whole re-fold ---------------------------------------------------------------------
    def rebuild(self, conn: sqlite3.Connection) -> int:
        """Throw the projection away and fold every stored event again; returns the count."""
        with _bulk(conn):
            return self._rebuild(conn)

    def _rebuild(self, conn: sqlite3.Connection) -> int:
        for table in PROJECTION_TABLES:
            if table != "tickets":
                conn.execute(f"DELETE FROM {table}")
        # Only what the fold reads (the envelope's other fields are for replication), in the
        # table's own order (a sequential scan), then sorted here into the total order.
        rows = _plain(conn).execute("SELECT hlc, origin, seq, type, schema, payload, subject FROM events").fetchall()
        rows.sort(key=_total_order)
        by_ticket: dict[str, list[Event]] = defaultdict(list)
        others: list[Event] = []
        foldable = ev.foldable
        ticket_types = ev.TICKET_TYPES
        for hlc, origin, seq, type_, schema, payload, subject in rows:
            if not foldable(type_, schema):
                continue
            event = Event(origin, seq, hlc, type_, schema, loads(payload), "", "")
            if subject is not None:
                by_ticket[subject].append(event)
            elif type_ not in ticket_types:
                others.append(event)
        tickets = []
        for events in by_ticket.values():
            try:
                if events[0].type == ev.TICKET_ISSUED:
                    _check_issued(events[0].payload)
                state = fold.refold(events, presorted=True)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                logger.warning("not folding ticket %s: bad payload: %r", events[0].payload.get("ticket"), err)
                continue
            if state is not None:
                tickets.append(ticket_row(state))
        _store_tickets(conn, tickets)
        for event in others:  # already in total order: last writer wins needs no comparison
            self.apply(conn, event)
        self.folded = len(rows)
        return len(rows)


def _store_tickets(conn: sqlite3.Connection, tickets: list[tuple[Any, ...]]) -> None:
    """Make the tickets table hold exactly `tickets` (rows as ticket_row gives them).

    Rows equal to what is stored are not written again, so re-folding a consistent store
    writes (and syncs) next to nothing. When much changes (a new store, a changed fold), the
    table is emptied and bulk loaded without its secondary indexes, which are then built
    once: much faster than maintaining them row by row (DDL is transactional in SQLite)."""
    stored = {row[0]: row for row in _plain(conn).execute(f"SELECT {TICKET_FIELDS} FROM tickets")}
    changed = [t for t in tickets if stored.get(t[0]) != t]
    gone = stored.keys() - {t[0] for t in tickets}
    if len(changed) + len(gone) <= max(100, len(tickets) // 10):
        conn.executemany("DELETE FROM tickets WHERE id = ?", [(i,) for i in gone])
        conn.executemany(TICKET_UPSERT, changed)
        return
    indexes = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = 'tickets'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for kind, name, _ in indexes:
        conn.execute(f"DROP {kind.upper()} {name}")
    conn.execute("DELETE FROM tickets")
    tickets.sort()  # by id: the primary key's b-tree fills left to right
    conn.executemany(TICKET_INSERT, tickets)
    for _, _, sql in indexes:
        conn.execute(sql)
    if any(kind == "trigger" for kind, _, _ in indexes):
        conn.execute("DELETE FROM line_counts")  # counted once, as the triggers were off
        conn.execute(COUNT_LINES)
        if any(name.startswith("wait_coverage") for kind, name, _ in indexes if kind == "trigger"):
            from appliance import waits  # its own migrations keep this count (today's shown ranges' coverage)

            waits.recount_coverage(conn)


def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor giving plain tuples: a whole re-fold reads every event and ticket, and making
    a sqlite3.Row of each (then a tuple of it) cost as much as reading them."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


def _total_order(row: tuple[Any, ...]) -> tuple[int, str, int]:
    return row[0], row[1], row[2]


REBUILD_CACHE_KIB = 32768  # page cache while re-folding: the day's tickets and their indexes stay in memory


@contextmanager
def _bulk(conn: sqlite3.Connection) -> Iterator[None]:
    """For a whole re-fold: a larger page cache (so building the indexes does not spill),
    and the cyclic garbage collector paused. A re-fold allocates a few objects per event
    and frees none until the end; the collector's passes over them cost as much as the fold
    itself, and it has nothing to find: nothing made here holds a cycle."""
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size = -{REBUILD_CACHE_KIB}")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        conn.execute(f"PRAGMA cache_size = {int(cache)}")


def _check_issued(p: dict[str, Any]) -> None:
    for name, kind in (("ticket", str), ("label", str), ("day", str), ("service", str), ("number", int)):
        if not isinstance(p.get(name), kind):
            raise TypeError(f"ticket.issued needs {name} as {kind.__name__}")
    if not isinstance(p.get("priority", 0), int) or not isinstance(p.get("effective_ms", 0), int):
        raise TypeError("priority and effective_ms must be integers")


TICKET_FIELDS = (
    "id, day, label, number, service, issue_service, issued_by, status, priority, effective_ms, issued_ms,"
    " counter, reserved_counter, called_ms, started_ms, finished_ms, recalls, booking, superseded, state"
)
_INTO_TICKETS = f"tickets ({TICKET_FIELDS}) VALUES ({', '.join('?' * 20)})"
# An upsert, not INSERT OR REPLACE: a replace's implicit delete fires no trigger.
TICKET_UPSERT = "INSERT INTO " + _INTO_TICKETS + " ON CONFLICT (id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in TICKET_FIELDS.split(", ") if c != "id")
TICKET_INSERT = "INSERT INTO " + _INTO_TICKETS  # the whole re-fold, into an empty table


def ticket_row(state: fold.TicketState) -> tuple[Any, ...]:
    won = fold.winner(state)
    claim: dict[str, Any] = won[1] if won else {}
    return (
        state["id"], state["day"], state["label"], state["number"], state["service"], state["issue_service"],
        state["issued_by"], fold.status(state, won), state["priority"], state["effective_ms"], state["issued_ms"],
        won[0] if won else None, state["reserved_counter"], claim.get("called_ms"), claim.get("started_ms"),
        claim.get("finished_ms"), claim.get("recalls", 0), state["booking"],
        ",".join(fold.superseded(state, won)) or None, canonical_json(state).decode("utf-8"),
    )


_TICKET_COLUMNS = TICKET_FIELDS.split(", ")


def write_ticket(conn: sqlite3.Connection, state: fold.TicketState, stored: tuple[Any, ...] | None = None) -> None:
    """Write a ticket's row; given the `stored` row (TICKET_FIELDS), only the columns that
    changed: SQLite rewrites every index on a column an UPDATE sets, changed or not, so a
    call-next setting all twenty dirtied (and synced, and checkpointed) index pages it did not
    change."""
    row = ticket_row(state)
    if stored is None:
        conn.execute(TICKET_UPSERT, row)
        return
    changed = [i for i in range(1, len(row)) if row[i] != stored[i]]
    if changed:
        conn.execute(f"UPDATE tickets SET {', '.join(f'{_TICKET_COLUMNS[i]} = ?' for i in changed)} WHERE id = ?",
                     [*(row[i] for i in changed), row[0]])


def state_hash(conn: sqlite3.Connection) -> str:
    """SHA-256 over every projected row, in key order: equal on devices with equal event sets."""
    digest = hashlib.sha256()
    for sql in (
        "SELECT state FROM tickets ORDER BY id",
        "SELECT id, status, staff, hlc, origin, seq FROM counter_status ORDER BY id",
        "SELECT kind, id, body FROM config ORDER BY kind, id",
        "SELECT code, body, status FROM bookings ORDER BY code",
    ):
        digest.update(sql.encode())
        for row in conn.execute(sql):
            digest.update(canonical_json(list(row)))
    return digest.hexdigest()
