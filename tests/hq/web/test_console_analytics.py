"""The console's analytics equal an independent computation from the raw tickets.

A generated dataset of two offices (Europe/Madrid and Africa/Kigali) over eleven days that cross
midnight and the end of summer time in Madrid (Sunday 2030-10-27, 03:00 -> 02:00) is signed by
branch devices and fed through HQ's real ingest, out of order and twice; the test computes
every figure again from its own list of tickets in plain Python and compares it with the
pages' CSV exports, over periods that start and end inside the data (the running totals'
end-minus-start) and over the whole of it. Role and tenant checks, and bad filters answered
with a 400 form."""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from hq.console import analytics as console_analytics
from hq.ingest import ingest_branch_events
from hq.web import HQ_KEY
from hqtest import PASSWORD, api
from webtest import V, Browser, Device, db

from test_console import console  # noqa: F401  (the logged-in browsers fixture)

TARGET_S = 900
ZONES = {"acme-main": "Europe/Madrid", "acme-east": "Africa/Kigali"}
START = datetime(2030, 10, 18, 4, 0, tzinfo=timezone.utc).timestamp()
END = datetime(2030, 10, 28, 18, 0, tzinfo=timezone.utc).timestamp()
NOW = datetime(2030, 10, 28, 20, 0, tzinfo=timezone.utc).timestamp()

# The wait buckets, written out again here (minutes): 1..30, 35..60 by 5, 70..120 by 10, 150, 180, 240.
EDGES = [60 * m for m in [*range(1, 31), *range(35, 61, 5), *range(70, 121, 10), 150, 180, 240]]


def expected_quantile(waits_s: list[float], p: float) -> float | None:
    """The documented approximation: the bucket holding the rank, linear inside it."""
    if not waits_s:
        return None
    counts = [0] * (len(EDGES) + 1)
    for w in waits_s:
        i = next((k for k, e in enumerate(EDGES) if w <= e), len(EDGES))
        counts[i] += 1
    rank, seen = p * len(waits_s), 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            lo = EDGES[i - 1] if i else 0
            if i == len(EDGES):
                return float(lo)
            return lo + (EDGES[i] - lo) * (rank - seen) / c
        seen += c
    raise AssertionError


def generate(rng: random.Random) -> list[dict]:
    """The raw tickets: who came when, to which office and service, what happened to them."""
    tickets: list[dict] = []
    numbers: dict[tuple[str, str], int] = defaultdict(int)
    t = START
    while t < END:
        t += rng.expovariate(1 / 420)
        branch = "acme-main" if rng.random() < 0.7 else "acme-east"
        tz = ZoneInfo(ZONES[branch])
        local = datetime.fromtimestamp(t, tz)
        day = local.strftime("%Y%m%d")
        service = "general" if rng.random() < 0.6 else "permits"
        numbers[(branch, day)] += 1
        n = numbers[(branch, day)]
        fate = rng.choices(["served", "no_show", "abandoned", "waiting"], [70, 12, 10, 8])[0]
        wait = rng.choice([rng.uniform(0, 1800), rng.expovariate(1 / 900), rng.uniform(3000, 16000)]
                          if rng.random() < 0.1 else [rng.expovariate(1 / 600)])
        est = {"p50": rng.randint(0, 2400)}
        if rng.random() < 0.6:
            est |= {"p10": max(est["p50"] - rng.randint(0, 600), 0), "p90": est["p50"] + rng.randint(0, 900)}
        x = {"branch": branch, "tz": tz, "id": f"{day}-{'A' if service == 'general' else 'P'}{n:03d}", "day": day,
             "n": n, "service": service, "issued": int(t), "booking": f"BK{len(tickets):05d}" if rng.random() < 0.3 else None,
             "fate": fate, "est": est, "counter": rng.choice(["c1", "c2"])}
        if fate in ("served", "no_show"):
            # at least a second: a call in the issue's own instant, from another device, does not
            # fold as after the issue
            x["called"] = x["issued"] + max(int(wait), 1)
        if fate == "served":
            x["started"] = x["called"] + 20
            x["completed"] = x["started"] + rng.randint(60, 1500)
        if fate == "no_show":
            x["no_show"] = x["called"] + 120
        if fate == "abandoned":
            x["cancelled"] = x["issued"] + int(wait)
        tickets.append(x)
    return tickets


