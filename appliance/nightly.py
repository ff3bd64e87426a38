"""Per-day digests of an event set, computed the same way by a node and by HQ.

A day is the UTC day of an event's HLC time (unambiguous on both sides, whatever the branch's
time zone). digest(day) = SHA-256 over the lines "origin\\tseq\\thash\\n" of that day's events
sorted by (origin, seq). HQ's own events (origin "hq:...") are left out: they reach the branch
by pull and HQ never lacks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

HQ_PREFIX = "hq:"
DAY_MS = 86_400_000


def utc_day(hlc: int) -> str:
    return datetime.fromtimestamp((hlc >> 16) / 1000, timezone.utc).date().isoformat()


def day_bounds_hlc(day: str) -> tuple[int, int]:
    """[lo, hi) HLC values of a UTC day."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=timezone.utc)
    lo_ms = int(start.timestamp() * 1000)
    return lo_ms << 16, (lo_ms + DAY_MS) << 16


def days_between(first: str, last: str) -> list[str]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def digests(rows: Iterable[tuple[str, int, str, int]]) -> dict[str, dict[str, object]]:
    """rows of (origin, seq, hash, hlc) -> {day: {"count", "digest"}}; HQ origins skipped."""
    by_day: dict[str, list[tuple[str, int, str]]] = {}
    for origin, seq, hash_, hlc in rows:
        if origin.startswith(HQ_PREFIX):
            continue
        by_day.setdefault(utc_day(hlc), []).append((origin, seq, hash_))
    out: dict[str, dict[str, object]] = {}
    for day, items in by_day.items():
        items.sort()
        h = hashlib.sha256()
        for origin, seq, hash_ in items:
            h.update(f"{origin}\t{seq}\t{hash_}\n".encode())
        out[day] = {"count": len(items), "digest": h.hexdigest()}
    return out


# -- the nightly job (every node) -------------------------------------------------------------
#
# At `[hq] nightly_at` (branch-local time), with APScheduler:
# 1. sync with HQ (push/pull as the link does);
# 2. close past days: tickets of an earlier branch-local day still waiting, called or serving
#    get a closing event (waiting -> ticket.cancelled, called -> ticket.no_show, serving ->
#    ticket.completed, each with reason "day_closed"), appended by the device that issued the
#    ticket, or by any device once the ticket is two days old or its issuer left the roster;
# 3. reconcile: per-UTC-day digests of the event set here and at HQ; for a day that differs,
#    HQ's inventory of that day says which (origin, seq, hash) it lacks and they are pushed again;
# 4. compact: events older than `retention_days`, on days whose digest equals HQ's and covered
#    by HQ's version vector, are deleted here, per origin as a prefix of its chain (the head
#    stays, so the chain goes on). Projection rows are kept, so the queue state and its hash
#    do not change; the compacted prefix is recorded in `hq_compaction`.

import logging  # noqa: E402
import sqlite3  # noqa: E402
from typing import TYPE_CHECKING, Any, Protocol  # noqa: E402

from sync.log import EVENT_COLUMNS, row_to_event  # noqa: E402
from sync.protocol import PeerError  # noqa: E402

from appliance import events as ev  # noqa: E402
from appliance.queue import business_day  # noqa: E402

if TYPE_CHECKING:  # for annotations only: HQ imports the digests above and must not load the node
    from sync.protocol import PeerClient

    from appliance.node import Node


class NightlySettings(Protocol):
    """The link settings the nightly job reads (appliance.uplink.UplinkSettings has them)."""

    @property
    def nightly_time(self) -> tuple[int, int]: ...
    @property
    def retention_days(self) -> int: ...
    @property
    def reconcile_days(self) -> int: ...
    @property
    def batch(self) -> int: ...


class HQLink(Protocol):
    """What the nightly job needs from the link to HQ (appliance.uplink.UplinkService is
    one): the node it serves, its settings, a signed client, HQ's version vector as last
    heard, and one push/pull round. The link imports the job; the job knows only this."""

    @property
    def node(self) -> Node | None: ...
    @property
    def settings(self) -> NightlySettings: ...
    @property
    def client(self) -> PeerClient | None: ...
    @property
    def hq_vv(self) -> dict[str, int]: ...
    async def sync_once(self) -> Any: ...


logger = logging.getLogger(__name__)

CLOSE_REASON = "day_closed"
ORPHAN_AFTER_DAYS = 2
MAX_DIGEST_DAYS = 400
JOB_ID = "smartq-nightly"


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS hq_compaction (origin TEXT PRIMARY KEY, through_seq INTEGER NOT NULL,"
                 " through_hash TEXT NOT NULL, through_hlc INTEGER NOT NULL, at_ms INTEGER NOT NULL)")


