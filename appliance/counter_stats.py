"""Per-counter figures of the day the counter screen shows (``served_today`` in /state)."""

from __future__ import annotations

import sqlite3


def served_today(conn: sqlite3.Connection, day: str) -> dict[str, int]:
    """{counter id: tickets it completed on business day ``day``}: one grouped count, read
    for the full /state only (the stream's per-event counter view leaves it out; the screen
    counts the completions it sees between two /state reads)."""
    return {str(counter): int(n) for counter, n in conn.execute(
        "SELECT counter, count(*) FROM tickets WHERE status = 'completed' AND day = ? AND counter IS NOT NULL"
        " GROUP BY counter", (day,))}
