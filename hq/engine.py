"""HQ's state of a branch, computed by the branch's own engine: the same log tables
(`sync.log`), the same fold and projection (`appliance.fold`, `appliance.projection`) and the
same state hash a node computes, run over the events HQ holds for that branch (the branch
devices' chains up to HQ's contiguous heads, and HQ's own chain `hq:<branch>` from the outbox).

When HQ and a node hold the same events, their state hashes are equal by construction (it is
one function), and a test holds them equal after partitions, transfers and conflicting calls.
HQ's own ticket table (what the citizens' pages and the console read) takes each ticket's
status, counter, service and times from the same fold (`ticket_fields`).

The fold runs on an in-memory SQLite database built from the branch's events and is cached per
branch until HQ's version vector of the branch moves; it is a read, run on a reader thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

import orjson

from appliance import events as ev
from appliance import fold
from appliance.projection import MIGRATIONS as PROJECTION_MIGRATIONS
from appliance.projection import Projection, state_hash, subject_of
from hq import outbox
from sync.db import migrate
from sync.envelope import Event, canonical_json
from sync.log import EVENT_COLUMNS
from sync.log import MIGRATIONS as LOG_MIGRATIONS

logger = logging.getLogger(__name__)

_cache: dict[tuple[str, str], tuple[tuple[tuple[str, int], ...], dict[str, Any]]] = {}
_lock = threading.Lock()
CACHE_BRANCHES = 256


def stored_event(text: str | bytes) -> Event:
    """An event as HQ stored it (validated when it was ingested): no second validation."""
    d = orjson.loads(text)
    return Event(d["origin"], d["seq"], d["hlc"], d["type"], d["schema"], d["payload"], d["branch"], d["prev"], d["sig"])


def branch_events(conn: sqlite3.Connection, branch: str) -> list[Event]:
    """Every event of `branch` a node of it holds once in step with HQ: the devices' chains up to
    HQ's contiguous heads, and HQ's own chain for the branch."""
    rows = conn.execute("SELECT e.envelope FROM events e JOIN sync_heads h ON h.branch = e.branch AND"
                        " h.origin = e.origin AND e.seq <= h.seq WHERE e.branch = ?", (branch,)).fetchall()
    out = [stored_event(r[0]) for r in rows]
    rows = conn.execute("SELECT envelope FROM outbox WHERE branch_id = ?", (branch,)).fetchall()
    out += [stored_event(r[0]) for r in rows]
    return out


def fold_events(events: list[Event]) -> sqlite3.Connection:
    """A node's log and projection tables in memory, holding `events` folded as a node folds them."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    migrate(conn, "sync", LOG_MIGRATIONS)
    migrate(conn, "appliance", PROJECTION_MIGRATIONS)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO events ({EVENT_COLUMNS}, hash, received_ms, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        [(e.origin, e.seq, e.hlc, e.type, e.schema, canonical_json(e.payload).decode("utf-8"), e.branch, e.prev,
          e.sig, e.hash, subject_of(e)) for e in events])
    Projection().rebuild(conn)
    conn.execute("COMMIT")
    return conn


def _vv_key(conn: sqlite3.Connection, branch: str) -> tuple[tuple[str, int], ...]:
    heads = conn.execute("SELECT origin, seq FROM sync_heads WHERE branch = ? ORDER BY origin", (branch,)).fetchall()
    top = conn.execute("SELECT max(seq) FROM outbox WHERE branch_id = ?", (branch,)).fetchone()[0] or 0
    return (*((r[0], r[1]) for r in heads), (outbox.hq_origin(branch), top))


def branch_state(conn: sqlite3.Connection, branch: str, *, database: str = "") -> dict[str, Any]:
    """{branch, state_hash, events, vv}: the branch's state as its nodes compute it from the same
    events. `database` names the store in the cache key (several HQs in one test process)."""
    key = _vv_key(conn, branch)
    with _lock:
        hit = _cache.get((database, branch))
    if hit is not None and hit[0] == key:
        return hit[1]
    events = branch_events(conn, branch)
    folded = fold_events(events)
    try:
        out = {"branch": branch, "state_hash": state_hash(folded), "events": len(events), "vv": dict(key)}
    finally:
        folded.close()
    with _lock:
        if len(_cache) >= CACHE_BRANCHES:
            _cache.pop(next(iter(_cache)))
        _cache[(database, branch)] = (key, out)
    return out


def ticket_fields(events: list[Event]) -> dict[str, Any] | None:
    """HQ's ticket row columns from the branch fold of one ticket's events (None: no issue yet).

    Status, counter, service and times are the fold's: the winning claim's counter and times, a
    transfer's service, a completion that stays completed; `effective_ms` is the node's queue order."""
    state = fold.refold(events)
    if state is None:
        return None
    won = fold.winner(state)
    status = fold.status(state, won)
    claim: dict[str, Any] = won[1] if won else {}
    finished = claim.get("finished_ms")
    return {
        "service": state["service"], "label": state["label"], "priority": state["priority"],
        "issued_ms": state["issued_ms"], "effective_ms": state["effective_ms"],
        "counter": won[0] if won else None,
        "called_ms": claim.get("called_ms"), "started_ms": claim.get("started_ms"),
        "completed_ms": finished if status == "completed" else None,
        "no_show_ms": finished if status == "no_show" else None,
        # A ticket moved to another branch (ticket.moved) left this branch's line: HQ's row
        # records it as cancelled here (its new place is a booking at the other branch).
        "cancelled_ms": _cancelled_ms(events) if status in ("cancelled", "moved") else None,
        "status": status,
    }


def _cancelled_ms(events: list[Event]) -> int | None:
    from sync.hlc import physical_ms
    times = [physical_ms(e.hlc) for e in events if e.type in fold.CLOSERS]
    return min(times) if times else None
