"""The console's analytics pages (issue 10; docs/console.md): an overview grouped by branch,
service, staff member, day or hour; a weekday x hour heat map; offices side by side;
bottlenecks; yesterday's wait-estimate error. Every page reads the aggregates kept as events
arrive (hq/aggregates.py), never tickets or events, and every table downloads as CSV. A page
reads a bounded number of rows whatever the period: an organization's days from its own daily
roll-up, weekday-hours from the running totals (the period's end minus its start).

Managers see their branch, org admins their organization, super admins any organization;
staff get the 403 page. Days and hours are the branch's local ones.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hq import aggregates as ag
from hq.auth import Principal
from hq.errors import ApiError, check_date
from hq.console import charts
from hq.console import targets as tg
from hq.console.targets import Targets
from hq.console.views import crender, csv_response, page
from hq.pages.app import LANG, T, PageError
from hq.pages.i18n import DEFAULT, N_, Translator, translator
from hq.web import hq_of

MANAGERS = ("super_admin", "org_admin", "branch_manager")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_DAYS = 400
GROUPS = {"branch": N_("Branch"), "service": N_("Service"), "staff": N_("Staff member"), "day": N_("Day"),
          "hour": N_("Hour")}
SHARES = ("50", "70", "80", "90", "95")
MIN_WAITS = 5  # a bottleneck needs at least this many waits in its weekday-hour
SHOWN = 100  # bottlenecks listed on the page, worst first (the CSV has them all)
LONG_DAYS = 120  # periods from this long read per-branch figures from the running totals


@dataclass
class Scope:
    """What the visitor asked for and may see: one organization, some of its branches, days."""
    org_id: str
    org_name: str
    branches: dict[str, dict[str, Any]]  # id -> {name, timezone}: all the visitor may choose
    chosen: list[str]  # the branches shown
    branch: str = ""
    service: str = ""
    day_from: str = ""
    day_to: str = ""
    orgs: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    services: list[tuple[str, str]] = field(default_factory=list)
    whole_org: bool = False  # every branch of the organization: its own daily roll-up may answer

    def query(self, **over: str) -> str:
        values = {"org": self.org_id, "branch": self.branch, "service": self.service, "from": self.day_from,
                  "to": self.day_to, **over}
        from urllib.parse import urlencode
        return urlencode({k: v for k, v in values.items() if v})


def _tr(request: web.Request) -> Translator:
    return request.get(T) or translator(DEFAULT)


def _parse_day(raw: str) -> date | None:
    """A date inside the range HQ converts (hq.errors.check_date): 0001-01-05 less 27 days was a 500."""
    if not DATE_RE.match(raw):
        return None
    try:
        return check_date(raw)
    except ApiError:
        return None


def load_scope(c: sqlite3.Connection, p: Principal, q: Any, today: date) -> Scope:
    """The organization, branches, service and days of the request, checked against the role."""
    org_raw = str(q.get("org", ""))[:80]
    orgs: list[tuple[str, str]] = []
    if p.role == "super_admin":
        orgs = [(r[0], r[1]) for r in c.execute("SELECT id, name FROM orgs ORDER BY name")]
        org_id = org_raw or (orgs[0][0] if orgs else "")
        if org_id not in {o for o, _ in orgs}:
            raise PageError(404, N_("This page does not exist."))
    else:
        org_id = p.org_id or ""
        if org_raw and org_raw != org_id:
            raise PageError(403, N_("This branch belongs to another organization, or your role may not see it."))
    row = c.execute("SELECT name FROM orgs WHERE id = ?", (org_id,)).fetchone()
    sql, args = "SELECT id, name, timezone FROM branches WHERE org_id = ?", [org_id]
    if p.role == "branch_manager":
        sql, args = sql + " AND id = ?", [org_id, p.branch_id or ""]
    branches = {r[0]: {"name": r[1], "timezone": r[2]} for r in c.execute(sql + " ORDER BY name", args)}
    scope = Scope(org_id, row[0] if row else org_id, branches, list(branches), orgs=orgs,
                  whole_org=p.role != "branch_manager")
    branch = str(q.get("branch", ""))[:80]
    if branch:
        if branch not in branches:
            exists = c.execute("SELECT 1 FROM branches WHERE id = ?", (branch,)).fetchone()
            if exists is None and p.role == "super_admin":
                raise PageError(404, N_("This page does not exist."))
            raise PageError(403, N_("This branch belongs to another organization, or your role may not see it."))
        scope.branch, scope.chosen, scope.whole_org = branch, [branch], False
    names: dict[str, str] = {}
    for r in c.execute(f"SELECT id, names FROM services WHERE branch_id IN ({', '.join('?' * len(scope.chosen))})",
                       scope.chosen) if scope.chosen else []:
        names.setdefault(r[0], r[1])
    scope.services = sorted((k, v) for k, v in names.items())
    service = str(q.get("service", ""))[:80]
    if service and service not in names:
        scope.errors["service"] = N_("Choose a service from the list.")
    scope.service = service
    raw_from, raw_to = str(q.get("from", ""))[:20], str(q.get("to", ""))[:20]
    d_to = _parse_day(raw_to) if raw_to else today
    d_from = _parse_day(raw_from) if raw_from else (d_to - timedelta(days=27) if d_to else None)
    if d_from is None:
        scope.errors["from"] = N_("Enter the first day as a date, like 2030-01-31.")
    if d_to is None:
        scope.errors["to"] = N_("Enter the last day as a date, like 2030-01-31.")
    if d_from and d_to:
        if d_from > d_to:
            scope.errors["to"] = N_("The last day must be on or after the first day.")
        elif (d_to - d_from).days >= MAX_DAYS:
            scope.errors["to"] = N_("Choose a period of at most 400 days.")
    scope.day_from = d_from.isoformat() if d_from else raw_from
    scope.day_to = d_to.isoformat() if d_to else raw_to
    return scope


def sums(c: sqlite3.Connection, scope: Scope, group: tuple[str, ...], *, table: str = "analytics_days",
         days: tuple[str, str] | None = None, measures: tuple[str, ...] = ag.MEASURES,
         targets: Targets | None = None, having: tuple[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """SUM of ``measures`` over the scope, grouped by ``group`` columns; with ``targets`` also
    the waits within each row's service target ("inside"), counted in SQL from its buckets.
    ``having`` may use ``{inside}`` for that SQL sum (its arguments are added)."""
    if not scope.chosen:
        return []
    exprs = [f"SUM({m})" for m in measures]
    args: list[Any] = []
    org = table == "analytics_org_days"
    inside_sql, inside_args = ("", [])
    if targets is not None:
        inside_sql, inside_args = service_inside_sql(targets, scope.chosen) if org else targets.inside_sql()
        exprs.append(f"SUM({inside_sql})")
        args += inside_args
    d_from, d_to = days or (scope.day_from, scope.day_to)
    where = "org_id = ?" if org else f"branch_id IN ({', '.join('?' * len(scope.chosen))})"
    sql = (f"SELECT {''.join(g + ', ' for g in group)}{', '.join(exprs)} FROM {table}"
           f" WHERE {where} AND day >= ? AND day <= ?")
    args += [*([scope.org_id] if org else scope.chosen), d_from, d_to]
    if scope.service:
        sql += " AND service = ?"
        args.append(scope.service)
    if group:
        sql += f" GROUP BY {', '.join(group)}"
    if having:
        sql += f" HAVING {having[0].replace('{inside}', f'SUM({inside_sql})')}"
        given = list(having[1])
        for i, part in enumerate(having[0].split("{inside}")):  # the arguments in the order of their marks
            if i:
                args += inside_args
            args += [given.pop(0) for _ in range(part.count("?"))]
    return _rows(c, sql, args, group, measures, targets)


def service_inside_sql(targets: Targets, branches: list[str]) -> tuple[str, list[Any]]:
    """Like ``targets.inside_sql()`` for rows without a branch (an organization's days): each
    service's target, which must be the same in every branch (see :func:`org_days_fit`)."""
    per: dict[int, list[str]] = {}
    for service in sorted({s for _, s in targets.in_scope} | {s for _, s in targets.own}):
        t = targets.of(branches[0], service) if branches else targets.default_s
        if t != targets.default_s:
            per.setdefault(t, []).append(service)
    if not per:
        return tg.within_sql(targets.default_s), []
    parts, args = [], []
    for t, services in sorted(per.items()):
        parts.append(f"WHEN service IN ({', '.join('?' * len(services))}) THEN {tg.within_sql(t)}")
        args += services
    return f"CASE {' '.join(parts)} ELSE {tg.within_sql(targets.default_s)} END", args


def org_days_fit(scope: Scope, targets: Targets) -> bool:
    """Whether the organization's daily roll-up answers for the scope: every branch shown, and
    each service's target the same in every branch (the roll-up has no branch to tell them apart)."""
    if not scope.whole_org or not scope.chosen:
        return False
    services = {scope.service} if scope.service else {s for _, s in targets.in_scope} | {s for _, s in targets.own}
    return all(len({targets.of(b, s) if (b, s) in targets.in_scope or (b, s) in targets.own else None
                    for b in scope.chosen}) == 1 for s in services)


def _marks(values: list[Any]) -> str:
    return ", ".join("?" * len(values))


def running_sums(c: sqlite3.Connection, scope: Scope, group: tuple[str, ...], *,
                 measures: tuple[str, ...] = ag.MEASURES, targets: Targets | None = None,
                 having: tuple[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """What :func:`sums` gives over ``analytics_hours`` for the scope's period, from the running
    totals: per branch and weekday the row at the period's end minus the row before its start
    (hq/aggregates.py), so at most twice the weekday-hours of the branches are read, whatever the
    period. ``group`` is among branch_id, service, weekday, hour; ``having`` may use ``{inside}``."""
    if not scope.chosen:
        return []
    plus, minus = ag.running_pairs(c, scope.chosen, date.fromisoformat(scope.day_from), date.fromisoformat(scope.day_to))
    if not plus:
        return []
    if {"branch_id", "service", "weekday", "hour"} <= set(group):
        joined = _running_joined(scope, group, measures, targets, having, plus, minus)
        if joined is not None:
            return _rows(c, *joined, group, measures, targets)
    sums_ = [f"SUM({m})" for m in measures]
    inside_sql, inside_args = targets.inside_sql() if targets is not None else ("", [])
    if targets is not None:
        sums_.append(f"SUM({inside_sql})")
    names = [*measures, *(("inside_n",) if targets is not None else ())]
    keys = "".join(g + ", " for g in group)
    by = f" GROUP BY {', '.join(group)}" if group else ""
    # per side, a branch's weekday is one row per (service, hour): grouped by all of them, a side
    # needs no grouping of its own
    if {"branch_id", "service", "weekday", "hour"} <= set(group):
        sums_, by = [e[4:-1] for e in sums_], ""
    pair = "branch_id || ' ' || day"
    parts: list[str] = []
    args: list[Any] = []
    # each side summed on its own, then the sides: so each row's columns are read once and only
    # the groups' sums (a few computed columns) cross the subquery
    for sign, chosen in (("", plus), ("-", minus)):
        if not chosen:
            continue
        days = sorted({x.split(" ", 1)[1] for x in chosen})
        branches = sorted({x.split(" ", 1)[0] for x in chosen})
        part = (f"SELECT {keys}{', '.join(f'{sign}({e}) AS {n}' for e, n in zip(sums_, names))} FROM analytics_running"
                f" WHERE branch_id IN ({_marks(branches)}) AND day IN ({_marks(days)}) AND {pair} IN ({_marks(chosen)})")
        args += [*inside_args, *branches, *days, *chosen]
        if scope.service:
            part += " AND service = ?"
            args.append(scope.service)
        parts.append(part + by)
    sql = f"SELECT {keys}{', '.join(f'SUM({n})' for n in names)} FROM ({' UNION ALL '.join(parts)}) AS r"
    if group:
        sql += f" GROUP BY {', '.join(group)}"
    if having:
        sql += f" HAVING {having[0].replace('{inside}', 'SUM(inside_n)')}"
        args += having[1]
    return _rows(c, sql, args, group, measures, targets)


def _running_joined(scope: Scope, group: tuple[str, ...], measures: tuple[str, ...], targets: Targets | None,
                    having: tuple[str, list[Any]] | None, plus: list[str],
                    minus: list[str]) -> tuple[str, list[Any]] | None:
    """Per (branch, service, weekday, hour), the end row minus the start row found by primary key
    (a join, no sort): when every branch's period starts on the same day of each weekday (None
    otherwise; the caller then sums both sides)."""
    lower: dict[str, dict[int, str]] = {}
    for x in minus:
        b, d = x.split(" ", 1)
        lower.setdefault(b, {})[date.fromisoformat(d).weekday()] = d
    maps = {tuple(sorted(m.items())) for m in lower.values()}
    if len(maps) > 1 or (lower and len(lower) != len({x.split(" ", 1)[0] for x in plus})):
        return None
    starts = dict(maps.pop()) if maps else {}
    qualify = re.compile(r"\b(w\d+|branch_id|service)\b")
    cols = [f"u.{m} - COALESCE(l.{m}, 0) AS {m}" for m in measures]
    args: list[Any] = []
    if targets is not None:
        inside_sql, inside_args = targets.inside_sql()
        end, begin = qualify.sub(r"u.\1", inside_sql), qualify.sub(r"l.\1", inside_sql)
        cols.append(f"({end}) - COALESCE(({begin}), 0) AS inside_n")
        args += [*inside_args, *inside_args]
    join = ""
    if starts:
        join = (f" LEFT JOIN analytics_running l ON l.branch_id = u.branch_id"
                f" AND l.day = CASE u.weekday {' '.join('WHEN ? THEN ?' for _ in starts)} END"
                f" AND l.service = u.service AND l.hour = u.hour")
        args += [v for w, d in sorted(starts.items()) for v in (w, d)]
    else:  # the period starts before every running total: the end rows are the figures
        cols = [f"u.{m} AS {m}" for m in measures]
        if targets is not None:
            cols.append(f"({end}) AS inside_n")
            args = list(inside_args)
    days = sorted({x.split(" ", 1)[1] for x in plus})
    branches = sorted({x.split(" ", 1)[0] for x in plus})
    sql = (f"SELECT {', '.join(f'u.{g} AS {g}' for g in group)}, {', '.join(cols)} FROM analytics_running u{join}"
           f" WHERE u.branch_id IN ({_marks(branches)}) AND u.day IN ({_marks(days)})"
           f" AND u.branch_id || ' ' || u.day IN ({_marks(plus)})")
    args += [*branches, *days, *plus]
    if scope.service:
        sql += " AND u.service = ?"
        args.append(scope.service)
    names = [*measures, *(("inside_n",) if targets is not None else ())]
    sql = f"SELECT {', '.join([*group, *names])} FROM ({sql}) AS r"
    if having:  # one row per group already: the sums are the row's own values
        sql += f" WHERE {having[0].replace('{inside}', 'inside_n').replace('SUM(', '(')}"
        args += having[1]
    return sql, args


def _rows(c: sqlite3.Connection, sql: str, args: list[Any], group: tuple[str, ...], measures: tuple[str, ...],
          targets: Targets | None) -> list[dict[str, Any]]:
    out = []
    n = len(group)
    for r in c.execute(sql, args):
        row = list(r)
        d = dict(zip(group, row[:n]))
        d["m"] = dict(zip(measures, (int(v or 0) for v in row[n:n + len(measures)])))
        if targets is not None:
            d["inside"] = float(row[-1] or 0)
        if d["m"].get("tickets") or d["m"].get("wait_n"):
            out.append(d)
    return out


def figures(m: dict[str, int], inside: float | None = None) -> dict[str, Any]:
    """The page's figures from one row of summed measures and its waits within their services'
    targets (``inside``, from :func:`sums` with targets; docs/console.md says how)."""
    m = {k: m.get(k, 0) for k in ag.MEASURES}
    hist = [m[h] for h in ag.HIST]

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None
    return {
        "tickets": m["tickets"], "walkins": m["walkins"], "bookings": m["bookings"] + m["booking_missed"],
        "served": m["served"], "no_show_walkin": ratio(m["no_show_walkin"], m["walkins"]),
        # a booking is a no-show when its holder never checked in, or checked in and missed the call
        "no_show_booking": ratio(m["no_show_booking"] + m["booking_missed"], m["bookings"] + m["booking_missed"]),
        "wait_mean": m["wait_ms"] / m["wait_n"] / 1000 if m["wait_n"] else None,
        "wait_p50": ag.percentile(hist, 0.5), "wait_p90": ag.percentile(hist, 0.9),
        "service_mean": m["service_ms"] / m["service_n"] / 1000 if m["service_n"] else None,
        "abandonment": ratio(m["abandoned"], m["tickets"]),
        "within_target": ratio(round(inside), m["wait_n"]) if inside is not None else None,
        "waits": m["wait_n"],
        "est_mae": m["est_err_ms"] / m["est_n"] / 1000 if m["est_n"] else None, "est_n": m["est_n"],
        "est_in_range": ratio(m["est_in_range"], m["est_range_n"]), "est_range_n": m["est_range_n"],
    }


FIGURE_COLUMNS = ("tickets", "walkins", "bookings", "no_show_walkin", "no_show_booking", "wait_mean", "wait_p50",
                  "wait_p90", "service_mean", "abandonment", "within_target")
FIGURE_HEADS = {"tickets": N_("Tickets"), "walkins": N_("Walk-ins"), "bookings": N_("Bookings"),
                "no_show_walkin": N_("No-shows, walk-ins"), "no_show_booking": N_("No-shows, bookings"),
                "wait_mean": N_("Mean wait"), "wait_p50": N_("Median wait (p50)"), "wait_p90": N_("Wait p90"),
                "service_mean": N_("Mean service time"), "abandonment": N_("Left before their call"),
                "within_target": N_("Called within the target")}
RATES = {"no_show_walkin", "no_show_booking", "abandonment", "within_target", "est_in_range"}
SECONDS = {"wait_mean", "wait_p50", "wait_p90", "service_mean", "est_mae"}


def cell(t: Translator, name: str, value: Any) -> str:
    if value is None:
        return "–"
    if name in RATES:
        return f"{t.number(round(value * 100, 1))} %"
    if name in SECONDS:
        return t.gettext("{n} min", n=t.number(round(value / 60, 1)))
    return t.number(value)


def csv_value(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name in RATES:
        return round(value, 4)
    if name in SECONDS:
        return round(value, 1)
    return value


def _service_name(raw: str | None, lang: str, default: str) -> str:
    names = json.loads(raw) if raw else {}
    return names.get(lang) or names.get("en") or default


async def _scope(request: web.Request, p: Principal) -> tuple[Scope, int]:
    """The scope of the request and the HQ-wide target wait (services without their own)."""
    hq = hq_of(request)
    today = datetime.fromtimestamp(hq.now(), ZoneInfo("UTC")).date()
    scope = await hq.db.read(lambda c: load_scope(c, p, request.query, today))
    lang = request.get(LANG) or "en"
    scope.services = [(k, _service_name(v, lang, k)) for k, v in scope.services]
    return scope, hq.settings.target_wait_s


def _render(request: web.Request, template: str, scope: Scope, view: str, **values: Any) -> web.Response:
    t = _tr(request)
    by = values.get("by", "day")
    return crender(request, template, status=400 if scope.errors else 200, s=scope, view=view,
                   errors={k: t(v) for k, v in scope.errors.items()},
                   branch_options=[(k, b["name"]) for k, b in scope.branches.items()],
                   share_options=[(x, f"{x} %") for x in SHARES],
                   groups=[(k, t(v)) for k, v in GROUPS.items()], group_label=t(GROUPS.get(by, GROUPS["day"])),
                   heads=FIGURE_HEADS, columns=FIGURE_COLUMNS, cell=cell, **values)


def _figure_csv(name: str, key_heads: list[str], rows: list[tuple[list[Any], dict[str, Any]]]) -> web.Response:
    return csv_response(name, key_heads + list(FIGURE_COLUMNS) + ["waits"],
                        [keys + [csv_value(c, f[c]) for c in FIGURE_COLUMNS] + [f["waits"]] for keys, f in rows])


# -- overview --------------------------------------------------------------------------------------
@page(MANAGERS)
async def overview(request: web.Request, p: Principal) -> web.StreamResponse:
    scope, target = await _scope(request, p)
    t = _tr(request)
    by = request.query.get("by", "day")
    if by not in GROUPS:
        scope.errors["by"] = N_("Choose how to group the figures.")
        by = "day"
    if scope.errors:
        return _render(request, "console/analytics.html", scope, "overview", by=by, total=None, rows=[], chart="")
    hq = hq_of(request)
    group = {"branch": ("branch_id",), "service": ("service",), "staff": ("branch_id", "staff"), "day": ("day",),
             "hour": ("hour",)}[by]

    def load(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, str], str],
                                             Targets]:
        targets = tg.load(c, scope.chosen, target, scope.service)
        # the organization's daily roll-up when it can answer (a few rows per day, not one per
        # branch); hours and, over long periods, branches from the running totals
        days = "analytics_org_days" if org_days_fit(scope, targets) else "analytics_days"
        total = sums(c, scope, (), table=days, targets=targets)
        if by == "hour" or (by == "branch" and _long(scope)):
            rows = running_sums(c, scope, group, targets=targets)
        else:
            rows = sums(c, scope, group, table={"staff": "analytics_staff", "branch": "analytics_days"}.get(by, days),
                        targets=targets)
        staff = {}
        if by == "staff":
            staff = {(r[0], r[1]): r[2] for r in c.execute(
                f"SELECT branch_id, id, name FROM staff WHERE branch_id IN ({', '.join('?' * len(scope.chosen))})",
                scope.chosen)}
        return total, rows, staff, targets
    total_rows, rows, staff_names, targets = await hq.db.read(load)
    services = dict(scope.services)

    def label(r: dict[str, Any]) -> str:
        if by == "branch":
            return scope.branches[r["branch_id"]]["name"]
        if by == "service":
            return services.get(r["service"], r["service"])
        if by == "staff":
            name = staff_names.get((r["branch_id"], r["staff"])) or r["staff"] or t("Nobody logged in")
            return name if scope.branch else f"{name} ({scope.branches[r['branch_id']]['name']})"
        if by == "hour":
            return f"{r['hour']:02d}:00"
        return str(r["day"])
    ordered = sorted(rows, key=lambda r: tuple(r[g] for g in group))
    table = [(label(r), [r[g] for g in group], figures(r["m"], r["inside"])) for r in ordered]
    if request.query.get("format") == "csv":
        return _figure_csv(f"analytics-{scope.org_id}-{by}.csv", list(group), [(keys, f) for _, keys, f in table])
    total = figures(total_rows[0]["m"], total_rows[0]["inside"]) if total_rows else None
    single = targets.single()
    chart = ""
    if table and by in ("day", "hour"):
        chart = charts.columns(t("Tickets per {group}", group=t(GROUPS[by]).lower()),
                               t("Bars: tickets issued in each {group}; the same numbers are in the table below.",
                                 group=t(GROUPS[by]).lower()),
                               [(lbl, f["tickets"], t.number(f["tickets"])) for lbl, _, f in table])
    elif table:
        chart = charts.bars(t("Wait p90 per {group}", group=t(GROUPS[by]).lower()),
                            _p90_desc(t, single), [(lbl, f["wait_p90"], cell(t, "wait_p90", f["wait_p90"]))
                                                   for lbl, _, f in table],
                            target=single, target_text=t("Target {target}", target=t.minutes(single)) if single else "")
    return _render(request, "console/analytics.html", scope, "overview", by=by, total=total, rows=table, chart=chart,
                   target_s=single, targets=targets.values(), exact=targets.exact())


def _p90_desc(t: Translator, single: int | None) -> str:
    if single is not None:
        return t("Bars: the wait that 9 in 10 people did not exceed; the dashed line is the target"
                 " wait; the same numbers are in the table below.")
    return t("Bars: the wait that 9 in 10 people did not exceed; the services' target waits differ, so no"
             " line is drawn; the same numbers are in the table below.")


def _long(scope: Scope) -> bool:
    """Whether the period is long enough that the running totals read fewer rows than the
    daily roll-up (at most 2 x 7 x hours of a branch and service, against one per day)."""
    return (date.fromisoformat(scope.day_to) - date.fromisoformat(scope.day_from)).days >= LONG_DAYS


# -- heat map ---------------------------------------------------------------------------------------
def weekday_count(d_from: date, d_to: date) -> list[int]:
    """How many of each weekday (Monday first) the days d_from..d_to hold."""
    out = [0] * 7
    days = (d_to - d_from).days + 1
    for i in range(7):
        out[(d_from.weekday() + i) % 7] += (days - i + 6) // 7 if days > i else 0
    return out


@page(MANAGERS)
async def heatmap(request: web.Request, p: Principal) -> web.StreamResponse:
    scope, target = await _scope(request, p)
    t = _tr(request)
    if scope.errors:
        return _render(request, "console/analytics_heatmap.html", scope, "heatmap", grid=None)
    rows = await hq_of(request).db.read(lambda c: running_sums(c, scope, ("weekday", "hour"),
                                                               measures=("tickets", "wait_n", "wait_ms"),
                                                               targets=tg.load(c, scope.chosen, target, scope.service)))
    per_weekday = weekday_count(date.fromisoformat(scope.day_from), date.fromisoformat(scope.day_to))
    hours = sorted({r["hour"] for r in rows})
    grid: dict[tuple[int, int], dict[str, Any]] = {}
    for r in rows:
        m = r["m"]
        grid[(r["weekday"], r["hour"])] = {
            "tickets": m["tickets"], "waits": m["wait_n"],
            "per_day": m["tickets"] / per_weekday[r["weekday"]] if per_weekday[r["weekday"]] else 0.0,
            "wait_mean": m["wait_ms"] / m["wait_n"] / 1000 if m["wait_n"] else None,
            "within_target": round(r["inside"]) / m["wait_n"] if m["wait_n"] else None}
    day_names = [t.locale.days["format"]["wide"][i] for i in range(7)]
    if request.query.get("format") == "csv":
        return csv_response(f"heatmap-{scope.org_id}.csv", ["weekday", "hour", "tickets", "arrivals_per_day",
                                                            "wait_mean_s", "within_target"],
                            [[wd, h, f["tickets"], round(f["per_day"], 2), csv_value("wait_mean", f["wait_mean"]),
                              csv_value("within_target", f["within_target"])]
                             for (wd, h), f in sorted(grid.items())])
    cols = [f"{h:02d}" for h in hours]
    arrivals = charts.heat(t("Arrivals per hour, by weekday"),
                           t("Darker cells: more tickets issued in that hour on an average day of that weekday;"
                             " the numbers are in the table below."), day_names, cols,
                           {(wd, hours.index(h)): (f["per_day"], t.number(round(f["per_day"], 1)))
                            for (wd, h), f in grid.items()})
    waits = charts.heat(t("Mean wait, by weekday and hour"),
                        t("Darker cells: longer mean waits of the people who arrived in that hour;"
                          " the numbers are in the table below."), day_names, cols,
                        {(wd, hours.index(h)): (f["wait_mean"] or 0.0, cell(t, "wait_mean", f["wait_mean"]))
                         for (wd, h), f in grid.items()})
    peaks = sorted(grid.items(), key=lambda kv: -kv[1]["per_day"])[:3]
    return _render(request, "console/analytics_heatmap.html", scope, "heatmap", grid=grid, hours=hours,
                   day_names=day_names, arrivals=arrivals, waits=waits, peaks=peaks)


# -- offices side by side ----------------------------------------------------------------------------
@page(MANAGERS)
async def offices(request: web.Request, p: Principal) -> web.StreamResponse:
    scope, target = await _scope(request, p)
    t = _tr(request)
    if scope.errors:
        return _render(request, "console/analytics_offices.html", scope, "offices", rows=[], chart="")
    scope.branch, scope.chosen = "", list(scope.branches)  # every office of the organization the visitor sees
    def load(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], Targets]:
        targets = tg.load(c, scope.chosen, target, scope.service)
        if _long(scope):
            return running_sums(c, scope, ("branch_id",), targets=targets), targets
        return sums(c, scope, ("branch_id",), targets=targets), targets
    rows, targets = await hq_of(request).db.read(load)
    single = targets.single()
    by_id = {r["branch_id"]: figures(r["m"], r["inside"]) for r in rows}
    table = [(b["name"], [bid], by_id[bid]) for bid, b in scope.branches.items() if bid in by_id]
    if request.query.get("format") == "csv":
        return _figure_csv(f"offices-{scope.org_id}.csv", ["branch_id"], [(k, f) for _, k, f in table])
    chart = charts.bars(t("Wait p90 per office"), _p90_desc(t, single),
                        [(name, f["wait_p90"], cell(t, "wait_p90", f["wait_p90"])) for name, _, f in table],
                        target=single, target_text=t("Target {target}", target=t.minutes(single)) if single else ""
                        ) if table else ""
    return _render(request, "console/analytics_offices.html", scope, "offices", rows=table, chart=chart,
                   target_s=single)


# -- bottlenecks -----------------------------------------------------------------------------------
@page(MANAGERS)
async def bottlenecks(request: web.Request, p: Principal) -> web.StreamResponse:
    scope, target = await _scope(request, p)
    t = _tr(request)
    share = request.query.get("share", "80")
    if share not in SHARES:
        scope.errors["share"] = N_("Choose a share from the list.")
        share = "80"
    if scope.errors:
        return _render(request, "console/analytics_bottlenecks.html", scope, "bottlenecks", rows=[], share=share)
    goal = int(share) / 100
    # only the weekday hours that may fail the share come back from SQL (the count within the
    # target is rounded below, hence the half; Python decides with the exact rule below)
    having = ("SUM(wait_n) >= ? AND {inside} - 0.5 < ? * SUM(wait_n)", [MIN_WAITS, goal + 1e-9])

    def load(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], Targets]:
        targets = tg.load(c, scope.chosen, target, scope.service)
        return running_sums(c, scope, ("branch_id", "service", "weekday", "hour"), targets=targets, having=having,
                            measures=("tickets", "wait_n", "wait_ms", "abandoned")), targets
    rows, targets = await hq_of(request).db.read(load)
    found = []
    for r in rows:
        m = r["m"]
        if m["wait_n"] < MIN_WAITS:
            continue
        inside = round(r["inside"]) / m["wait_n"]
        if inside < goal:
            found.append((r, inside, {"waits": m["wait_n"], "within_target": inside,
                                      "target_s": targets.of(r["branch_id"], r["service"]),
                                      "wait_mean": m["wait_ms"] / m["wait_n"] / 1000,
                                      "abandonment": m["abandoned"] / m["tickets"] if m["tickets"] else None}))
    found.sort(key=lambda x: (x[1], -x[0]["m"]["wait_n"], x[0]["branch_id"], x[0]["service"], x[0]["weekday"],
                              x[0]["hour"]))  # ties in a stable order, whichever way SQL returned them
    csv = request.query.get("format") == "csv"
    services = dict(scope.services)
    day_names = [t.locale.days["format"]["wide"][i] for i in range(7)]
    table = [{"branch_id": r["branch_id"], "branch": scope.branches[r["branch_id"]]["name"], "service": r["service"],
              "service_name": services.get(r["service"], r["service"]), "weekday": r["weekday"],
              "weekday_name": day_names[r["weekday"]], "hour": r["hour"], "f": f}
             for r, _, f in (found if csv else found[:SHOWN])]  # the page shows the worst only
    if csv:
        return csv_response(f"bottlenecks-{scope.org_id}.csv",
                            ["branch_id", "service", "weekday", "hour", "waits", "within_target", "wait_mean_s",
                             "abandonment", "target_wait_s"],
                            [[x["branch_id"], x["service"], x["weekday"], x["hour"], x["f"]["waits"],
                              csv_value("within_target", x["f"]["within_target"]),
                              csv_value("wait_mean", x["f"]["wait_mean"]),
                              csv_value("abandonment", x["f"]["abandonment"]), x["f"]["target_s"]] for x in table])
    chart = charts.bars(t("Share called within the target, worst hours"),
                        t("Bars: the share of people called within the target wait in each of the worst weekday"
                          " hours; the same numbers are in the table below."),
                        [(f"{x['branch'][:12]} {x['service_name'][:8]} {x['weekday_name'][:3]} {x['hour']:02d}",
                          x["f"]["within_target"] * 100, cell(t, "within_target", x["f"]["within_target"]))
                         for x in table[:12]]) if table else ""
    return _render(request, "console/analytics_bottlenecks.html", scope, "bottlenecks", rows=table[:SHOWN],
                   more=max(len(found) - SHOWN, 0), share=share, shares=SHARES, chart=chart, target_s=targets.single(),
                   min_waits=MIN_WAITS)