# Who works where: counter -> [(from, staff)], the staff member at each call is the last before it.
SHIFTS = {"c1": [(START - 3600, "ana"), (datetime(2030, 10, 26, 12, tzinfo=timezone.utc).timestamp(), "ben")],
          "c2": [(START - 3600, "carla")]}


def staff_at(counter: str, at: float) -> str:
    return [s for since, s in SHIFTS[counter] if since <= at][-1]


def events_for(tickets: list[dict], devices: dict[str, Device]) -> dict[str, list[dict]]:
    """Each device's events in its own chain order (HLC = the time the thing happened)."""
    per: dict[str, list[tuple[float, str, dict]]] = defaultdict(list)
    for branch in ZONES:
        for counter, shifts in SHIFTS.items():
            for since, staff in shifts:
                per[f"{branch}/{counter}"].append((since, "counter.opened", {"counter": counter, "staff": staff}))
    for x in tickets:
        issue = {"ticket": x["id"], "service": x["service"], "number": x["n"], "label": x["id"].split("-")[1],
                 "day": x["day"], "priority": 0, "language": "en", "estimate": x["est"]}
        if x["booking"]:
            issue["booking"] = x["booking"]
        per[f"{x['branch']}/kiosk"].append((x["issued"], "ticket.issued", issue))
        if "cancelled" in x:
            per[f"{x['branch']}/kiosk"].append((x["cancelled"], "ticket.cancelled", {"ticket": x["id"]}))
        dev = f"{x['branch']}/{x['counter']}"
        for kind in ("called", "started", "completed", "no_show"):
            if kind in x:
                per[dev].append((x[kind], f"ticket.{kind}", {"ticket": x["id"], "counter": x["counter"]}))
    out = {}
    for key, items in per.items():
        items.sort(key=lambda e: e[0])
        out[key] = [devices[key].event(kind, payload, at) for at, kind, payload in items]
    return out


def expected(tickets: list[dict], key, target=lambda x: TARGET_S) -> dict:
    """Figures per key(ticket) computed from the raw tickets; target(ticket): its service's target wait."""
    groups: dict = defaultdict(list)
    for x in tickets:
        k = key(x)
        if k is not None:
            groups[k].append(x)
    out = {}
    for k, xs in groups.items():
        waits = [x["called"] - x["issued"] for x in xs if "called" in x]
        within = [x for x in xs if "called" in x and x["called"] - x["issued"] <= target(x)]
        walk = [x for x in xs if not x["booking"]]
        book = [x for x in xs if x["booking"]]
        serve = [x["completed"] - x["started"] for x in xs if "completed" in x]
        out[k] = {
            "tickets": len(xs), "walkins": len(walk), "bookings": len(book),
            "no_show_walkin": round(sum(1 for x in walk if "no_show" in x) / len(walk), 4) if walk else "",
            "no_show_booking": round(sum(1 for x in book if "no_show" in x) / len(book), 4) if book else "",
            "wait_mean": round(sum(waits) / len(waits), 1) if waits else "",
            "wait_p50": round(expected_quantile(waits, 0.5), 1) if waits else "",
            "wait_p90": round(expected_quantile(waits, 0.9), 1) if waits else "",
            "service_mean": round(sum(serve) / len(serve), 1) if serve else "",
            "abandonment": round(sum(1 for x in xs if x["fate"] == "abandoned") / len(xs), 4),
            "within_target": round(len(within) / len(waits), 4) if waits else "",
            "waits": len(waits),
        }
    return out


def local(x: dict) -> datetime:
    return datetime.fromtimestamp(x["issued"], x["tz"])


def parse_csv(body: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))


def number(v: str):
    if v == "":
        return ""
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else f


@pytest.fixture()
async def dataset(console, session):  # noqa: F811
    return await load(console, session)


