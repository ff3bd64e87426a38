"""Reassign between offices: a manager moves a booking, or a ticket waiting at one branch, to
another branch or service of the same organization, keeping its place (docs/console.md).

- A **booking** keeps its slot start: the receiving branch must have that slot on its grid
  (open, not blocked) with room; the row moves, the old branch gets ``booking.cancelled``
  (``moved_to``) and the new one ``booking.created`` (``moved_from``) with the same code, so its
  kiosk checks the code in; the holder is notified.
- A **waiting ticket** leaves its branch's line by HQ's ``ticket.moved`` (folded at the branch like
  a cancel, void if a counter called it meanwhile, docs/conflicts.md) and becomes a booking at the
  receiving branch whose start is the ticket's effective time (its arrival, or its booked slot),
  so when the citizen checks the new code in at that branch's kiosk, the ticket sorts where the
  original arrival puts it. The citizen gets the code by SMS when the ticket has a phone number.

Everything happens inside the caller's write transaction, with the outbox events and
notifications (hq/outbox.py, hq/notifications.py).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from appliance import events as ev
from hq import booking, live, notifications, outbox, tenants
from hq.booking import BookingContext
from hq.errors import conflict, not_found

#: A moved ticket's booking stays open for check-in at least this long after the move.
MOVED_TICKET_GRACE_S = 3600


def _target(conn: sqlite3.Connection, org_id: str, to_branch: str, to_service: str) -> tuple[sqlite3.Row, sqlite3.Row]:
    """The receiving branch (same organization) and service (offered there)."""
    branch = conn.execute("SELECT * FROM branches WHERE id = ?", (to_branch,)).fetchone()
    if branch is None or branch["org_id"] != org_id:
        raise not_found("branch")  # another tenant's branch is neither used nor revealed
    service = conn.execute("SELECT * FROM services WHERE branch_id = ? AND id = ?", (to_branch, to_service)).fetchone()
    if service is None or not service["enabled"]:
        raise conflict("the service is not offered at that branch", "not_offered")
    return branch, service


def move_booking(conn: sqlite3.Connection, ctx: BookingContext, from_branch: str, code: str, to_branch: str,
                 to_service: str) -> dict[str, Any]:
    """Move a booked, not yet checked-in booking of ``from_branch``; returns the moved row."""
    row = conn.execute("SELECT * FROM bookings WHERE code = ? AND branch_id = ?", (code, from_branch)).fetchone()
    if row is None:
        raise not_found("booking")
    if row["status"] != "booked":
        raise conflict("only a booked appointment can be moved", "not_booked")
    if conn.execute("SELECT 1 FROM tickets WHERE branch_id = ? AND booking_code = ?", (from_branch, code)).fetchone():
        raise conflict("the booking is checked in: move its ticket instead", "checked_in")
    old = tenants.get_branch(conn, from_branch)
    if (to_branch, to_service) == (from_branch, row["service_id"]):
        raise conflict("the booking is already there", "same_place")
    branch, service = _target(conn, old["org_id"], to_branch, to_service)
    start = row["slot_start"]
    day = datetime.fromtimestamp(start, ZoneInfo(branch["timezone"])).date()
    slot = booking.slot_at(conn, branch, service, day, start)
    if slot is None:
        raise conflict("that branch has no slot at this time (closed, blocked or another slot length)", "no_slot")
    end, capacity = slot
    if not booking.take_place(conn, to_branch, to_service, start, capacity):
        raise conflict("that slot is fully booked at that branch", "slot_full")
    moved = conn.execute("UPDATE bookings SET branch_id = ?, service_id = ?, slot_end = ?, updated_at = ? WHERE id = ?"
                         " AND status = 'booked' AND branch_id = ? AND service_id = ? AND slot_start = ? RETURNING *",
                         (to_branch, to_service, end, ctx.now, row["id"], from_branch, row["service_id"], start)).fetchone()
    if moved is None:  # changed by a concurrent request since we read it: the place taken is rolled back
        raise conflict("the booking was changed meanwhile, look again", "not_booked")
    booking.release_places(conn, from_branch, row["service_id"], start)
    now_ms = ctx.now * 1000
    if to_branch == from_branch:  # another service of the same branch: the branch's booking changes
        outbox.emit(conn, ctx.key, to_branch, ev.BOOKING_RESCHEDULED, booking._event_payload(moved), now_ms)
    else:
        outbox.emit(conn, ctx.key, from_branch, ev.BOOKING_CANCELLED,
                    booking._event_payload(row) | {"status": "cancelled", "moved_to": to_branch}, now_ms)
        outbox.emit(conn, ctx.key, to_branch, ev.BOOKING_CREATED,
                    booking._event_payload(moved) | {"moved_from": from_branch}, now_ms)
    notifications.enqueue_for_booking(conn, moved, branch, "moved_office", f"moved:{code}:{to_branch}:{ctx.now}",
                                      ctx.now, service_names=service["names"])
    return dict(moved)


def move_ticket(conn: sqlite3.Connection, ctx: BookingContext, from_branch: str, ticket_id: str, to_branch: str,
                to_service: str) -> dict[str, Any]:
    """Move a ticket waiting today at ``from_branch``; returns the booking made for it at ``to_branch``."""
    t = conn.execute("SELECT * FROM tickets WHERE branch_id = ? AND id = ?", (from_branch, ticket_id)).fetchone()
    if t is None or t["issued_ms"] is None:
        raise not_found("ticket")
    old = tenants.get_branch(conn, from_branch)
    today = datetime.fromtimestamp(ctx.now, ZoneInfo(old["timezone"])).strftime("%Y%m%d")
    if live.status_of(t) != "waiting" or t["day"] != today:
        raise conflict("only a ticket waiting today can be moved", "not_waiting")
    if to_branch == from_branch:
        raise conflict("to move a ticket to another service of this branch, transfer it at a counter", "same_branch")
    branch, service = _target(conn, old["org_id"], to_branch, to_service)
    start = int(t["effective_ms"] if t["effective_ms"] is not None else t["issued_ms"]) // 1000
    end = max(start + service["slot_minutes"] * 60, ctx.now + MOVED_TICKET_GRACE_S)
    languages = json.loads(branch["languages"])
    language = t["language"] if t["language"] in languages else languages[0]
    row = booking._insert_booking(conn, ctx, (to_branch, to_service, start, end, "", t["phone"], None, language))
    booking.add_places(conn, to_branch, to_service, start)  # keeps its place in line: no capacity check
    # What HQ had of the ticket when it decided: a counter's call HQ had not seen is concurrent
    # with the move, and the call wins at the branch (docs/conflicts.md).
    heads = conn.execute("SELECT origin, max(seq), max(hlc) FROM events WHERE branch = ? AND subject = ?"
                         " GROUP BY origin", (from_branch, ticket_id)).fetchall()
    seen = {r[0]: r[1] for r in heads}
    now_ms = ctx.now * 1000
    # The move comes after what HQ saw of the ticket in the branch's order too (the HLC's receive
    # rule): the branch folds in (hlc, origin, seq) order, and a move stamped by HQ's clock alone
    # (whole seconds, or a clock behind the branch's) could sort before the ticket's own issue,
    # where it is an event about a ticket not issued yet and changes nothing.
    outbox.emit(conn, ctx.key, from_branch, ev.TICKET_MOVED, {"ticket": ticket_id, "to_branch": to_branch,
                                                              "to_service": to_service, "booking": row["code"],
                                                              "seen": seen}, now_ms,
                after_hlc=max((int(r[2]) for r in heads), default=0))
    outbox.emit(conn, ctx.key, to_branch, ev.BOOKING_CREATED,
                booking._event_payload(row) | {"moved_from": from_branch}, now_ms)
    from hq.ingest import refold_tickets
    refold_tickets(conn, [(from_branch, ticket_id)])  # HQ's row: the ticket left the line here
    if t["phone"]:
        names = json.loads(service["names"])
        notifications.enqueue_ticket_moved(conn, branch, ticket_id, t["label"] or ticket_id, row["code"],
                                           names.get(language) or next(iter(names.values()), to_service),
                                           t["phone"], ctx.now, language)
    return row
