"""HQ console's analytics pages (issue 10) for an organization of 50 branches and 5 million tickets.

The year of tickets (50 branches in five time zones, Monday to Saturday 08:00-18:00 local,
four services, six staff members each) is generated in this process and put through HQ's own
aggregation function (hq.aggregates.contribution, the one ingest calls for every ticket),
summed in memory and written as the aggregate rows in bulk (the organization's days and the
running totals then filled from them, as migration 31 does). The 5 million raw ticket rows and
their events are not written: no page reads them, and the aggregate rows are exactly what
ingesting them one by one would leave (tests/hq/web/test_console_analytics.py proves that
equality on a smaller dataset through the real ingest). Then a real HQ process (`python -m hq`)
serves the pages and one client times sequential GETs of each page as an org's admin would.

    .venv/bin/python -m bench.bench_analytics [--branches 50] [--tickets 5000000] [--requests 100]
        [--year-requests 20] [--data DIR]   # DIR: generate once, then reuse
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bench.common import latency_summary, write

ZONES = ("Africa/Kigali", "Europe/Madrid", "Europe/Zurich", "America/New_York", "Asia/Kolkata")
SERVICES = (("general", 0.45), ("permits", 0.25), ("payments", 0.2), ("records", 0.1))
HOURS = range(8, 18)
DAYS = 365
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "uplink")]  # linktest: HQProcess (python -m hq), the bootstrap admin


def generate(db: Path, branches: int, tickets: int, seed: int) -> dict[str, Any]:
    """Fill an HQ database (migrated) with one organization and the aggregates of `tickets`."""
    from hq import aggregates as ag

    rng = random.Random(seed)
    last = date.today() - timedelta(days=1)
    days = [last - timedelta(days=i) for i in range(DAYS)]
    days = [d for d in days if d.weekday() < 6]
    per_hour = tickets / (branches * len(days) * len(HOURS))
    idx = {m: i for i, m in enumerate(ag.MEASURES)}
    hours: dict[tuple[Any, ...], list[int]] = {}
    staff_rows: dict[tuple[Any, ...], list[int]] = {}
    names = [s for s, _ in SERVICES]
    weights = [w for _, w in SERVICES]
    made = 0
    started = time.perf_counter()
    for b in range(branches):
        branch = f"b{b:02d}"
        tz = ZoneInfo(ZONES[b % len(ZONES)])
        busy = rng.uniform(0.6, 1.4)  # some offices are busier than others
        for d in days:
            for h in HOURS:
                base = datetime(d.year, d.month, d.day, h, tzinfo=tz).timestamp()
                peak = 1.5 if h in (9, 10, 14) else 1.0
                n = max(0, round(rng.gauss(per_hour * busy * peak / 1.12, 4)))
                for _ in range(n):
                    issued = int((base + rng.random() * 3600) * 1000)
                    service = rng.choices(names, weights)[0]
                    t: dict[str, Any] = {"issued_ms": issued, "service": service,
                                         "booking_code": "B" if rng.random() < 0.25 else None,
                                         "counter": None, "est_p50": None}
                    fate = rng.random()
                    if fate < 0.06:
                        t["cancelled_ms"] = issued + 600_000
                    else:
                        wait = int(rng.expovariate(1 / (420 * peak * busy)) * 1000)
                        t["called_ms"] = issued + wait
                        t["counter"] = f"c{rng.randint(1, 4)}"
                        est = int(wait / 1000 * rng.uniform(0.6, 1.4))
                        t["est_p50"], t["est_p10"], t["est_p90"] = est, int(est * 0.6), int(est * 1.5)
                        if fate < 0.14:
                            t["no_show_ms"] = t["called_ms"] + 120_000
                        else:
                            t["started_ms"] = t["called_ms"] + 15_000
                            t["completed_ms"] = t["started_ms"] + int(rng.lognormvariate(5.6, 0.5) * 1000)
                    c = ag.contribution(t, tz, f"s{rng.randint(1, 6)}")
                    assert c is not None
                    service_, day, hour, weekday = c["k"]
                    row = hours.setdefault((branch, service_, day, hour, weekday), [0] * len(ag.MEASURES))
                    for k, v in c["m"].items():
                        row[idx[k]] += v
                    if c["s"] is not None:
                        row = staff_rows.setdefault((branch, c["s"], service_, day, hour), [0] * len(ag.MEASURES))
                        for k, v in c["m"].items():
                            row[idx[k]] += v
                    made += 1
    generated_s = time.perf_counter() - started
    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO orgs (id, name) VALUES ('bench', 'Bench Org')")
    for b in range(branches):
        conn.execute("INSERT INTO branches (id, org_id, name, timezone) VALUES (?, 'bench', ?, ?)",
                     (f"b{b:02d}", f"Office {b:02d}", ZONES[b % len(ZONES)]))
        for s, _ in SERVICES:
            conn.execute("INSERT INTO services (branch_id, id, letter, names) VALUES (?, ?, ?, ?)",
                         (f"b{b:02d}", s, s[0].upper(), f'{{"en": "{s.title()}"}}'))
    cols = ", ".join(ag.MEASURES)
    marks = ", ".join("?" * len(ag.MEASURES))
    conn.executemany(f"INSERT INTO analytics_hours (branch_id, service, day, hour, weekday, {cols})"
                     f" VALUES (?, ?, ?, ?, ?, {marks})", ((*k, *v) for k, v in hours.items()))
    daily: dict[tuple[Any, ...], list[int]] = {}
    for (branch, service, day, _hour, weekday), v in hours.items():
        row = daily.setdefault((branch, service, day, weekday), [0] * len(ag.MEASURES))
        for i, x in enumerate(v):
            row[i] += x
    conn.executemany(f"INSERT INTO analytics_days (branch_id, service, day, weekday, {cols})"
                     f" VALUES (?, ?, ?, ?, {marks})", ((*k, *v) for k, v in daily.items()))
    conn.executemany(f"INSERT INTO analytics_staff (branch_id, staff, service, day, hour, {cols})"
                     f" VALUES (?, ?, ?, ?, ?, {marks})", ((*k, *v) for k, v in staff_rows.items()))
    # the organization's days and the running totals, from those rows as migration 31 fills them
    # (tests/hq/web/test_console_analytics.py: equal to what ingest keeps push by push)
    ag.backfill_org_days(conn)
    running = ag.build_running(conn)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return {"tickets": made, "branches": branches, "days": len(days), "hour_rows": len(hours), "day_rows": len(daily),
            "staff_rows": len(staff_rows), "running_rows": running, "generate_s": round(generated_s, 1),
            "first_day": min(days).isoformat(), "last_day": max(days).isoformat()}


def facts(db: Path) -> dict[str, Any]:
    """What a kept dataset holds (``--data``): tickets, branches, days, rows."""
    conn = sqlite3.connect(db)
    try:
        tickets, first, last = conn.execute("SELECT SUM(tickets), MIN(day), MAX(day) FROM analytics_days").fetchone()
        return {"tickets": tickets, "first_day": first, "last_day": last,
                "branches": conn.execute("SELECT COUNT(*) FROM branches WHERE org_id = 'bench'").fetchone()[0],
                "days": conn.execute("SELECT COUNT(DISTINCT day) FROM analytics_days").fetchone()[0],
                "hour_rows": conn.execute("SELECT COUNT(*) FROM analytics_hours").fetchone()[0],
                "day_rows": conn.execute("SELECT COUNT(*) FROM analytics_days").fetchone()[0],
                "staff_rows": conn.execute("SELECT COUNT(*) FROM analytics_staff").fetchone()[0],
                "running_rows": conn.execute("SELECT COUNT(*) FROM analytics_running").fetchone()[0],
                "org_day_rows": conn.execute("SELECT COUNT(*) FROM analytics_org_days").fetchone()[0]}
    finally:
        conn.close()


async def time_pages(url: str, email: str, password: str, pages: dict[str, tuple[str, int]],
                     done: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{url}/console/login") as r:
            await r.text()
        csrf = next(c.value for c in s.cookie_jar if c.key == "smartq_csrf")
        async with s.post(f"{url}/console/login", data={"email": email, "password": password, "csrf_token": csrf},
                          allow_redirects=False) as r:
            assert r.status == 303, await r.text()
        for name, (path, requests) in pages.items():
            samples, size = [], 0
            load = os.getloadavg()
            for i in range(requests + 2):
                t0 = time.perf_counter()
                async with s.get(url + path) as r:
                    body = await r.read()
                    assert r.status == 200, (path, r.status, body[:300])
                if i >= 2:  # the first requests warm the page cache and the templates
                    samples.append(time.perf_counter() - t0)
                size = len(body)
            out[name] = {"path": path, "bytes": size, **latency_summary(samples),
                         "loadavg": [round(x, 2) for x in load]}
            done(out)  # results so far, page by page
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--tickets", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=100, help="timed GETs per page (28-day pages)")
    parser.add_argument("--year-requests", type=int, default=20, help="timed GETs per page over the whole year")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, help="keep the generated HQ here and reuse it when it exists")
    args = parser.parse_args()
    from linktest import ADMIN, PASSWORD, HQProcess

    from hq.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        folder = args.data or Path(tmp)
        hq = HQProcess(folder / "hq")
        db = Settings(data_dir=str(folder / "hq" / "data")).database_path
        if db.exists():
            data = facts(db)
        else:
            hq.start()  # creates and migrates the database, and the bootstrap admin
            hq.stop()
            data = generate(db, args.branches, args.tickets, args.seed)
        hq.start()
        try:
            year = f"from={data['first_day']}&to={data['last_day']}"
            n, y = args.requests, args.year_requests
            pages = {
                "dashboard_28_days": ("/console/analytics?org=bench", n),
                "heatmap_28_days": ("/console/analytics/heatmap?org=bench", n),
                "bottlenecks_28_days": ("/console/analytics/bottlenecks?org=bench", n),
                "offices_28_days": ("/console/analytics/offices?org=bench", n),
                "dashboard_by_branch_28_days": ("/console/analytics?org=bench&by=branch", n),
                "estimates_last_day": (f"/console/analytics/estimates?org=bench&day={data['last_day']}", n),
                "dashboard_year": (f"/console/analytics?org=bench&by=day&{year}", y),
                "heatmap_year": (f"/console/analytics/heatmap?org=bench&{year}", y),
                "bottlenecks_year": (f"/console/analytics/bottlenecks?org=bench&{year}", y),
            }

            def done(timings: dict[str, Any]) -> None:
                write("analytics", {"data": data, "pages": timings})
            asyncio.run(time_pages(hq.url, ADMIN, PASSWORD, pages, done))
        finally:
            hq.stop()


if __name__ == "__main__":
    main()