def close_past_days(conn: sqlite3.Connection, node: Node, now_ms: int) -> int:
    """Writer thread: closing events for open tickets of earlier days (see above); returns how many."""
    model = node.branch.model(conn, writer=True)
    today = business_day(now_ms, model.tz)
    orphan_day = business_day(now_ms - ORPHAN_AFTER_DAYS * DAY_MS, model.tz)
    me = node.config.device_id
    closed = 0
    rows = conn.execute("SELECT id, status, counter, issued_by, day FROM tickets WHERE day < ?"
                        " AND status IN ('waiting', 'called', 'serving') ORDER BY id", (today,)).fetchall()
    for ticket, status, counter, issued_by, day in rows:
        if not (issued_by == me or issued_by not in model.roster or day <= orphan_day):
            continue
        if status == "waiting":
            node.branch.append_ticket(conn, ev.TICKET_CANCELLED, {"ticket": ticket, "reason": CLOSE_REASON})
        elif status == "called":
            node.branch.append_ticket(conn, ev.TICKET_NO_SHOW, {"ticket": ticket, "counter": counter, "reason": CLOSE_REASON})
        else:
            node.branch.append_ticket(conn, ev.TICKET_COMPLETED, {"ticket": ticket, "counter": counter, "reason": CLOSE_REASON})
        closed += 1
    return closed


def local_rows(conn: sqlite3.Connection, first: str, last: str) -> list[tuple[str, int, str, int]]:
    lo, _ = day_bounds_hlc(first)
    _, hi = day_bounds_hlc(last)
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT origin, seq, hash, hlc FROM events WHERE hlc >= ? AND hlc < ?", (lo, hi))]


