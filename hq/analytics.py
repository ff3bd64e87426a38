"""Analytics per branch, service, day and hour from the ingested ticket projection.

Times are from the events' HLC (ms = hlc >> 16), bucketed by the hour of issue in the branch's
timezone. wait = called - issued; service time = completed - started; no-show rate = no-shows /
tickets called; abandonment = tickets cancelled before any call / tickets issued.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def compute(conn: sqlite3.Connection, branch_id: str, tz: str, day_from: str, day_to: str,
            service: str | None = None) -> list[dict[str, Any]]:
    """Rows {service, day, hour, tickets, wait_mean_s, wait_p90_s, service_mean_s, no_show_rate, abandonment_rate}."""
    zone = ZoneInfo(tz)
    sql = "SELECT * FROM tickets WHERE branch_id = ? AND day >= ? AND day <= ? AND issued_ms IS NOT NULL"
    args: list[Any] = [branch_id, day_from.replace("-", ""), day_to.replace("-", "")]
    if service:
        sql += " AND service = ?"
        args.append(service)
    groups: dict[tuple[str, str, int], list[sqlite3.Row]] = {}
    for t in conn.execute(sql, args):
        local = datetime.fromtimestamp(t["issued_ms"] / 1000, zone)
        groups.setdefault((t["service"] or "", local.date().isoformat(), local.hour), []).append(t)
    out = []
    for (svc, day, hour), rows in sorted(groups.items()):
        waits = [(t["called_ms"] - t["issued_ms"]) / 1000 for t in rows if t["called_ms"] and t["called_ms"] >= t["issued_ms"]]
        serves = [(t["completed_ms"] - t["started_ms"]) / 1000 for t in rows
                  if t["completed_ms"] and t["started_ms"] and t["completed_ms"] >= t["started_ms"]]
        called = [t for t in rows if t["called_ms"]]
        no_shows = [t for t in called if t["no_show_ms"] and not t["completed_ms"]]
        abandoned = [t for t in rows if t["cancelled_ms"] and not t["called_ms"]]
        out.append({"service": svc, "day": day, "hour": hour, "tickets": len(rows),
                    "wait_mean_s": _r(_mean(waits)), "wait_p90_s": _r(_p90(waits)),
                    "service_mean_s": _r(_mean(serves)),
                    "no_show_rate": round(len(no_shows) / len(called), 4) if called else None,
                    "abandonment_rate": round(len(abandoned) / len(rows), 4)})
    return out
