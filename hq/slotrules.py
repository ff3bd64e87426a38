"""Calendar rules at HQ: blocked slots, blocked days and the capacity of one date, per branch and
service (the console's calendar, hq/console/calendar.py). Online booking reads them through
hq/booking.py: a blocked slot is not offered and cannot be booked or moved into; a date's
capacity replaces the service's for that date. Existing bookings are never changed here."""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

WHOLE_DAY = 0  # slot_start of a block that covers the whole day


def blocks_between(conn: sqlite3.Connection, branch_id: str, service_id: str, first: date,
                   last: date) -> dict[str, dict[int, str]]:
    """{day ISO: {slot_start (0 = whole day): reason}} of the days first..last."""
    out: dict[str, dict[int, str]] = {}
    for day, start, reason in conn.execute(
            "SELECT day, slot_start, reason FROM slot_blocks WHERE branch_id = ? AND service_id = ? AND day >= ?"
            " AND day <= ?", (branch_id, service_id, first.isoformat(), last.isoformat())):
        out.setdefault(day, {})[start] = reason
    return out


def capacities_between(conn: sqlite3.Connection, branch_id: str, service_id: str, first: date,
                       last: date) -> dict[str, int]:
    """{day ISO: capacity} of the dates first..last that have their own capacity."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT day, capacity FROM slot_capacity WHERE branch_id = ? AND service_id = ? AND day >= ? AND day <= ?",
        (branch_id, service_id, first.isoformat(), last.isoformat()))}


def blocked_on(conn: sqlite3.Connection, branch_id: str, service_id: str, day: date) -> set[int]:
    return set(blocks_between(conn, branch_id, service_id, day, day).get(day.isoformat(), {}))


def capacity_on(conn: sqlite3.Connection, branch_id: str, service: sqlite3.Row | dict[str, Any], day: date) -> int:
    row = conn.execute("SELECT capacity FROM slot_capacity WHERE branch_id = ? AND service_id = ? AND day = ?",
                       (branch_id, service["id"], day.isoformat())).fetchone()
    return int(row[0]) if row else int(service["capacity"])


def block(conn: sqlite3.Connection, branch_id: str, service_id: str, day: date, starts: list[int], reason: str,
          now: int) -> int:
    """Block slots (``starts``; [WHOLE_DAY] blocks the day); returns how many were new."""
    n = 0
    for start in starts:
        n += conn.execute("INSERT INTO slot_blocks (branch_id, service_id, day, slot_start, reason, created_at)"
                          " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (branch_id, service_id, day, slot_start) DO NOTHING",
                          (branch_id, service_id, day.isoformat(), start, reason, now)).rowcount
    return n


def unblock(conn: sqlite3.Connection, branch_id: str, service_id: str, day: date, starts: list[int]) -> int:
    n = 0
    for start in starts:
        n += conn.execute("DELETE FROM slot_blocks WHERE branch_id = ? AND service_id = ? AND day = ? AND slot_start = ?",
                          (branch_id, service_id, day.isoformat(), start)).rowcount
    return n


def set_capacity(conn: sqlite3.Connection, branch_id: str, service_id: str, day: date, capacity: int | None) -> None:
    """The capacity of every slot of ``day``; None goes back to the service's capacity."""
    if capacity is None:
        conn.execute("DELETE FROM slot_capacity WHERE branch_id = ? AND service_id = ? AND day = ?",
                     (branch_id, service_id, day.isoformat()))
        return
    conn.execute("INSERT INTO slot_capacity (branch_id, service_id, day, capacity) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (branch_id, service_id, day) DO UPDATE SET capacity = excluded.capacity",
                 (branch_id, service_id, day.isoformat(), capacity))
