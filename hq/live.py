"""Live status from what branches pushed: a ticket's place in its queue and an estimated wait.

The HQ view lags the branch by the link's delay; it is an estimate for people on their way,
the branch's own API stays the authority.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16), made by the issuing node


def valid_token(value: Any) -> str | None:
    """A ticket's status token as the branch sent it, or None when absent or ill-formed."""
    return value if isinstance(value, str) and TOKEN_RE.match(value) else None


def ticket_by_token(conn: sqlite3.Connection, token: str) -> tuple[str, str] | None:
    """(branch id, ticket id) of the ticket with this status token; the only public way in."""
    if not TOKEN_RE.match(token):
        return None
    row = conn.execute("SELECT branch_id, id FROM tickets WHERE status_token = ? AND issued_ms IS NOT NULL"
                       " ORDER BY issued_ms LIMIT 1", (token,)).fetchone()
    return (row[0], row[1]) if row else None

WAITING_SQL = ("SELECT * FROM tickets WHERE branch_id = ? AND day = ? AND issued_ms IS NOT NULL AND called_ms IS NULL"
               " AND started_ms IS NULL AND completed_ms IS NULL AND no_show_ms IS NULL AND cancelled_ms IS NULL")


def status_of(t: sqlite3.Row | dict[str, Any]) -> str:
    if t["completed_ms"]:
        return "completed"
    if t["no_show_ms"]:
        return "no_show"
    if t["started_ms"]:
        return "serving"
    if t["called_ms"]:
        return "called"
    if t["cancelled_ms"]:
        return "cancelled"
    return "waiting"


def waiting_in_order(conn: sqlite3.Connection, branch_id: str, day: str) -> list[dict[str, Any]]:
    """Waiting tickets of the day with their 1-based position within their service's queue."""
    rows = [dict(r) for r in conn.execute(WAITING_SQL, (branch_id, day))]
    # The branch's call order (appliance.queries): priority class, then effective time, then id.
    rows.sort(key=lambda r: (r["service"] or "", -(r["priority"] or 0),
                             r["effective_ms"] if r["effective_ms"] is not None else r["issued_ms"], r["id"]))
    pos: dict[str, int] = {}
    for r in rows:
        pos[r["service"] or ""] = pos.get(r["service"] or "", 0) + 1
        r["position"] = pos[r["service"] or ""]
    return rows


WAITING_WHERE = ("issued_ms IS NOT NULL AND called_ms IS NULL AND started_ms IS NULL AND completed_ms IS NULL"
                 " AND no_show_ms IS NULL AND cancelled_ms IS NULL")  # the partial index tickets_waiting's


def front_of_queues(conn: sqlite3.Connection, branch_id: str, day: str, places: int) -> list[dict[str, Any]]:
    """The first ``places`` waiting tickets of each service's queue, numbered as
    :func:`waiting_in_order` numbers them. The ingest asks this once per push: each query reads
    a few entries of the partial index ``tickets_waiting`` (migration 25), in the call order, so
    the day's whole waiting line (thousands of rows on a busy day) is never built for it."""
    services = [r[0] for r in conn.execute(
        f"SELECT DISTINCT service FROM tickets WHERE branch_id = ? AND day = ? AND {WAITING_WHERE}", (branch_id, day))]
    out = []
    for service in sorted(services, key=lambda s: s or ""):
        match, args = ("service IS NULL", (branch_id, day)) if service is None else ("service = ?", (branch_id, day, service))
        rows = conn.execute(f"SELECT * FROM tickets WHERE branch_id = ? AND day = ? AND {match} AND {WAITING_WHERE}"
                            " ORDER BY priority DESC, COALESCE(effective_ms, issued_ms), id LIMIT ?", (*args, places))
        out += [dict(r) | {"position": i} for i, r in enumerate(rows, 1)]
    return out


def mean_service_s(conn: sqlite3.Connection, branch_id: str, service: str | None, default_s: int) -> float:
    row = conn.execute("SELECT AVG(completed_ms - started_ms) / 1000.0, COUNT(*) FROM (SELECT completed_ms, started_ms"
                       " FROM tickets WHERE branch_id = ? AND service IS NOT DISTINCT FROM ? AND completed_ms IS NOT NULL"
                       " AND started_ms IS NOT NULL ORDER BY completed_ms DESC LIMIT 50) AS recent", (branch_id, service)).fetchone()
    return float(row[0]) if row and row[1] else float(default_s)


def counters_for(conn: sqlite3.Connection, branch_id: str, service: str | None) -> int:
    n = sum(1 for r in conn.execute("SELECT services FROM counters WHERE branch_id = ?", (branch_id,))
            if service in json.loads(r[0]))
    return max(1, n)


def ticket_status(conn: sqlite3.Connection, branch_id: str, ticket_id: str, default_s: int) -> dict[str, Any] | None:
    t = conn.execute("SELECT * FROM tickets WHERE branch_id = ? AND id = ?", (branch_id, ticket_id)).fetchone()
    if t is None or t["issued_ms"] is None:
        return None
    status = status_of(t)
    out: dict[str, Any] = {"branch": branch_id, "ticket": t["id"], "label": t["label"], "service": t["service"],
                           "status": status, "position": None, "people_ahead": None, "estimated_wait_s": None,
                           "counter": t["counter"]}
    if status == "waiting":
        for w in waiting_in_order(conn, branch_id, t["day"]):
            if w["id"] == t["id"]:
                ahead = w["position"] - 1
                per = mean_service_s(conn, branch_id, t["service"], default_s)
                out.update(position=w["position"], people_ahead=ahead,
                           estimated_wait_s=int(round(ahead * per / counters_for(conn, branch_id, t["service"]))))
                break
    return out


def branch_summary(conn: sqlite3.Connection, branch_id: str, day: str, default_s: int) -> dict[str, Any]:
    waiting = waiting_in_order(conn, branch_id, day)
    services: dict[str, dict[str, Any]] = {}
    for w in waiting:
        s = services.setdefault(w["service"] or "", {"service": w["service"], "waiting": 0})
        s["waiting"] += 1
    for s in services.values():
        per = mean_service_s(conn, branch_id, s["service"], default_s)
        s["estimated_wait_s"] = int(round(s["waiting"] * per / counters_for(conn, branch_id, s["service"])))
    return {"branch": branch_id, "day": day, "services": sorted(services.values(), key=lambda s: s["service"] or "")}