# -- wait-estimate error ------------------------------------------------------------------------------
@page(MANAGERS)
async def estimates(request: web.Request, p: Principal) -> web.StreamResponse:
    scope, target = await _scope(request, p)
    t = _tr(request)
    hq = hq_of(request)
    raw = str(request.query.get("day", ""))[:20]
    chosen = _parse_day(raw) if raw else None
    if raw and chosen is None:
        scope.errors["day"] = N_("Enter the day as a date, like 2030-01-31.")
    if scope.errors:
        return _render(request, "console/analytics_estimates.html", scope, "estimates", rows=[], day=raw)
    now = hq.now()
    # yesterday in each branch's own time zone, unless a day was asked for
    days = {bid: chosen.isoformat() if chosen else ag.yesterday(now, ZoneInfo(b["timezone"]))
            for bid, b in scope.branches.items() if bid in scope.chosen}
    lo, hi = (min(days.values()), max(days.values())) if days else ("", "")
    rows = await hq.db.read(lambda c: sums(c, scope, ("branch_id", "service", "day"), days=(lo, hi)))
    services = dict(scope.services)
    table = []
    for r in sorted(rows, key=lambda r: (scope.branches[r["branch_id"]]["name"], r["service"])):
        if r["day"] != days.get(r["branch_id"]) or not r["m"]["est_n"]:
            continue
        f = figures(r["m"])
        table.append({"branch_id": r["branch_id"], "branch": scope.branches[r["branch_id"]]["name"], "day": r["day"],
                      "service": r["service"], "service_name": services.get(r["service"], r["service"]), "f": f})
    if request.query.get("format") == "csv":
        return csv_response(f"estimate-error-{scope.org_id}.csv",
                            ["branch_id", "day", "service", "estimates", "mae_s", "with_range", "inside_range"],
                            [[x["branch_id"], x["day"], x["service"], x["f"]["est_n"], csv_value("est_mae", x["f"]["est_mae"]),
                              x["f"]["est_range_n"], csv_value("est_in_range", x["f"]["est_in_range"])] for x in table])
    chart = charts.bars(t("Mean estimate error per office and service"),
                        t("Bars: the mean difference between the wait shown at the ticket's issue and the actual"
                          " wait; the same numbers are in the table below."),
                        [(f"{x['branch'][:14]} {x['service_name'][:12]}", x["f"]["est_mae"],
                          cell(t, "est_mae", x["f"]["est_mae"])) for x in table]) if table else ""
    return _render(request, "console/analytics_estimates.html", scope, "estimates", rows=table, chart=chart,
                   day=chosen.isoformat() if chosen else "")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/analytics", overview)
    app.router.add_get("/console/analytics/heatmap", heatmap)
    app.router.add_get("/console/analytics/offices", offices)
    app.router.add_get("/console/analytics/bottlenecks", bottlenecks)
    app.router.add_get("/console/analytics/estimates", estimates)