async def load(console, session, ingest=ingest_branch_events):
    """Two offices of acme, their devices, the generated tickets ingested out of order and twice."""
    hq = console.app[HQ_KEY]
    sup = console.h("super")
    await api(session, "PATCH", f"{console.url}{V}/branches/acme-main", 200, headers=sup, json={"timezone": "Europe/Madrid"})
    await api(session, "POST", f"{console.url}{V}/orgs/acme/branches", 201, headers=sup,
              json={"id": "acme-east", "name": "Acme East", "timezone": "Africa/Kigali", "languages": ["en"]})
    for branch in ZONES:
        for sid, letter in (("general", "A"), ("permits", "P")):
            await api(session, "PUT", f"{console.url}{V}/branches/{branch}/services/{sid}", 200, headers=sup,
                      json={"letter": letter, "names": {"en": sid.title()}, "slot_minutes": 15, "capacity": 3})
        await api(session, "PUT", f"{console.url}{V}/branches/{branch}/staff/ana", 200, headers=sup, json={"name": "Ana"})
    devices = {}
    for branch in ZONES:
        for name, role in (("kiosk", "kiosk"), ("c1", "counter"), ("c2", "counter")):
            d = Device(f"{branch}-{name}", branch)
            await d.register(console, session, role)
            devices[f"{branch}/{name}"] = d
    tickets = generate(random.Random(20301027))
    chains = events_for(tickets, devices)
    console.clock.t = NOW
    # Counters' chains first (calls before the issues they are about), the kiosks' in three
    # parts, and everything a second time: each event is stored and counted once.
    order = sorted(chains, key=lambda k: ("kiosk" in k, k))
    for key in order:
        chain = chains[key]
        for lo in range(0, len(chain), max(1, len(chain) // 3 + 1)):
            r = await ingest(hq, chain[lo:lo + len(chain) // 3 + 1], branch=key.split("/")[0])
            assert not r.rejected and not r.held, r.as_json()
    with db(console) as c:
        before = [tuple(r) for r in c.execute("SELECT * FROM analytics_hours ORDER BY branch_id, service, day, hour")]
    for key in order:
        r = await ingest(hq, chains[key], branch=key.split("/")[0])
        assert r.accepted == 0 and r.duplicates == len(chains[key])
    with db(console) as c:
        after = [tuple(r) for r in c.execute("SELECT * FROM analytics_hours ORDER BY branch_id, service, day, hour")]
    assert after == before
    # rebuilding every contribution from the ticket rows (what a migration does) changes nothing,
    # and the running totals built in one pass from the hour rows (migration 30's back-fill)
    # equal those kept push by push
    from hq.aggregates import backfill_org_days, build_running, rebuild
    tables = ("analytics_hours", "analytics_days", "analytics_staff", "analytics_org_days", "analytics_running")
    key_len = {"analytics_staff": 5, "analytics_running": 5}

    def nonzero(t, rows):
        return sorted(r for r in rows if any(r[key_len.get(t, 4) + (0 if t == "analytics_staff" else 1):]))
    with db(console) as c:
        kept = {t: nonzero(t, [tuple(r) for r in c.execute(f"SELECT * FROM {t}")]) for t in tables}
        spans = sorted(tuple(r) for r in c.execute("SELECT * FROM analytics_running_span"))
        assert kept["analytics_running"] and kept["analytics_org_days"]
        rebuild(c)
        c.commit()
        again = {t: nonzero(t, [tuple(r) for r in c.execute(f"SELECT * FROM {t}")]) for t in tables}
        assert sorted(tuple(r) for r in c.execute("SELECT * FROM analytics_running_span")) == spans
        for t in ("analytics_running", "analytics_running_span", "analytics_org_days"):
            c.execute(f"DELETE FROM {t}")
        build_running(c)
        backfill_org_days(c)
        c.commit()
        filled = {t: nonzero(t, [tuple(r) for r in c.execute(f"SELECT * FROM {t}")]) for t in tables}
        assert sorted(tuple(r) for r in c.execute("SELECT * FROM analytics_running_span")) == spans
    assert kept == again == filled
    return tickets


PERIOD = ("2030-10-25", "2030-10-28")  # the pages' period in most checks: four days inside the data


def in_period(x: dict, lo: str = PERIOD[0], hi: str = PERIOD[1]) -> bool:
    return lo <= local(x).date().isoformat() <= hi


def compare(rows: list[dict], want: dict, key) -> None:
    got = {key(r): {k: number(v) for k, v in r.items()} for r in rows}
    assert set(got) == set(want)
    for k, figures in want.items():
        for name, value in figures.items():
            assert got[k][name] == value, (k, name, got[k][name], value)


async def test_overview_per_day_hour_service_branch_and_staff_equal_the_raw_tickets(console, dataset, session):
    tickets = [x for x in dataset if in_period(x)]
    admin = await console.login("admin@acme.test")
    q = "from=2030-10-25&to=2030-10-28"
    # the DST day in Madrid has 25 hours: its 02:00 happened twice, and both are in 02:00
    days = {(x["branch"], local(x).date().isoformat()) for x in tickets}
    assert ("acme-main", "2030-10-27") in days and any(local(x).hour == 2 and local(x).date().isoformat() == "2030-10-27"
                                                       and local(x).utcoffset().total_seconds() == 3600 for x in tickets)
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=day&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: local(x).date().isoformat()), lambda r: r["day"])
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=hour&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: local(x).hour), lambda r: int(r["hour"]))
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=service&branch=acme-main&format=csv")
    compare(parse_csv(body), expected([x for x in tickets if x["branch"] == "acme-main"], lambda x: x["service"]),
            lambda r: r["service"])
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=branch&service=permits&format=csv")
    compare(parse_csv(body), expected([x for x in tickets if x["service"] == "permits"], lambda x: x["branch"]),
            lambda r: r["branch_id"])
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=staff&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: (x["branch"], staff_at(x["counter"], x["called"]))
                                      if "called" in x else None), lambda r: (r["branch_id"], r["staff"]))
    # one local day only: the midnight between the 27th and the 28th splits by local time
    _, body, _ = await admin.get("/console/analytics?from=2030-10-27&to=2030-10-27&by=hour&format=csv")
    compare(parse_csv(body), expected([x for x in tickets if local(x).date().isoformat() == "2030-10-27"],
                                      lambda x: local(x).hour), lambda r: int(r["hour"]))
    status, html, _ = await admin.get(f"/console/analytics?{q}&by=day")
    assert status == 200 and "<svg" in html and "<title id=" in html and 'id="analytics-table"' in html
    # hours of a period across two weeks of data (the running totals at its end minus before its
    # start), of one branch and of the whole organization
    mid = [x for x in dataset if in_period(x, "2030-10-20", "2030-10-26")]
    _, body, _ = await admin.get("/console/analytics?from=2030-10-20&to=2030-10-26&by=hour&format=csv")
    compare(parse_csv(body), expected(mid, lambda x: local(x).hour), lambda r: int(r["hour"]))
    _, body, _ = await admin.get("/console/analytics?from=2030-10-20&to=2030-10-26&by=hour&branch=acme-east&format=csv")
    compare(parse_csv(body), expected([x for x in mid if x["branch"] == "acme-east"], lambda x: local(x).hour),
            lambda r: int(r["hour"]))
    # the JSON API's rows (per service, day and hour of one office) carry the pages' figures
    token = (await api(session, "POST", f"{console.url}{V}/auth/tokens", 201,
                       json={"email": "root@hq.test", "password": PASSWORD}))["token"]  # the clock moved on
    for branch, service, day in (("acme-main", "general", "2030-10-27"), ("acme-east", "permits", "2030-10-21")):
        data = await api(session, "GET", f"{console.url}{V}/branches/{branch}/analytics?from={day}&to={day}"
                         f"&service={service}", 200, headers={"Authorization": f"Bearer {token}"})
        _, body, _ = await admin.get(f"/console/analytics?from={day}&to={day}&branch={branch}&service={service}"
                                     f"&by=hour&format=csv")
        page = {int(r["hour"]): r for r in parse_csv(body)}
        xs = [x for x in dataset if x["branch"] == branch and x["service"] == service
              and local(x).date().isoformat() == day]
        want = expected(xs, lambda x: local(x).hour)
        assert sorted(r["hour"] for r in data["rows"]) == sorted(page) == sorted(want) and want
        for r in data["rows"]:
            p, w = page[r["hour"]], want[r["hour"]]
            json_figures = (r["tickets"], r["walkins"], r["bookings"], r["waits"], r["wait_mean_s"], r["wait_p50_s"],
                            r["wait_p90_s"], r["service_mean_s"], r["abandonment_rate"], r["within_target_rate"],
                            r["no_show_walkin_rate"], r["no_show_booking_rate"])
            assert json_figures == tuple(number(p[k]) if p[k] != "" else None for k in (
                "tickets", "walkins", "bookings", "waits", "wait_mean", "wait_p50", "wait_p90", "service_mean",
                "abandonment", "within_target", "no_show_walkin", "no_show_booking"))
            assert json_figures == tuple(w[k] if w[k] != "" else None for k in (
                "tickets", "walkins", "bookings", "waits", "wait_mean", "wait_p50", "wait_p90", "service_mean",
                "abandonment", "within_target", "no_show_walkin", "no_show_booking"))
    # a long period (per office from the running totals) and the organization's days over it
    long = "from=2030-06-01&to=2030-12-31"
    _, body, _ = await admin.get(f"/console/analytics?{long}&by=branch&format=csv")
    compare(parse_csv(body), expected(dataset, lambda x: x["branch"]), lambda r: r["branch_id"])
    _, body, _ = await admin.get(f"/console/analytics?{long}&by=day&service=general&format=csv")
    compare(parse_csv(body), expected([x for x in dataset if x["service"] == "general"],
                                      lambda x: local(x).date().isoformat()), lambda r: r["day"])