def oldest_day(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT min(hlc) FROM events WHERE origin NOT LIKE 'hq:%'").fetchone()
    return utc_day(row[0]) if row and row[0] is not None else None


def compact(conn: sqlite3.Connection, *, cutoff_day: str, good_days: set[str], hq_vv: dict[str, int],
            now_ms: int) -> dict[str, int]:
    """Writer thread: delete whole UTC days of events, oldest first, while the day is before
    `cutoff_day`, its digest agreed with HQ's and HQ's vv covers all its events. Since an
    origin's HLC grows with its seq, what goes is a prefix of each origin's chain; the heads
    stay. Returns {origin: events deleted}."""
    _create_tables(conn)
    cutoff_lo, _ = day_bounds_hlc(cutoff_day)
    top: dict[str, dict[str, int]] = {}
    for origin, seq, hlc in conn.execute("SELECT origin, seq, hlc FROM events WHERE hlc < ?", (cutoff_lo,)):
        day = top.setdefault(utc_day(hlc), {})
        day[origin] = max(day.get(origin, 0), seq)
    last = None
    for day in sorted(top):
        acked = all(origin.startswith(HQ_PREFIX) or seq <= int(hq_vv.get(origin, 0)) for origin, seq in top[day].items())
        if day not in good_days or not acked:
            break
        last = day
    if last is None:
        return {}
    _, until = day_bounds_hlc(last)
    deleted: dict[str, int] = {}
    for origin, n, through in conn.execute(
            "SELECT origin, count(*), max(seq) FROM events WHERE hlc < ? GROUP BY origin", (until,)).fetchall():
        hash_, hlc = conn.execute("SELECT hash, hlc FROM events WHERE origin = ? AND seq = ?", (origin, through)).fetchone()
        conn.execute("DELETE FROM events WHERE origin = ? AND seq <= ?", (origin, through))
        conn.execute("INSERT INTO hq_compaction (origin, through_seq, through_hash, through_hlc, at_ms)"
                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE SET through_seq = excluded.through_seq,"
                     " through_hash = excluded.through_hash, through_hlc = excluded.through_hlc, at_ms = excluded.at_ms",
                     (origin, through, hash_, hlc, now_ms))
        deleted[origin] = n
    return deleted


def compaction_floors(conn: sqlite3.Connection) -> dict[str, int]:
    """{origin: last compacted seq} (empty before the first compaction)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'hq_compaction'").fetchone():
        return {}
    return {o: s for o, s in conn.execute("SELECT origin, through_seq FROM hq_compaction")}


class NightlyJob:
    """The nightly reconcile of one node with HQ, scheduled by APScheduler (or run directly)."""

    def __init__(self, uplink: HQLink) -> None:
        self.uplink = uplink
        self.scheduler: Any = None
        self.last: dict[str, Any] | None = None
        self._running = False

    @property
    def node(self) -> Node:
        node = self.uplink.node
        assert node is not None, "the link starts its nightly job once it has a node"
        return node

    def start(self, scheduler: Any = None) -> None:
        """Schedule `run` daily at `nightly_at` in the branch's time zone (AsyncIOScheduler on
        the running loop; a test may pass its own scheduler)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        hour, minute = self.uplink.settings.nightly_time
        tz = self.node.config.tz
        self.scheduler = scheduler or AsyncIOScheduler(timezone=tz)
        self.scheduler.add_job(self.run, CronTrigger(hour=hour, minute=minute, timezone=tz), id=JOB_ID,
                               max_instances=1, coalesce=True, misfire_grace_time=6 * 3600, replace_existing=True)
        if not self.scheduler.running:
            self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def next_run(self) -> Any:
        job = self.scheduler.get_job(JOB_ID) if self.scheduler is not None else None
        return getattr(job, "next_run_time", None)

    def view(self) -> dict[str, Any]:
        nxt = self.next_run()
        return {"next_run": nxt.isoformat() if nxt is not None else None, "last": self.last}

    async def run(self, now_ms: int | None = None) -> dict[str, Any]:
        """The whole job; `now_ms` injected by tests. Never raises (the report says what failed)."""
        node = self.node
        now = node.clock.wall_ms() if now_ms is None else now_ms
        report: dict[str, Any] = {"at_ms": now, "closed": 0, "days_checked": 0, "days_differing": [],
                                  "repushed": 0, "days_repaired": [], "compacted": {}, "error": None}
        if self._running:
            report["error"] = "already running"
            return report
        self._running = True
        try:
            report["closed"] = await node.write(lambda c: close_past_days(c, node, now))
            await self.uplink.sync_once()
            good = await self.reconcile(now, report)
            cutoff = utc_day((now - self.uplink.settings.retention_days * DAY_MS) << 16)
            hq_vv = dict(self.uplink.hq_vv)
            report["compacted"] = await node.write(
                lambda c: compact(c, cutoff_day=cutoff, good_days=good, hq_vv=hq_vv, now_ms=now))
            if report["compacted"]:
                logger.info("compacted events older than %s: %s", cutoff, report["compacted"])
        except PeerError as err:
            report["error"] = f"HQ unreachable: {err}"
            logger.warning("nightly job: %s", report["error"])
        except Exception as err:  # top of a scheduled job
            logger.exception("nightly job failed")
            report["error"] = repr(err)
        finally:
            self._running = False
        self.last = {k: v for k, v in report.items()}
        return report

    async def reconcile(self, now_ms: int, report: dict[str, Any]) -> set[str]:
        """Compare day digests with HQ, re-push what HQ lacks; returns the days that agree."""
        node, client = self.node, self.uplink.client
        assert client is not None
        today = utc_day(now_ms << 16)
        recent = utc_day((now_ms - (self.uplink.settings.reconcile_days - 1) * DAY_MS) << 16)
        oldest = await node.read(oldest_day) or recent
        first = min(oldest, recent)
        days = days_between(first, today)[-MAX_DIGEST_DAYS:]
        first = days[0]
        theirs = (await client.request("POST", "/sync/v1/digests", {"from": first, "to": today}))["days"]
        ours = digests(await node.read(lambda c: local_rows(c, first, today)))
        report["days_checked"] = len(days)
        good: set[str] = set()
        for day in days:
            mine, hq = ours.get(day), theirs.get(day)
            if mine == hq:
                good.add(day)
                continue
            report["days_differing"].append(day)
            inventory = (await client.request("POST", "/sync/v1/inventory", {"day": day}))["events"]
            at_hq = {(o, s, h) for o, s, h in inventory}
            lacking = sorted((o, s) for o, s, h, _ in await node.read(lambda c: local_rows(c, day, day))
                             if not o.startswith(HQ_PREFIX) and (o, s, h) not in at_hq)
            if lacking:
                pushed = await self._push_keys(lacking)
                report["repushed"] += pushed
                logger.info("nightly: HQ lacked %d events of %s; pushed again (%d accepted)", len(lacking), day, pushed)
            # Events only HQ has (this node compacted them, or a peer's never reached us) are
            # fine: the link's pull brings what our vv lacks.
            again = (await client.request("POST", "/sync/v1/digests", {"from": day, "to": day}))["days"].get(day)
            if again == digests(await node.read(lambda c: local_rows(c, day, day))).get(day):
                good.add(day)
                report["days_repaired"].append(day)
        return good

    async def _push_keys(self, keys: list[tuple[str, int]]) -> int:
        node, client = self.node, self.uplink.client
        assert client is not None
        accepted = 0
        batch = self.uplink.settings.batch
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]

            def load(c: sqlite3.Connection, chunk: list[tuple[str, int]] = chunk) -> list[dict[str, Any]]:
                return [row_to_event(r).to_dict() for o, s in chunk for r in c.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE origin = ? AND seq = ?", (o, s))]
            answer = await client.push(await node.read(load))
            accepted += int(answer.get("accepted", 0))
        return accepted
