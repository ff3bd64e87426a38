"""Ingest signed branch events, exactly once, and keep the HQ ticket projection.

``ingest_branch_events(hq, envelopes)`` is the hook the branch link (replication protocol)
calls with whatever it received. Each envelope is checked against the public key of the device
registered at HQ under ``origin`` (and that device must belong to ``branch``); events are stored
in ``events`` keyed (origin, seq) with INSERT OR IGNORE, so a replayed batch changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance import events as ev
from appliance.projection import subject_of
from hq import aggregates, booking, engine, live, notifications
from hq.core import HQ
from hq.signing import KeyError_, parse_public_key, to_event
from sync import verify
from sync.log import ChainRuns
from sync.envelope import GENESIS_PREV, INT_MAX, INT_MIN, Event, MalformedEvent, canonical_json

logger = logging.getLogger(__name__)



@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    held: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "held": self.held, "rejected": self.rejected}

    def refuse(self, ref: dict[str, Any], refusal: verify.Refusal) -> None:
        self.rejected.append(ref | {"reason": refusal.code, "message": refusal.message})


def ingest_sync(conn: sqlite3.Connection, envelopes: list[Any], *, now: int, turn_near_places: int,
                branch: str | None = None, now_ms: int | None = None) -> IngestResult:
    """The whole ingest inside one write transaction (called on the writer thread).

    The rules are the branch devices' (sync.verify), applied in the same order; with ``branch``
    (the branch link), events of any other branch are refused. HQ stores each origin's chain
    without holes: an event whose predecessor HQ lacks is *held* (not stored, counted), and the
    branch offers it again after its predecessor (it pushes from HQ's version vector); an event
    too far in the future is refused as `future` and offered again later (the node's quarantine).
    """
    result = IngestResult()
    now_ms = now * 1000 if now_ms is None else now_ms
    keys: dict[tuple[str, str], tuple[Ed25519PublicKey, int | None] | None] = {}
    touched: dict[str, set[str]] = {}
    folds: set[tuple[str, str]] = set()
    restaff: set[tuple[str, str]] = set()
    agg = aggregates.Aggregator(conn)
    parsed: list[tuple[Event, dict[str, Any]]] = []
    for e in envelopes:
        ref = {"origin": e.get("origin") if isinstance(e, dict) else None, "seq": e.get("seq") if isinstance(e, dict) else None}
        if not (isinstance(ref["seq"], int) and verify_int(ref["seq"])):
            ref["seq"] = None  # never echo an integer we could not store
        try:
            parsed.append((to_event(e), ref))
        except MalformedEvent as err:
            result.refuse(ref, verify.malformed(str(err)))
    # Each origin's events in chain order, whatever order the batch came in.
    parsed.sort(key=lambda pair: (pair[0].branch, pair[0].origin, pair[0].seq))
    heads: dict[tuple[str, str], tuple[int, str | None]] = {}
    above_head: set[tuple[str, str]] = set()
    # One signature check per chain run of the batch, as a node does (sync.log.ChainRuns).
    batch_branch = parsed[0][0].branch if parsed else ""
    runs = ChainRuns([p[0] for p in parsed], lambda origin: _key_of(conn, keys, batch_branch, origin))
    held = _held_hashes(conn, [p[0] for p in parsed])
    for index, (event, ref) in enumerate(parsed):
        origin = event.origin
        if branch is not None and event.branch != branch:
            result.refuse(ref, verify.Refusal("wrong_branch", f"belongs to branch {event.branch!r}"))
            continue
        where = (event.branch, origin)
        _key_of(conn, keys, event.branch, origin)
        known = keys[where]
        at = (event.branch, origin, event.seq)
        stored = held[at] if at in held else _stored_at(conn, held, at)
        if stored is not None:
            if verify.equivocates(event, stored):
                result.refuse(ref, verify.EQUIVOCATION)
            else:
                result.duplicates += 1
            continue
        refusal = verify.authentic(event, branch=event.branch, key=known[0] if known else None,
                                   revoked_after=known[1] if known else None,
                                   verified=event.branch == batch_branch and runs.verified(index))
        if refusal is not None:
            result.refuse(ref, refusal)
            continue
        if verify.too_far_ahead(event, now_ms):
            result.refuse(ref, verify.FUTURE)
            continue
        if where not in heads:
            heads[where] = chain_head(conn, event.branch, origin)
            top = conn.execute("SELECT max(seq) FROM events WHERE branch = ? AND origin = ?", (event.branch, origin)).fetchone()[0]
            if top is not None and top > heads[where][0]:
                above_head.add(where)  # events stored above a hole (a restore, or stored before chains were checked)
        head_seq, head_hash = heads[where]
        predecessor = _stored_hash(conn, event, event.seq - 1, head_seq, head_hash)
        if predecessor is None:
            result.held += 1
            continue
        if not verify.chained(event, predecessor):
            result.refuse(ref, verify.BROKEN_CHAIN)
            continue
        if event.seq < head_seq:  # a hole below the head (HQ restored from an older backup)
            successor = conn.execute("SELECT envelope FROM events WHERE branch = ? AND origin = ? AND seq = ?",
                                     (event.branch, origin, event.seq + 1)).fetchone()
            if successor is not None and orjson.loads(successor[0]).get("prev") != event.hash:
                result.refuse(ref, verify.BROKEN_CHAIN)
                continue
        envelope = event.to_dict()
        subject = subject_of(event)
        conn.execute("INSERT INTO events (origin, seq, hlc, type, branch, envelope, received_at, hash, subject)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (origin, event.seq, event.hlc, event.type, event.branch,
                      canonical_json(envelope).decode("utf-8"), now, event.hash, subject))
        held[at] = event.hash  # the same event twice in one batch: the second is a duplicate
        if subject is not None:
            folds.add((event.branch, subject))
        elif event.type in aggregates.COUNTER_TYPES and isinstance(event.payload, dict):
            restaff.update(agg.counter_event(event.branch, event.type, event.hlc, event.payload))
        if event.seq == head_seq + 1:
            heads[where] = (event.seq, event.hash)
            if where in above_head and conn.execute("SELECT 1 FROM events WHERE branch = ? AND origin = ? AND seq = ?",
                            (event.branch, origin, event.seq + 1)).fetchone():
                # stored before HQ checked chains (a hole since filled): move past it
                advance_head(conn, event.branch, origin)
                heads[where] = chain_head(conn, event.branch, origin)
        _project(conn, envelope, now)
        result.accepted += 1
        touched.setdefault(event.branch, set()).add(origin)
    refold_tickets(conn, sorted(folds), agg=agg)
    for branch_id, ticket in sorted(restaff - folds):
        agg.ticket(branch_id, ticket)  # who called it may have changed (a counter event arrived late)
    agg.flush()
    for branch_id, origins in touched.items():
        for origin in origins:
            advance_head(conn, branch_id, origin)
        _turn_near(conn, branch_id, now, turn_near_places)
    return result


def _held_hashes(conn: sqlite3.Connection, events: list[Event]) -> dict[tuple[str, str, int], str | None]:
    """The hashes HQ holds at the batch's (branch, origin, seq): one range query per origin
    instead of one query per event. An origin whose seqs in the batch are far apart (more than
    the batch could fill) is looked up event by event instead, so a batch cannot make HQ read a
    device's whole chain."""
    spans: dict[tuple[str, str], list[int]] = {}
    for e in events:
        spans.setdefault((e.branch, e.origin), []).append(e.seq)
    held: dict[tuple[str, str, int], str | None] = {}
    for (b, origin), seqs in spans.items():
        lo, hi = min(seqs), max(seqs)
        if hi - lo > 4 * len(events):
            continue
        for seq in seqs:
            held[(b, origin, seq)] = None
        for seq, hash_ in conn.execute("SELECT seq, hash FROM events WHERE branch = ? AND origin = ? AND seq >= ?"
                                       " AND seq <= ?", (b, origin, lo, hi)):
            held[(b, origin, seq)] = hash_
    return held


def _stored_at(conn: sqlite3.Connection, held: dict[tuple[str, str, int], str | None],
               at: tuple[str, str, int]) -> str | None:
    row = conn.execute("SELECT hash FROM events WHERE branch = ? AND origin = ? AND seq = ?", at).fetchone()
    held[at] = row[0] if row else None
    return held[at]


def _key_of(conn: sqlite3.Connection, keys: dict[tuple[str, str], tuple[Ed25519PublicKey, int | None] | None],
            branch: str, origin: str) -> Ed25519PublicKey | None:
    """The public key of `origin` registered at HQ for `branch` (cached in `keys` for the batch)."""
    where = (branch, origin)
    if where not in keys:
        # Device ids are unique per organization: the device of the event's branch.
        row = conn.execute("SELECT public_key, revoked_after_seq FROM devices WHERE id = ? AND branch_id = ?",
                           (origin, branch)).fetchone()
        try:
            keys[where] = (parse_public_key(row[0]), row[1]) if row else None
        except KeyError_:
            keys[where] = None
    known = keys[where]
    return known[0] if known else None


def _stored_hash(conn: sqlite3.Connection, event: Event, seq: int, head_seq: int, head_hash: str | None) -> str | None:
    """The hash of the origin's event `seq` as HQ holds it (genesis before 1, None if missing)."""
    if seq == head_seq:
        return head_hash
    if seq == 0:
        return GENESIS_PREV
    if seq > head_seq:
        return None
    row = conn.execute("SELECT hash FROM events WHERE branch = ? AND origin = ? AND seq = ?",
                       (event.branch, event.origin, seq)).fetchone()
    return row[0] if row else None


def verify_int(value: int) -> bool:
    return INT_MIN <= value <= INT_MAX


def chain_head(conn: sqlite3.Connection, branch_id: str, origin: str) -> tuple[int, str | None]:
    """(seq, hash) of the origin's contiguous head at HQ; (0, genesis) before its first. The hash
    is None when the head event itself was lost (a restore): its successors wait for it."""
    row = conn.execute("SELECT h.seq, e.hash FROM sync_heads h LEFT JOIN events e ON e.branch = h.branch AND"
                       " e.origin = h.origin AND e.seq = h.seq WHERE h.branch = ? AND h.origin = ?",
                       (branch_id, origin)).fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_PREV)


def advance_head(conn: sqlite3.Connection, branch_id: str, origin: str) -> int:
    """Move the origin's contiguous head over every stored successor; returns the head."""
    row = conn.execute("SELECT seq FROM sync_heads WHERE branch = ? AND origin = ?", (branch_id, origin)).fetchone()
    head = row[0] if row else 0
    # The first missing seq above the head, found with one indexed query.
    nxt = conn.execute(
        "SELECT min(e.seq) FROM events e WHERE e.branch = ? AND e.origin = ? AND e.seq >= ?"
        " AND NOT EXISTS (SELECT 1 FROM events n WHERE n.branch = e.branch AND n.origin = e.origin"
        " AND n.seq = e.seq + 1)", (branch_id, origin, head + 1)).fetchone()[0]
    if nxt is None or not conn.execute("SELECT 1 FROM events WHERE branch = ? AND origin = ? AND seq = ?",
                                       (branch_id, origin, head + 1)).fetchone():
        return head
    conn.execute("INSERT INTO sync_heads (origin, branch, seq) VALUES (?, ?, ?)"
                 " ON CONFLICT(branch, origin) DO UPDATE SET seq = excluded.seq", (origin, branch_id, nxt))
    return nxt


def _project(conn: sqlite3.Connection, e: dict[str, Any], now: int) -> None:
    """What only the issue says (contact, language, status token, booking) goes to HQ's ticket
    row as it arrives; the rest of the row is the branch fold's (refold_tickets). A check-in
    reaching HQ after its booking was marked a no-show undoes the mark."""
    p, kind = e["payload"], e["type"]
    ticket = p.get("ticket")
    if kind != ev.TICKET_ISSUED or not isinstance(ticket, str):
        return
    branch = e["branch"]
    day = ticket.split("-")[0] if "-" in ticket else None
    conn.execute("INSERT INTO tickets (branch_id, id) VALUES (?, ?) ON CONFLICT (branch_id, id) DO NOTHING", (branch, ticket))
    conn.execute(
        "UPDATE tickets SET service = COALESCE(service, ?), day = ?, label = ?, priority = ?, issued_ms = ?, booking_code = ?,"
        " phone = ?, language = ?, status_token = ? WHERE branch_id = ? AND id = ?",
        (_s(p.get("service")), (_s(p.get("day")) or day or "").replace("-", "") or None, _s(p.get("label")),
         p.get("priority") if isinstance(p.get("priority"), int) else 0, e["hlc"] >> 16, _s(p.get("booking")),
         _s(p.get("phone")) or _sealed_phone(conn, p.get("phone_sealed")), _s(p.get("language")),
         live.valid_token(p.get("status_token")), branch, ticket))
    if _s(p.get("booking")):
        booking.checked_in(conn, branch, p["booking"], now)
    shown = p.get("estimate")
    if isinstance(shown, dict):  # the wait shown at issue (issue 14), for the estimate-error figures
        est = {k: v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10 ** 7 else None
               for k in ("p50", "p10", "p90") for v in (shown.get(k),)}
        conn.execute("UPDATE tickets SET est_p50 = ?, est_p10 = ?, est_p90 = ? WHERE branch_id = ? AND id = ?",
                     (est["p50"], est["p10"], est["p90"], branch, ticket))


FOLDED = ("service", "label", "priority", "issued_ms", "effective_ms", "counter", "called_ms", "started_ms",
          "completed_ms", "no_show_ms", "cancelled_ms")


def refold_tickets(conn: sqlite3.Connection, tickets: Iterable[tuple[str, str]], *,
                   agg: aggregates.Aggregator | None = None, aggregate: bool = True) -> int:
    """Set each (branch, ticket)'s folded columns from the branch fold of its stored events, and
    bring the analytics aggregates in line with it (hq/aggregates.py) unless ``aggregate`` is false
    (migrations older than the aggregate tables)."""
    own_agg = aggregate and agg is None  # a caller's aggregator is flushed by the caller
    if own_agg:
        agg = aggregates.Aggregator(conn)
    n = 0
    wanted = sorted(set(tickets))
    for lo in range(0, len(wanted), 400):  # a few queries per chunk, not a few per ticket
        chunk = wanted[lo:lo + 400]
        by_branch: dict[str, list[str]] = {}
        for b, t in chunk:
            by_branch.setdefault(b, []).append(t)
        stored: dict[tuple[str, str], list[str]] = {}
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for b, ids in by_branch.items():
            marks = ", ".join("?" * len(ids))
            for subject, envelope in conn.execute(
                    f"SELECT subject, envelope FROM events WHERE branch = ? AND subject IN ({marks})", (b, *ids)):
                stored.setdefault((b, subject), []).append(envelope)
            # HQ's own events about these tickets (ticket.moved), as the branch folds them too.
            for subject, envelope in conn.execute(
                    f"SELECT subject, envelope FROM outbox WHERE branch_id = ? AND subject IN ({marks})", (b, *ids)):
                stored.setdefault((b, subject), []).append(envelope)
            for r in conn.execute(f"SELECT * FROM tickets WHERE branch_id = ? AND id IN ({marks})", (b, *ids)):
                rows[(b, r["id"])] = dict(r)
        for branch, ticket in chunk:
            try:
                fields = engine.ticket_fields([engine.stored_event(r) for r in stored.get((branch, ticket), [])])
            except (KeyError, TypeError, ValueError, AttributeError, MalformedEvent) as err:
                # a signed but ill-formed payload: the node folds nothing from it either
                logger.warning("not folding ticket %s/%s at HQ: %r", branch, ticket, err)
                continue
            if fields is None:
                continue
            row = rows.get((branch, ticket))
            if row is None:
                conn.execute("INSERT INTO tickets (branch_id, id) VALUES (?, ?) ON CONFLICT (branch_id, id) DO NOTHING",
                             (branch, ticket))
                row = dict(conn.execute("SELECT * FROM tickets WHERE branch_id = ? AND id = ?", (branch, ticket)).fetchone())
            changes = {c: fields[c] for c in FOLDED if row[c] != fields[c]}
            if aggregate and agg is not None:
                new_agg = agg.row(branch, row | changes)
                if new_agg is not aggregates.UNCHANGED:
                    changes["agg"] = new_agg
            if changes:  # one UPDATE with what changed, none when the fold and the counts stand
                conn.execute(f"UPDATE tickets SET {', '.join(f'{c} = ?' for c in changes)} WHERE branch_id = ? AND id = ?",
                             (*changes.values(), branch, ticket))
            n += 1
    if own_agg and agg is not None:
        agg.flush()
    return n


def _sealed_phone(conn: sqlite3.Connection, sealed: Any) -> str | None:
    """A phone number the kiosk sealed to HQ's personal-data key (None once the key is destroyed)."""
    if not isinstance(sealed, str):
        return None
    from hq.personal import open_value
    return open_value(conn, sealed)


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _turn_near(conn: sqlite3.Connection, branch_id: str, now: int, places: int) -> None:
    branch = conn.execute("SELECT * FROM branches WHERE id = ?", (branch_id,)).fetchone()
    if branch is None or places <= 0:
        return
    today = datetime.fromtimestamp(now, ZoneInfo(branch["timezone"])).strftime("%Y%m%d")
    for t in live.front_of_queues(conn, branch_id, today, places):
        phone = t["phone"]
        if not phone and t["booking_code"]:
            b = conn.execute("SELECT phone FROM bookings WHERE code = ?", (t["booking_code"],)).fetchone()
            phone = b[0] if b else None
        if phone:
            notifications.enqueue_turn_near(conn, branch, t["id"], t["label"] or t["id"], phone, t["position"] - 1, now,
                                            t["language"])


async def ingest_branch_events(hq: HQ, envelopes: list[dict[str, Any]], *, branch: str | None = None) -> IngestResult:
    """Verify and store branch events exactly once; idempotent. The branch link calls this
    with the branch its caller signed for."""
    if not isinstance(envelopes, list):
        raise TypeError("envelopes must be a list of envelope dicts")
    now, now_ms, places = hq.now(), hq.now_ms(), hq.settings.turn_near_places
    result = await hq.db.write(lambda c: ingest_sync(c, envelopes, now=now, now_ms=now_ms, turn_near_places=places,
                                                     branch=branch))
    if hq.metrics is not None:
        _count(hq, branch, envelopes, result, now_ms)
    if result.accepted:
        hq.wake_notifier()
        hq.branches_changed({e["branch"] for e in envelopes if isinstance(e, dict) and isinstance(e.get("branch"), str)})
    if result.rejected:
        logger.warning("rejected %d branch events: %s", len(result.rejected), result.rejected[:5])
    return result


def _count(hq: HQ, branch: str | None, envelopes: list[Any], result: IngestResult, now_ms: int) -> None:
    """Events per branch and result, and the link's lag (the oldest event's age) for /metrics."""
    hlcs = [e["hlc"] for e in envelopes if isinstance(e, dict) and isinstance(e.get("hlc"), int) and e["hlc"] >= 0]
    if branch is None:
        named = {e["branch"] for e in envelopes if isinstance(e, dict) and isinstance(e.get("branch"), str)}
        branch = named.pop() if len(named) == 1 else "mixed"
    hq.metrics.ingested(branch, result.accepted, result.duplicates, result.held, len(result.rejected),
                        (min(hlcs) >> 16) if hlcs else None, now_ms)