async def test_heatmap_offices_bottlenecks_and_estimate_error_equal_the_raw_tickets(console, dataset, monkeypatch):
    tickets = [x for x in dataset if in_period(x)]
    manager = await console.login("manager@acme.test")  # acme-main only
    q = "from=2030-10-25&to=2030-10-28"
    main = [x for x in tickets if x["branch"] == "acme-main"]
    status, body, _ = await manager.get(f"/console/analytics/heatmap?{q}&format=csv")
    assert status == 200
    want = expected(main, lambda x: (local(x).weekday(), local(x).hour))
    rows = parse_csv(body)
    assert {(int(r["weekday"]), int(r["hour"])) for r in rows} == set(want)
    for r in rows:
        w = want[(int(r["weekday"]), int(r["hour"]))]
        assert (int(r["tickets"]), number(r["wait_mean_s"]), number(r["within_target"])) == \
            (w["tickets"], w["wait_mean"], w["within_target"])
        assert float(r["arrivals_per_day"]) == round(w["tickets"] / 1, 2)  # each weekday once in these four days
    _, body, _ = await manager.get(f"/console/analytics/offices?{q}&format=csv")
    compare(parse_csv(body), expected(main, lambda x: x["branch"]), lambda r: r["branch_id"])
    admin = await console.login("admin@acme.test")
    _, body, _ = await admin.get(f"/console/analytics/offices?{q}&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: x["branch"]), lambda r: r["branch_id"])
    # bottlenecks: weekday hours with at least 5 waits where under 80 % were called within 15 min
    _, body, _ = await admin.get(f"/console/analytics/bottlenecks?{q}&share=80&format=csv")
    cells = expected(tickets, lambda x: (x["branch"], x["service"], local(x).weekday(), local(x).hour))
    want_b = {k for k, f in cells.items() if f["waits"] >= 5 and f["within_target"] < 0.8}
    assert want_b, "the dataset should have bottlenecks"
    got_b = {(r["branch_id"], r["service"], int(r["weekday"]), int(r["hour"])) for r in parse_csv(body)}
    assert got_b == want_b
    # over a period across weeks and over all the data: heat map cells and bottlenecks with figures
    for lo, hi in (("2030-10-20", "2030-10-26"), ("2030-10-01", "2030-11-30")):
        xs = [x for x in dataset if in_period(x, lo, hi)]
        cells = expected(xs, lambda x: (x["branch"], x["service"], local(x).weekday(), local(x).hour))
        want_b = {k: f for k, f in cells.items() if f["waits"] >= 5 and f["within_target"] < 0.8}
        assert want_b, (lo, hi)
        _, body, _ = await admin.get(f"/console/analytics/bottlenecks?from={lo}&to={hi}&share=80&format=csv")
        got = {(r["branch_id"], r["service"], int(r["weekday"]), int(r["hour"])):
               (int(r["waits"]), number(r["within_target"]), number(r["wait_mean_s"]), number(r["abandonment"]))
               for r in parse_csv(body)}
        assert got == {k: (f["waits"], f["within_target"], f["wait_mean"], f["abandonment"]) for k, f in want_b.items()}
        # the same from both sides' sums (what branches whose periods start on different days get)
        # as from the join of each end row with its start row
        with monkeypatch.context() as m:
            m.setattr(console_analytics, "_running_joined", lambda *a: None)
            _, again, _ = await admin.get(f"/console/analytics/bottlenecks?from={lo}&to={hi}&share=80&format=csv")
        assert again == body
        want_h = expected(xs, lambda x: (local(x).weekday(), local(x).hour))
        _, body, _ = await admin.get(f"/console/analytics/heatmap?from={lo}&to={hi}&format=csv")
        got_h = {(int(r["weekday"]), int(r["hour"])): (int(r["tickets"]), number(r["wait_mean_s"]),
                                                      number(r["within_target"])) for r in parse_csv(body)}
        assert got_h == {k: (f["tickets"], f["wait_mean"], f["within_target"]) for k, f in want_h.items()}
        _, body, _ = await admin.get(f"/console/analytics/offices?from={lo}&to={hi}&format=csv")
        compare(parse_csv(body), expected(xs, lambda x: x["branch"]), lambda r: r["branch_id"])
    # yesterday (the 27th in both zones at 20:00 UTC on the 28th): MAE and share inside the range
    _, body, _ = await admin.get("/console/analytics/estimates?format=csv")
    want_e = {}
    for (branch, service), xs in _by(tickets, lambda x: (x["branch"], x["service"])
                                      if local(x).date().isoformat() == "2030-10-27" and "called" in x else None).items():
        errs = [abs(x["est"]["p50"] - (x["called"] - x["issued"])) for x in xs]
        ranged = [x for x in xs if "p10" in x["est"]]
        inside = [x for x in ranged if x["est"]["p10"] <= x["called"] - x["issued"] <= x["est"]["p90"]]
        want_e[(branch, service)] = (len(xs), round(sum(errs) / len(errs), 1), len(ranged),
                                     round(len(inside) / len(ranged), 4) if ranged else "")
    got_e = {(r["branch_id"], r["service"]): (int(r["estimates"]), number(r["mae_s"]), int(r["with_range"]),
                                              number(r["inside_range"])) for r in parse_csv(body)}
    assert got_e == want_e
    for path in ("/console/analytics/heatmap", "/console/analytics/offices", "/console/analytics/bottlenecks",
                 "/console/analytics/estimates"):
        status, html, _ = await admin.get(f"{path}?{q}" if "estimates" not in path else path)
        assert status == 200 and "<svg" in html and "Download this table (CSV)" in html, path


async def test_each_service_measured_against_its_own_target_set_after_the_fact(console, dataset, session):
    """Targets set after the tickets were counted apply to every past day (the share is computed
    when a page is read, from the wait histograms), each service against its own."""
    tickets = [x for x in dataset if in_period(x)]
    token = (await api(session, "POST", f"{console.url}{V}/auth/tokens", 201,
                       json={"email": "root@hq.test", "password": PASSWORD}))["token"]  # the clock moved on
    sup = {"Authorization": f"Bearer {token}"}
    own = {("acme-main", "general"): 20, ("acme-east", "permits"): 10}  # minutes; the rest: 15 (HQ-wide)
    for (branch, sid), minutes in own.items():
        await api(session, "PUT", f"{console.url}{V}/branches/{branch}/services/{sid}", 200, headers=sup,
                  json={"letter": "A" if sid == "general" else "P", "names": {"en": sid.title()}, "slot_minutes": 15,
                        "capacity": 3, "target_wait_minutes": minutes})

    def target(x: dict) -> int:
        return own.get((x["branch"], x["service"]), 15) * 60
    admin = await console.login("admin@acme.test")
    q = "from=2030-10-25&to=2030-10-28"
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=day&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: local(x).date().isoformat(), target), lambda r: r["day"])
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=staff&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: (x["branch"], staff_at(x["counter"], x["called"]))
                                      if "called" in x else None, target), lambda r: (r["branch_id"], r["staff"]))
    _, body, _ = await admin.get(f"/console/analytics/offices?{q}&format=csv")
    compare(parse_csv(body), expected(tickets, lambda x: x["branch"], target), lambda r: r["branch_id"])
    _, body, _ = await admin.get(f"/console/analytics/heatmap?{q}&service=permits&format=csv")
    want = expected([x for x in tickets if x["service"] == "permits"], lambda x: (local(x).weekday(), local(x).hour),
                    target)
    assert {(int(r["weekday"]), int(r["hour"])): number(r["within_target"]) for r in parse_csv(body)} == \
        {k: f["within_target"] for k, f in want.items()}
    _, body, _ = await admin.get(f"/console/analytics/bottlenecks?{q}&share=80&format=csv")
    cells = expected(tickets, lambda x: (x["branch"], x["service"], local(x).weekday(), local(x).hour), target)
    rows = parse_csv(body)
    assert {(r["branch_id"], r["service"], int(r["weekday"]), int(r["hour"])) for r in rows} == \
        {k for k, f in cells.items() if f["waits"] >= 5 and f["within_target"] < 0.8}
    assert {(r["branch_id"], r["service"], int(r["target_wait_s"])) for r in rows} <= \
        {(b, s, own.get((b, s), 15) * 60) for b in ZONES for s in ("general", "permits")}
    # over a period across weeks (the running totals), each (branch, service) against its target
    mid = [x for x in dataset if in_period(x, "2030-10-20", "2030-10-26")]
    _, body, _ = await admin.get("/console/analytics/bottlenecks?from=2030-10-20&to=2030-10-26&share=80&format=csv")
    cells = expected(mid, lambda x: (x["branch"], x["service"], local(x).weekday(), local(x).hour), target)
    assert {(r["branch_id"], r["service"], int(r["weekday"]), int(r["hour"])): number(r["within_target"])
            for r in parse_csv(body)} == {k: f["within_target"] for k, f in cells.items()
                                          if f["waits"] >= 5 and f["within_target"] < 0.8}
    _, body, _ = await admin.get("/console/analytics?from=2030-10-20&to=2030-10-26&by=hour&format=csv")
    compare(parse_csv(body), expected(mid, lambda x: local(x).hour, target), lambda r: int(r["hour"]))
    # one target for a service in every branch: the organization's daily roll-up answers with it
    await api(session, "PUT", f"{console.url}{V}/branches/acme-east/services/general", 200, headers=sup,
              json={"letter": "A", "names": {"en": "General"}, "slot_minutes": 15, "capacity": 3,
                    "target_wait_minutes": 20})
    own[("acme-east", "general")] = 20
    _, body, _ = await admin.get(f"/console/analytics?{q}&by=day&service=general&format=csv")
    compare(parse_csv(body), expected([x for x in tickets if x["service"] == "general"],
                                      lambda x: local(x).date().isoformat(), target), lambda r: r["day"])
    status, html, _ = await admin.get(f"/console/analytics?{q}&by=service")
    assert status == 200 and "from 10 min to 20 min" in html  # the page says the targets differ
    status, html, _ = await admin.get(f"/console/analytics?{q}&by=service&branch=acme-east&service=permits")
    assert status == 200 and "the target wait is 10 min" in html


