"""The notification outbox: rows written in the same transaction as the change they announce.

Each row has a unique idempotency key (``confirm:<code>``, ``reminder:<code>:<start>``, ...),
so enqueueing twice is a no-op, and the gateways pass the key on (Message-ID / Idempotency-Key)
so a retried send after a lost acknowledgement does not reach the person twice.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hq.pages.i18n import N_, translator

# Msgids of the web catalogs (hq/pages/locale): each message goes out in the citizen's language.
TEXTS = {
    "confirmation": (N_("Your booking {code}"), N_("Booking {code} confirmed: {service} at {branch}, {when}. "
                                                   "Show code {code} or the QR at the kiosk.")),
    "reminder": (N_("Reminder: booking {code} tomorrow"), N_("Reminder: {service} at {branch}, {when}. Booking code {code}.")),
    "reschedule": (N_("Booking {code} moved"), N_("Booking {code} moved to {when} ({service} at {branch}).")),
    "cancellation": (N_("Booking {code} cancelled"), N_("Booking {code} ({service} at {branch}, {when}) is cancelled.")),
    "moved_office": (N_("Booking {code} moved to {branch}"), N_("Booking {code} was moved to {branch}: {service},"
                                                                " {when}. Show code {code} at the kiosk there.")),
    "ticket_moved": (N_("Ticket {label} moved to {branch}"), N_("Ticket {label} was moved to {branch} ({service})."
                                                                " At its kiosk, enter code {code}: you keep your place.")),
    "turn_near": (N_("Your turn is near"), N_("Ticket {label}: {ahead} people ahead of you at {branch}. "
                                              "Please come to the waiting area.")),
}


def _insert(conn: sqlite3.Connection, idem_key: str, kind: str, channel: str, recipient: str, subject: str,
            body: str, booking_id: int | None, now: int) -> bool:
    cur = conn.execute(
        "INSERT INTO notifications (idem_key, kind, channel, recipient, subject, body, booking_id,"
        " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING",
        (idem_key, kind, channel, recipient, subject, body, booking_id, now, now))
    return cur.rowcount == 1


def enqueue_for_booking(conn: sqlite3.Connection, booking: sqlite3.Row, branch: sqlite3.Row, kind: str,
                        idem_key: str, now: int, *, service_names: str | None = None) -> int:
    """Queue ``kind`` for the booking's e-mail and phone; return how many rows were new.

    ``service_names`` (the service row's ``names`` JSON) saves a query when the caller has it.
    """
    if service_names is None:
        service = conn.execute("SELECT names FROM services WHERE branch_id = ? AND id = ?",
                               (booking["branch_id"], booking["service_id"])).fetchone()
        service_names = service["names"] if service else "{}"
    return sum(_insert(conn, *m, booking["id"], now)
               for m in booking_messages(booking, branch, kind, idem_key, service_names=service_names))


def booking_messages(booking: Any, branch: Any, kind: str, idem_key: str, *,
                     service_names: str) -> list[tuple[str, str, str, str, str, str]]:
    """(idem_key, kind, channel, recipient, subject, body) of ``kind`` for the booking's e-mail
    and phone, in the booking's language."""
    names = json.loads(service_names)
    service_name = names.get(booking["language"]) or next(iter(names.values()), booking["service_id"])
    t = translator(booking["language"])
    when = t.datetime(booking["slot_start"], branch["timezone"], "medium")
    subject_t, body_t = TEXTS[kind]
    fields = {"code": booking["code"], "service": service_name, "branch": branch["name"], "when": when}
    subject, body = t(subject_t, **fields), t(body_t, **fields)
    out = []
    if booking["email"]:
        out.append((f"{idem_key}:email", kind, "email", booking["email"], subject, body))
    if booking["phone"]:
        out.append((f"{idem_key}:sms", kind, "sms", booking["phone"], subject, body))
    return out


def enqueue_turn_near(conn: sqlite3.Connection, branch: sqlite3.Row, ticket_id: str, label: str, phone: str,
                      ahead: int, now: int, language: str | None = None) -> bool:
    subject_t, body_t = TEXTS["turn_near"]
    t = translator(language or json.loads(branch["languages"])[0])
    fields = {"label": label, "ahead": t.number(ahead), "branch": branch["name"]}
    return _insert(conn, f"near:{branch['id']}:{ticket_id}:sms", "turn_near", "sms", phone,
                   t(subject_t, **fields), t(body_t, **fields), None, now)


def enqueue_ticket_moved(conn: sqlite3.Connection, branch: sqlite3.Row, ticket_id: str, label: str, code: str,
                         service_name: str, phone: str, now: int, language: str | None = None) -> bool:
    """Tell the holder of a ticket moved to ``branch`` (hq/reassign.py) the code to check in there."""
    subject_t, body_t = TEXTS["ticket_moved"]
    t = translator(language or json.loads(branch["languages"])[0])
    fields = {"label": label, "branch": branch["name"], "service": service_name, "code": code}
    return _insert(conn, f"ticket-moved:{ticket_id}:{code}:sms", "ticket_moved", "sms", phone,
                   t(subject_t, **fields), t(body_t, **fields), None, now)


def enqueue_reminders(conn: sqlite3.Connection, now: int, lead_s: int) -> int:
    """Queue reminders for booked slots starting within ``lead_s``; keyed by slot so a moved booking is reminded again."""
    rows = conn.execute("SELECT * FROM bookings WHERE status = 'booked' AND slot_start > ? AND slot_start <= ?"
                        " AND purged_at IS NULL", (now, now + lead_s)).fetchall()
    new = 0
    for row in rows:
        branch = conn.execute("SELECT * FROM branches WHERE id = ?", (row["branch_id"],)).fetchone()
        new += enqueue_for_booking(conn, row, branch, "reminder", f"reminder:{row['code']}:{row['slot_start']}", now)
    return new


def purge_personal_data(conn: sqlite3.Connection, now: int, after_days: int) -> dict[str, int]:
    """Erase names, phones and e-mails of bookings whose slot ended ``after_days`` ago, and their notifications."""
    cutoff = now - after_days * 86400
    b = conn.execute("UPDATE bookings SET name = NULL, phone = NULL, email = NULL, purged_at = ?"
                     " WHERE slot_end < ? AND purged_at IS NULL", (now, cutoff)).rowcount
    # Anything that old is stale even if never sent (a "turn near" a month late): erased too.
    n = conn.execute("UPDATE notifications SET recipient = NULL, body = '', subject = '',"
                     " status = CASE WHEN status IN ('sent', 'failed') THEN status ELSE 'failed' END,"
                     " last_error = CASE WHEN status IN ('sent', 'failed') THEN last_error"
                     " ELSE 'purged before it was sent' END"
                     " WHERE created_at < ? AND recipient IS NOT NULL", (cutoff,)).rowcount
    t = conn.execute("UPDATE tickets SET phone = NULL WHERE issued_ms < ? AND phone IS NOT NULL", (cutoff * 1000,)).rowcount
    from hq.personal import destroy_keys
    k = destroy_keys(conn, now, after_days)  # phones sealed in events that old become unreadable
    return {"bookings": b, "notifications": n, "tickets": t, "pd_keys": k}


def notification_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "channel": row["channel"], "status": row["status"],
            "attempts": row["attempts"], "last_error": row["last_error"]}
