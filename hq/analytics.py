"""The analytics API's rows per service, day and hour of one branch (GET /branches/{b}/analytics).

Read from the hour roll-up kept as events arrive (hq/aggregates.py), as the console's pages
are, never from the tickets: the figures are the pages' (docs/console.md "What each figure
means"), days and hours the branch's local ones at each ticket's issue. The wait percentiles
come from the wait histogram (within half a bucket of the order statistic); "within target"
is against each service's own target wait (or the HQ-wide one).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from hq import aggregates as ag


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def figures(m: dict[str, int], target_s: int) -> dict[str, Any]:
    """One row's figures from its summed measures."""
    hist = [m[h] for h in ag.HIST]

    def ratio(a: float, b: int) -> float | None:
        return round(a / b, 4) if b else None
    booked = m["bookings"] + m["booking_missed"]
    return {
        "tickets": m["tickets"], "walkins": m["walkins"], "bookings": booked, "called": m["called"],
        "served": m["served"], "waits": m["wait_n"],
        "wait_mean_s": _r(m["wait_ms"] / m["wait_n"] / 1000 if m["wait_n"] else None),
        "wait_p50_s": _r(ag.percentile(hist, 0.5)), "wait_p90_s": _r(ag.percentile(hist, 0.9)),
        "service_mean_s": _r(m["service_ms"] / m["service_n"] / 1000 if m["service_n"] else None),
        # no-shows among the tickets called (walk-ins and checked-in bookings)
        "no_show_rate": ratio(m["no_show_walkin"] + m["no_show_booking"], m["called"]),
        "no_show_walkin_rate": ratio(m["no_show_walkin"], m["walkins"]),
        "no_show_booking_rate": ratio(m["no_show_booking"] + m["booking_missed"], booked),
        "abandonment_rate": ratio(m["abandoned"], m["tickets"]),
        "target_wait_s": target_s,
        "within_target_rate": ratio(ag.within(hist, target_s), m["wait_n"]),
    }


def compute(conn: sqlite3.Connection, branch_id: str, day_from: str, day_to: str, service: str | None = None,
            default_target_s: int = 900) -> list[dict[str, Any]]:
    """Rows {service, day, hour, figures...} of the branch's local days ``day_from``..``day_to``
    (ISO dates), in service, day, hour order; hours without tickets or waits are left out."""
    targets = {r[0]: int(r[1]) * 60 for r in conn.execute(
        "SELECT id, target_wait_minutes FROM services WHERE branch_id = ? AND target_wait_minutes IS NOT NULL",
        (branch_id,))}
    sql = (f"SELECT service, day, hour, {', '.join(ag.MEASURES)} FROM analytics_hours"
           f" WHERE branch_id = ? AND day >= ? AND day <= ?")
    args: list[Any] = [branch_id, day_from, day_to]
    if service:
        sql += " AND service = ?"
        args.append(service)
    out = []
    for r in conn.execute(sql + " ORDER BY service, day, hour", args):
        m = dict(zip(ag.MEASURES, (int(v or 0) for v in list(r)[3:])))
        if not (m["tickets"] or m["wait_n"]):
            continue
        out.append({"service": r[0], "day": r[1], "hour": r[2],
                    **figures(m, targets.get(r[0], default_target_s))})
    return out