def _by(xs, key):
    out = defaultdict(list)
    for x in xs:
        k = key(x)
        if k is not None:
            out[k].append(x)
    return out


async def test_analytics_roles_tenants_and_bad_filters(console, session):
    staff = await console.login("staff@acme.test")
    for path in ("/console/analytics", "/console/analytics/heatmap", "/console/analytics/offices",
                 "/console/analytics/bottlenecks", "/console/analytics/estimates"):
        assert (await staff.get(path))[0] == 403, path
    manager = await console.login("manager@acme.test")
    admin = await console.login("admin@acme.test")
    assert (await manager.get("/console/analytics?branch=beta-main"))[0] == 403
    assert (await admin.get("/console/analytics?branch=beta-main"))[0] == 403
    assert (await admin.get("/console/analytics?org=beta"))[0] == 403
    assert (await admin.get("/console/analytics/heatmap?branch=nowhere"))[0] == 403
    root = Browser(console.url)
    try:
        status, _, location = await root.post("/console/login", {"email": "root@hq.test", "password": "correct horse battery"})
        assert status == 303
        assert (await root.get("/console/analytics?org=nowhere"))[0] == 404
        assert (await root.get("/console/analytics?org=beta"))[0] == 200
    finally:
        await root.close()
    for query in ("from=2030-13-01", "from=yesterday", "to=2030-01-01&from=2030-02-01", "from=2000-01-01&to=2030-01-01",
                  "service=nothing", "from=" + "9" * 500, "to=2030-02-30",
                  "to=0001-01-05", "from=9999-12-01&to=9999-12-31"):  # years HQ cannot convert: were a 500
        for path in ("/console/analytics", "/console/analytics/bottlenecks", "/console/analytics/heatmap"):
            status, html, _ = await admin.get(f"{path}?{query}")
            assert status == 400 and "There is a problem" in html, (path, query, status)
    for path, query in (("/console/analytics", "by=nothing"), ("/console/analytics/bottlenecks", "share=12")):
        status, html, _ = await admin.get(f"{path}?{query}")
        assert status == 400 and "There is a problem" in html, (path, query, status)
    status, html, _ = await admin.get("/console/analytics/estimates?day=2030-02-30")
    assert status == 400 and "There is a problem" in html
    _, html, _ = await manager.get("/console")
    assert 'href="/console/analytics"' in html


async def test_bookings_nobody_checked_in_count_as_booking_no_shows_at_their_slot(console, session):
    """Three bookings at 08:15 and 08:30 (Zurich): one checked in, two never; the no-show job
    marks those two, and the booking no-show rate of that day is 2 / 3; a late check-in of one
    reaching HQ takes it back to 1 / 3 (and the ticket counts as a booking instead)."""
    from hq.scheduler import no_show_job
    from hqtest import T0
    hq = console.app[HQ_KEY]
    codes = []
    for hhmm in ("08:15", "08:15", "08:30"):
        codes.append((await api(session, "POST", f"{console.url}{V}/public/bookings", 201, json={
            "branch": "acme-main", "service": "general", "start": f"2030-01-07T{hhmm}:00+01:00",
            "phone": "+41 44 668 18 00"}))["code"])
    kiosk = Device("kiosk-bk")
    await kiosk.register(console, session)
    base = {"service": "general", "day": "20300107", "priority": 0, "language": "en"}
    console.clock.t = T0 + 14 * 60
    await ingest_branch_events(hq, [kiosk.event("ticket.issued", base | {
        "ticket": "20300107-A001", "number": 1, "label": "A001", "booking": codes[0]}, T0 + 14 * 60)])
    console.clock.t = T0 + 61 * 60
    assert await no_show_job(hq) == 2
    admin = await console.login("admin@acme.test")
    url = "/console/analytics?from=2030-01-07&to=2030-01-07&by=hour&format=csv"
    rows = {int(r["hour"]): r for r in parse_csv((await admin.get(url))[1])}
    # the checked-in ticket at 08:14 and the two missed bookings at their slots, 08:15 and 08:30
    assert (rows[8]["bookings"], rows[8]["no_show_booking"], rows[8]["tickets"]) == ("3", "0.6667", "1")
    await ingest_branch_events(hq, [kiosk.event("ticket.issued", base | {
        "ticket": "20300107-A002", "number": 2, "label": "A002", "booking": codes[2]}, T0 + 29 * 60)])
    rows = {int(r["hour"]): r for r in parse_csv((await admin.get(url))[1])}
    assert (rows[8]["bookings"], rows[8]["no_show_booking"], rows[8]["tickets"]) == ("3", "0.3333", "2")
    assert await no_show_job(hq) == 0
    rows = {int(r["hour"]): r for r in parse_csv((await admin.get(url))[1])}
    assert rows[8]["no_show_booking"] == "0.3333"
