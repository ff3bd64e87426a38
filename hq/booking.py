"""Online booking: slots from opening hours and capacity, book/reschedule/cancel, codes and tokens.

Capacity safety: every slot that holds a booking has a counter row in ``slot_counts`` equal to
the number of its bookings with status 'booked'. :func:`book` and :func:`reschedule` take a
place with one atomic upsert that refuses when the count has reached the slot's capacity
(:func:`take_place`); every path that moves a booking out of 'booked' or to another slot gives
its place back in the same transaction (:func:`release_places`), and every path that makes a
booking hold a place without a capacity check adds it (:func:`add_places`). On SQLite the single
writer serializes everything; on PostgreSQL the upsert locks the slot's row, so bookings of the
same slot queue on that row and bookings of other slots do not meet at all, and the booking
transactions run at READ COMMITTED (hq/db.py read_committed). Status changes are guarded
(``WHERE ... AND status = 'booked'``), so two concurrent cancels release one place, not two.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import phonenumbers
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import events as ev
from hq import aggregates, notifications, outbox, slotrules, tenants
from hq.errors import DATE_RANGE, ApiError, bad_request, check_instant, check_obj, check_str, conflict, not_found
from sync.tokens import sign_token

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_RE = re.compile(r"^[0-9A-Z]{4}-?[0-9A-Z]{4}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


@dataclass(frozen=True, slots=True)
class BookingContext:
    """What booking writes need besides the connection."""

    key: Ed25519PrivateKey
    now: int  # unix seconds
    horizon_days: int
    token_grace_s: int
    phone_region: str
    rng: Any


# -- input ---------------------------------------------------------------------------------
def normalize_code(value: Any) -> str:
    if not isinstance(value, str):
        raise not_found("booking")
    text = value.strip().upper().replace(" ", "")
    text = text.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))
    if not CODE_RE.match(text):
        raise not_found("booking")
    text = text.replace("-", "")
    return f"{text[:4]}-{text[4:]}"


def new_code(rng: Any) -> str:
    """8 random Crockford base32 characters from one 40-bit draw (one urandom call, not eight)."""
    bits = rng.getrandbits(40)
    raw = "".join(CODE_ALPHABET[(bits >> shift) & 31] for shift in range(35, -1, -5))
    return f"{raw[:4]}-{raw[4:]}"


def normalize_phone(value: Any, region: str) -> str:
    if not isinstance(value, str) or len(value) > 40:
        raise bad_request("phone must be a string", "bad_phone")
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException as err:
        raise bad_request(f"phone number not understood: {err}", "bad_phone") from err
    if not phonenumbers.is_valid_number(number):
        raise bad_request("phone number is not valid", "bad_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 254 or not EMAIL_RE.match(value.strip()):
        raise bad_request("email is not a valid address", "bad_email")
    return value.strip().lower()


def parse_instant(value: Any, field: str = "start") -> int:
    """ISO 8601 with offset (or Z) -> unix seconds."""
    if not isinstance(value, str) or len(value) > 40:
        raise bad_request(f"{field} must be an ISO 8601 time with offset")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as err:
        raise bad_request(f"{field} must be an ISO 8601 time with offset") from err
    if dt.tzinfo is None:
        raise bad_request(f"{field} needs a UTC offset (e.g. 2025-05-01T09:00:00+02:00 or ...Z)")
    try:
        ts = int(dt.timestamp())
    except (OverflowError, ValueError) as err:  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise bad_request(f"{field} is out of range ({DATE_RANGE})") from err
    return check_instant(ts, field)


def iso_utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)  # slot starts and ends repeat over many bookings
def iso_local(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat()


# -- slots ---------------------------------------------------------------------------------
def day_slots(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date) -> list[tuple[int, int]]:
    """(start, end) unix seconds of every slot offered on the branch-local ``day``: the grid
    without the slots (or the whole day) blocked in the console's calendar."""
    blocked = slotrules.blocked_on(conn, branch["id"], service["id"], day)
    if slotrules.WHOLE_DAY in blocked:
        return []
    return [s for s in grid(conn, branch, service, day) if s[0] not in blocked]


def grid(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date) -> list[tuple[int, int]]:
    """(start, end) unix seconds of every slot of the opening hours of ``day``, blocked or not."""
    if conn.execute("SELECT 1 FROM closed_days WHERE branch_id = ? AND day = ?", (branch["id"], day.isoformat())).fetchone():
        return []
    hours = conn.execute("SELECT opens, closes FROM hours WHERE branch_id = ? AND weekday = ?",
                         (branch["id"], day.weekday())).fetchone()
    if hours is None:
        return []
    opens, closes, step = _span(branch, service, day, hours)
    return [(t, t + step) for t in range(opens, closes - step + 1, step)]


def _span(branch: sqlite3.Row, service: sqlite3.Row, day: date, hours: Any) -> tuple[int, int, int]:
    """Opening and closing instants (unix s) of ``day`` and the slot length (s).

    Slots step in absolute time from opening, so a DST change inside opening hours never makes
    a slot start at a wall time that does not exist or exists twice.
    """
    tz = ZoneInfo(branch["timezone"])
    opens = int(datetime.combine(day, time.fromisoformat(hours["opens"]), tzinfo=tz).timestamp())
    closes = int(datetime.combine(day, time.fromisoformat(hours["closes"]), tzinfo=tz).timestamp())
    return opens, closes, service["slot_minutes"] * 60


def slot_end(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date, start: int) -> int | None:
    """The end of the slot starting at ``start`` on ``day``, or None if no such slot: the same
    grid as :func:`day_slots` without listing the whole day."""
    slot = slot_at(conn, branch, service, day, start)
    return slot[0] if slot else None


def slot_at(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, day: date,
            start: int) -> tuple[int, int] | None:
    """(end, capacity of ``day``) of the offered slot starting at ``start``, or None if no such
    slot (closed, outside hours, off the grid, blocked): one query for the closed day, the
    hours, the blocks and the date's capacity (each a round trip on PostgreSQL)."""
    b, s, d = branch["id"], service["id"], day.isoformat()
    facts = conn.execute(f"SELECT {_SLOT_FACTS}", (b, d, b, day.weekday(), b, day.weekday(), b, s, d,
                                                  slotrules.WHOLE_DAY, start, b, s, d)).fetchone()
    return _slot_from(service, branch["timezone"], day, start, tuple(facts))


# The closed day, the hours, the blocks and the date's capacity of one slot, as one SELECT list.
_SLOT_FACTS = (
    "(SELECT COUNT(*) FROM closed_days WHERE branch_id = ? AND day = ?),"
    " (SELECT opens FROM hours WHERE branch_id = ? AND weekday = ?),"
    " (SELECT closes FROM hours WHERE branch_id = ? AND weekday = ?),"
    " (SELECT COUNT(*) FROM slot_blocks WHERE branch_id = ? AND service_id = ? AND day = ? AND slot_start IN (?, ?)),"
    " (SELECT capacity FROM slot_capacity WHERE branch_id = ? AND service_id = ? AND day = ?)")


def _slot_from(service: Any, timezone_name: str, day: date, start: int, facts: tuple[Any, ...]) -> tuple[int, int] | None:
    closed, opens_t, closes_t, blocks, capacity = facts
    if closed or opens_t is None or blocks:
        return None
    opens, closes, step = _span({"timezone": timezone_name}, service, day, {"opens": opens_t, "closes": closes_t})
    if start < opens or (start - opens) % step or start + step > closes:
        return None
    return start + step, int(capacity if capacity is not None else service["capacity"])


def _bookable_service(conn: sqlite3.Connection, branch_id: str, service_id: Any) -> tuple[sqlite3.Row, sqlite3.Row]:
    branch = tenants.get_branch(conn, branch_id)
    if not isinstance(service_id, str):
        raise bad_request("service must be a service id")
    service = tenants.get_service(conn, branch_id, service_id)
    if not service["bookable"] or not service["enabled"]:  # enabled 0: withdrawn by the catalogue
        raise conflict("this service cannot be booked online", "not_bookable")
    return branch, service


def _booked_counts(conn: sqlite3.Connection, branch_id: str, service_id: str, lo: int, hi: int) -> dict[int, int]:
    rows = conn.execute("SELECT slot_start, booked FROM slot_counts WHERE branch_id = ? AND service_id = ?"
                        " AND slot_start BETWEEN ? AND ?", (branch_id, service_id, lo, hi))
    return {r[0]: r[1] for r in rows}


# -- places: the slot_counts counters ----------------------------------------------------------
def take_place(conn: Any, branch_id: str, service_id: str, start: int, capacity: int) -> bool:
    """Take one place of the slot if fewer than ``capacity`` are booked; False when it is full.

    One statement: PostgreSQL locks the slot's counter row and, at READ COMMITTED, evaluates the
    ``WHERE`` on the newest committed count after waiting for a concurrent booking of the slot."""
    if capacity <= 0:
        return False
    return conn.execute(
        "INSERT INTO slot_counts (branch_id, service_id, slot_start, booked) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (branch_id, service_id, slot_start) DO UPDATE SET booked = slot_counts.booked + 1"
        " WHERE slot_counts.booked < ? RETURNING booked", (branch_id, service_id, start, capacity)).fetchone() is not None


def add_places(conn: Any, branch_id: str, service_id: str, start: int, n: int = 1) -> None:
    """``n`` more bookings hold places of the slot without a capacity check (a no-show checked in
    after all, a waiting ticket moved to another branch)."""
    conn.execute("INSERT INTO slot_counts (branch_id, service_id, slot_start, booked) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (branch_id, service_id, slot_start) DO UPDATE SET booked = slot_counts.booked + ?",
                 (branch_id, service_id, start, n, n))


def release_places(conn: Any, branch_id: str, service_id: str, start: int, n: int = 1) -> None:
    """``n`` bookings of the slot stopped holding a place (cancelled, moved, no-show)."""
    conn.execute("UPDATE slot_counts SET booked = booked - ? WHERE branch_id = ? AND service_id = ? AND slot_start = ?",
                 (n, branch_id, service_id, start))


def availability(conn: sqlite3.Connection, branch_id: str, service_id: Any, day_text: Any, now: int,
                 horizon_days: int) -> dict[str, Any]:
    branch, service = _bookable_service(conn, branch_id, service_id)
    day = date.fromisoformat(tenants.check_day(day_text, "date"))
    tz = branch["timezone"]
    today = datetime.fromtimestamp(now, ZoneInfo(tz)).date()
    slots_out: list[dict[str, Any]] = []
    if today <= day <= today + timedelta(days=horizon_days):
        slots = [s for s in day_slots(conn, branch, service, day) if s[0] > now]
        counts = _booked_counts(conn, branch_id, service["id"], slots[0][0], slots[-1][0]) if slots else {}
        capacity = slotrules.capacity_on(conn, branch_id, service, day)
        for start, end in slots:
            left = max(0, capacity - counts.get(start, 0))
            slots_out.append({"start": iso_local(start, tz), "end": iso_local(end, tz), "capacity": capacity,
                              "available": left})
    return {"branch": branch_id, "service": service["id"], "date": day.isoformat(), "timezone": tz, "slots": slots_out}


def _check_slot(conn: sqlite3.Connection, branch: sqlite3.Row, service: sqlite3.Row, start: int,
                ctx: BookingContext, facts: tuple[date, tuple[Any, ...]] | None = None) -> tuple[int, int]:
    """The slot's end and capacity if ``start`` is an offered slot start (not blocked); raise otherwise.

    ``facts``: the slot's day and :data:`_SLOT_FACTS` already read with the branch (:func:`_target`)."""
    if start <= ctx.now:
        raise conflict("this slot has already started", "slot_past")
    tz = ZoneInfo(branch["timezone"])
    day = datetime.fromtimestamp(start, tz).date()
    if day > datetime.fromtimestamp(ctx.now, tz).date() + timedelta(days=ctx.horizon_days):
        raise conflict("this day is beyond the booking horizon", "slot_unavailable")
    if facts is not None and facts[0] == day:
        slot = _slot_from(service, branch["timezone"], day, start, facts[1])
    else:
        slot = slot_at(conn, branch, service, day, start)
    if slot is not None:
        return slot
    raise conflict("no slot starts at this time (closed, blocked, or not on the slot grid)", "slot_unavailable")


# Branch time zones seen by this process: a guess for the slot's local day in :func:`_target`,
# checked against the row it reads (a changed zone costs one more query, never a wrong answer).
_ZONES: dict[str, str] = {}

_TARGET = ("SELECT b.timezone, b.languages, b.name, s.id, s.bookable, s.enabled, s.capacity, s.slot_minutes,"
           f" s.names, {_SLOT_FACTS.replace('branch_id = ?', 'branch_id = b.id')}"
           " FROM branches b LEFT JOIN services s ON s.branch_id = b.id AND s.id = ? WHERE b.id = ?")


# PostgreSQL: the online booking keeps what :func:`_target` read per (branch, service, day) in
# its database's ``facts`` dict (``PgConn.facts``: one per database, so two databases in one
# process never see each other's), with the day's blocked slots and the catalogue's version
# (migration 33: every change to branches, services, hours, closed days, blocks or capacities
# moves it, whichever HQ process makes it). Its one write statement goes ahead only if the version has not moved
# (:func:`_book_in_one_statement`), else it writes nothing and the booking is checked again on
# fresh facts. One round trip per booking instead of two.
_TARGET_PG = ("SELECT (SELECT version FROM catalogue_version WHERE id = 1), (SELECT string_agg(slot_start::text, ',')"
              " FROM slot_blocks WHERE branch_id = b.id AND service_id = s.id AND day = ?), " + _TARGET[len("SELECT "):])
_FACTS_MAX = 4096  # (branch, service, day) entries kept per database and process


def _target(conn: sqlite3.Connection, branch_id: str, service_id: Any, start_value: Any, cached: bool = False
            ) -> tuple[Any, Any, tuple[date, tuple[Any, ...]] | None, int | None]:
    """The bookable branch and service and what decides the slot at ``start_value``, in one
    query (one round trip on PostgreSQL instead of three); the same errors as
    :func:`_bookable_service` in the same order. Facts are None when the start is not valid
    (the caller's parse then says why).

    On PostgreSQL also the catalogue version the facts hold at (the write's guard), and with
    ``cached`` they may come from the database's kept facts without a query."""
    try:
        start = parse_instant(start_value) if isinstance(service_id, str) else None
    except ApiError:
        start = None
    zone = _ZONES.get(branch_id, "UTC")
    try:
        day = datetime.fromtimestamp(start, ZoneInfo(zone)).date() if start is not None else None
    except (OverflowError, ValueError, OSError):
        day = None
    if day is None:
        branch, service = _bookable_service(conn, branch_id, service_id)
        return branch, service, None, None
    kept: dict[Any, Any] | None = getattr(conn, "facts", None)
    pg = getattr(conn, "dialect", "sqlite") == "postgresql"
    if kept is not None and cached:
        hit = kept.get((branch_id, service_id, day.isoformat()))
        if hit is not None:
            branch, service, hit_day, (closed, opens, closes, capacity), blocked, version = hit
            blocks = int(start in blocked or slotrules.WHOLE_DAY in blocked)
            return branch, service, (hit_day, (closed, opens, closes, blocks, capacity)), version
    version: int | None = None
    blocked: frozenset[int] = frozenset()
    for _ in range(2):
        d = day.isoformat()
        params = (d, day.weekday(), day.weekday(), service_id, d, slotrules.WHOLE_DAY, start, service_id, d,
                  service_id, branch_id)
        if pg:
            row = conn.execute(_TARGET_PG, (d, *params)).fetchone()
            if row is not None:
                version, blocked = row[0], frozenset(int(x) for x in (row[1] or "").split(",") if x)
                row = row[2:]
        else:
            row = conn.execute(_TARGET, params).fetchone()
        if row is None:
            raise not_found("branch")
        if row[0] == zone:
            break
        zone = _ZONES[branch_id] = row[0]
        try:
            day = datetime.fromtimestamp(start, ZoneInfo(zone)).date()
        except (OverflowError, ValueError, OSError):
            branch, service = _bookable_service(conn, branch_id, service_id)
            return branch, service, None, None
    if row[3] is None:
        raise not_found("service")
    branch = {"id": branch_id, "timezone": row[0], "languages": row[1], "name": row[2]}
    service = {"id": row[3], "bookable": row[4], "enabled": row[5], "capacity": row[6], "slot_minutes": row[7],
               "names": row[8]}
    if not service["bookable"] or not service["enabled"]:  # enabled 0: withdrawn by the catalogue
        raise conflict("this service cannot be booked online", "not_bookable")
    facts = (day, tuple(row[9:14]))
    if version is not None and kept is not None:
        if len(kept) >= _FACTS_MAX:
            kept.clear()
        closed, opens, closes, _, capacity = facts[1]
        kept[(branch_id, service_id, day.isoformat())] = (branch, service, day, (closed, opens, closes, capacity),
                                                            blocked, version)
    return branch, service, facts, version


# -- bookings ------------------------------------------------------------------------------
def booking_token(key: Ed25519PrivateKey, row: sqlite3.Row | dict[str, Any], grace_s: int) -> str:
    return sign_token(key, {"typ": "booking", "code": row["code"], "branch": row["branch_id"],
                            "service": row["service_id"], "start": row["slot_start"], "end": row["slot_end"],
                            "exp": row["slot_end"] + grace_s})


def booking_json(row: sqlite3.Row | dict[str, Any], tz: str, key: Ed25519PrivateKey, grace_s: int) -> dict[str, Any]:
    out = {"code": row["code"], "branch": row["branch_id"], "service": row["service_id"],
           "start": iso_local(row["slot_start"], tz), "end": iso_local(row["slot_end"], tz),
           "status": row["status"], "language": row["language"]}
    if row["status"] == "booked":
        token = booking_token(key, row, grace_s)
        out["token"] = token
        out["qr"] = token
    return out


def _event_payload(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    # No personal data travels to the branch: the code and the slot are enough to check in.
    return {"code": row["code"], "service": row["service_id"], "start": row["slot_start"],
            "end": row["slot_end"], "status": row["status"], "language": row["language"]}


def get_by_code(conn: sqlite3.Connection, code: Any, contact: Any, region: str) -> sqlite3.Row:
    """The booking with ``code`` whose phone or e-mail matches ``contact``; 404 otherwise."""
    row = conn.execute("SELECT * FROM bookings WHERE code = ?", (normalize_code(code),)).fetchone()
    if row is None or not isinstance(contact, str) or not contact.strip() or row["purged_at"]:
        raise not_found("booking")
    try:
        if "@" in contact:
            ok = row["email"] is not None and normalize_email(contact) == row["email"]
        else:
            ok = row["phone"] is not None and normalize_phone(contact, region) == row["phone"]
    except ApiError:
        ok = False
    if not ok:
        raise not_found("booking")
    return row


@dataclass(frozen=True, slots=True)
class Written:
    """What a booking write committed: the row and the branch's time zone.

    The writer returns this instead of the finished JSON so that the Ed25519 token signature
    and the JSON rendering (:func:`render`) run after the write lock is released.
    """

    row: dict[str, Any]
    timezone: str


def render(written: Written, ctx: BookingContext) -> dict[str, Any]:
    """The booking's public JSON with its signed token (outside the writer: pure CPU work)."""
    return booking_json(written.row, written.timezone, ctx.key, ctx.token_grace_s)


def book(conn: sqlite3.Connection, ctx: BookingContext, body: Any) -> dict[str, Any]:
    """Book a slot and return its public JSON (tools and tests; the API uses :func:`book_row`)."""
    return render(book_row(conn, ctx, body), ctx)


def book_row(conn: sqlite3.Connection, ctx: BookingContext, body: Any) -> Written:
    """Count and insert inside the caller's write transaction; no signing of the token here."""
    body = check_obj(body)
    branch_id = body.get("branch")
    if not isinstance(branch_id, str):
        raise bad_request("branch must be a branch id")
    postgresql = getattr(conn, "dialect", "sqlite") == "postgresql"
    for attempt in range(5):
        cached = postgresql and attempt == 0
        try:
            branch, service, facts, version = _target(conn, branch_id, body.get("service"), body.get("start"), cached)
            start = parse_instant(body.get("start"))
            phone = normalize_phone(body["phone"], ctx.phone_region) if body.get("phone") is not None else None
            email = normalize_email(body["email"]) if body.get("email") is not None else None
            if phone is None and email is None:
                raise bad_request("give a phone number or an e-mail address (needed to change or cancel)",
                                  "contact_required")
            name = check_str(body.get("name"), "name", max_len=120, required=False) if body.get("name") is not None else ""
            languages = json.loads(branch["languages"])
            language = body.get("language", languages[0])
            if language not in languages:
                raise bad_request(f"language must be one of {', '.join(languages)}")
            end, capacity = _check_slot(conn, branch, service, start, ctx, facts)
        except ApiError:
            if cached:  # a refusal is always made on facts read now
                continue
            raise
        values = (branch_id, service["id"], start, end, name, phone, email, language)
        if not postgresql:
            break
        written = _book_in_one_statement(conn, ctx, branch, service, capacity, values, version)
        if written is not None:
            return written
        # the catalogue changed meanwhile: the next attempt reads the facts again (and keeps them)
    else:
        raise conflict("this slot's opening hours or capacity are being changed, try again", "busy")
    if not take_place(conn, branch_id, service["id"], start, capacity):
        raise conflict("this slot is fully booked", "slot_full")
    row = _insert_booking(conn, ctx, values)
    outbox.emit(conn, ctx.key, branch_id, ev.BOOKING_CREATED, _event_payload(row), ctx.now * 1000, defer=True)
    notifications.enqueue_for_booking(conn, row, branch, "confirmation", f"confirm:{row['code']}", ctx.now,
                                      service_names=service["names"])
    return Written(dict(row), branch["timezone"])


def _insert_booking(conn: sqlite3.Connection, ctx: BookingContext, values: tuple[Any, ...]) -> dict[str, Any]:
    """Insert a 'booked' row under a fresh code and return it as a dict.

    The UNIQUE index on ``code`` is the collision check (a clash, about 1 in 32^8 per existing
    booking, inserts nothing and a new code is drawn: ON CONFLICT, so the transaction stays
    usable on PostgreSQL too), so no look-up precedes the insert, and the row is built from
    what was inserted instead of being read back.
    """
    for _ in range(20):
        code = new_code(ctx.rng)
        row = conn.execute(
            "INSERT INTO bookings (code, branch_id, service_id, slot_start, slot_end, status, name, phone, email,"
            " language, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'booked', ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (code) DO NOTHING RETURNING id",
            (code, *values, ctx.now, ctx.now)).fetchone()
        if row is None:
            continue
        return _booked_row(row[0], code, values, ctx.now)
    raise conflict("could not allocate a booking code, try again", "busy")  # pragma: no cover - 32^8 codes


def _booked_row(id_: int | None, code: str, values: tuple[Any, ...], now: int) -> dict[str, Any]:
    branch_id, service_id, start, end, name, phone, email, language = values
    return {"id": id_, "code": code, "branch_id": branch_id, "service_id": service_id,
            "slot_start": start, "slot_end": end, "status": "booked", "name": name, "phone": phone,
            "email": email, "language": language, "created_at": now, "updated_at": now,
            "purged_at": None, "citizen_id": None, "no_show_at": None}


def _book_in_one_statement(conn: Any, ctx: BookingContext, branch: Any, service: Any, capacity: int,
                           values: tuple[Any, ...], version: int | None) -> Written | None:
    """PostgreSQL: take the place, insert the booking, queue its event and its notifications in
    one statement (data-modifying CTEs: one round trip, atomic on its own, so the API runs it
    without BEGIN/COMMIT, hq/db.py autocommit). Each part feeds the next: a full slot (the
    upsert's ``WHERE`` refuses) inserts nothing at all. The capacity rule is the same
    conditional upsert as :func:`take_place`.

    ``version``: the catalogue version the booking's facts were read at; if it has moved, the
    statement writes nothing and this returns None (the caller checks again on fresh facts)."""
    if capacity <= 0:
        raise conflict("this slot is fully booked", "slot_full")
    branch_id, service_id, start = values[0], values[1], values[2]
    for _ in range(20):
        code = new_code(ctx.rng)
        row = _booked_row(None, code, values, ctx.now)
        messages = notifications.booking_messages(row, branch, "confirmation", f"confirm:{code}",
                                                  service_names=service["names"])
        notes = " UNION ALL ".join(["SELECT ?, ?, ?, ?, ?, ?"] * len(messages))
        held, taken, made = conn.execute(
            "WITH guard AS (SELECT 1 FROM catalogue_version WHERE id = 1 AND version = ?),"
            " place AS (INSERT INTO slot_counts (branch_id, service_id, slot_start, booked) SELECT ?, ?, ?, 1 FROM guard"
            " ON CONFLICT (branch_id, service_id, slot_start) DO UPDATE SET booked = slot_counts.booked + 1"
            " WHERE slot_counts.booked < ? RETURNING booked),"
            " made AS (INSERT INTO bookings (code, branch_id, service_id, slot_start, slot_end, status, name, phone,"
            " email, language, created_at, updated_at) SELECT ?, ?, ?, ?, ?, 'booked', ?, ?, ?, ?, ?, ? FROM place"
            " ON CONFLICT (code) DO NOTHING RETURNING id),"
            " queued AS (INSERT INTO outbox_queue (branch_id, type, payload, now_ms) SELECT ?, ?, ?, ? FROM made),"
            " noted AS (INSERT INTO notifications (idem_key, kind, channel, recipient, subject, body, booking_id,"
            f" next_attempt_at, created_at) SELECT m.k, m.kind, m.ch, m.r, m.s, m.b, made.id, ?, ? FROM made,"
            f" ({notes}) AS m (k, kind, ch, r, s, b) ON CONFLICT (idem_key) DO NOTHING)"
            " SELECT (SELECT 1 FROM guard), (SELECT booked FROM place), (SELECT id FROM made)",
            (version, branch_id, service_id, start, capacity, code, *values, ctx.now, ctx.now,
             branch_id, ev.BOOKING_CREATED, orjson.dumps(_event_payload(row)).decode(), ctx.now * 1000,
             ctx.now, ctx.now, *(v for m in messages for v in m))).fetchone()
        if held is None:
            return None
        if taken is None:
            raise conflict("this slot is fully booked", "slot_full")
        if made is None:  # the code existed (1 in 32^8 per booking): give the place back, draw again
            release_places(conn, branch_id, service_id, start)
            continue
        conn.queued = True  # the chainer appends the event to the branch's outbox (hq/outbox.py)
        row["id"] = made
        return Written(row, branch["timezone"])
    raise conflict("could not allocate a booking code, try again", "busy")  # pragma: no cover - 32^8 codes


def reschedule(conn: sqlite3.Connection, ctx: BookingContext, code: Any, body: Any) -> dict[str, Any]:
    return render(reschedule_row(conn, ctx, code, body), ctx)


def reschedule_row(conn: sqlite3.Connection, ctx: BookingContext, code: Any, body: Any) -> Written:
    """Move a booking inside the caller's write transaction (count and update together)."""
    body = check_obj(body)
    row = get_by_code(conn, code, body.get("contact"), ctx.phone_region)
    if row["status"] == "no_show":
        raise conflict("this booking's slot has passed and nobody checked in", "no_show")
    if row["status"] != "booked":
        raise conflict("this booking is cancelled", "cancelled")
    branch, service = _bookable_service(conn, row["branch_id"], row["service_id"])
    start = parse_instant(body.get("start"))
    if start == row["slot_start"]:
        return Written(dict(row), branch["timezone"])
    end, capacity = _check_slot(conn, branch, service, start, ctx)
    if not take_place(conn, row["branch_id"], row["service_id"], start, capacity):
        raise conflict("this slot is fully booked", "slot_full")
    old_start = row["slot_start"]
    row = conn.execute("UPDATE bookings SET slot_start = ?, slot_end = ?, updated_at = ? WHERE id = ?"
                       " AND status = 'booked' AND slot_start = ? RETURNING *",
                       (start, end, ctx.now, row["id"], old_start)).fetchone()
    if row is None:  # changed by a concurrent request since we read it: the place taken is rolled back
        raise conflict("this booking was changed meanwhile, look it up again", "changed")
    release_places(conn, row["branch_id"], row["service_id"], old_start)
    outbox.emit(conn, ctx.key, row["branch_id"], ev.BOOKING_RESCHEDULED, _event_payload(row), ctx.now * 1000, defer=True)
    notifications.enqueue_for_booking(conn, row, branch, "reschedule", f"reschedule:{row['code']}:{start}:{ctx.now}", ctx.now,
                                      service_names=service["names"])
    return Written(dict(row), branch["timezone"])


def cancel(conn: sqlite3.Connection, ctx: BookingContext, code: Any, body: Any) -> dict[str, Any]:
    return render(cancel_row(conn, ctx, code, body), ctx)


def cancel_row(conn: sqlite3.Connection, ctx: BookingContext, code: Any, body: Any) -> Written:
    """Cancel a booking inside the caller's write transaction."""
    body = check_obj(body)
    row = get_by_code(conn, code, body.get("contact"), ctx.phone_region)
    branch = tenants.get_branch(conn, row["branch_id"])
    if row["status"] == "cancelled":
        return Written(dict(row), branch["timezone"])
    if row["status"] == "no_show":
        raise conflict("this booking's slot has passed and nobody checked in", "no_show")
    done = conn.execute("UPDATE bookings SET status = 'cancelled', updated_at = ? WHERE id = ? AND status = 'booked'"
                        " RETURNING *", (ctx.now, row["id"])).fetchone()
    if done is None:  # a concurrent request changed it first (cancelled it: answered as above)
        row = conn.execute("SELECT * FROM bookings WHERE id = ?", (row["id"],)).fetchone()
        if row["status"] == "cancelled":
            return Written(dict(row), branch["timezone"])
        raise conflict("this booking's slot has passed and nobody checked in", "no_show")
    row = done
    release_places(conn, row["branch_id"], row["service_id"], row["slot_start"])
    outbox.emit(conn, ctx.key, row["branch_id"], ev.BOOKING_CANCELLED, _event_payload(row), ctx.now * 1000, defer=True)
    notifications.enqueue_for_booking(conn, row, branch, "cancellation", f"cancel:{row['code']}", ctx.now)
    return Written(dict(row), branch["timezone"])


# -- no-shows ------------------------------------------------------------------------------
NO_SHOW_LOOKBACK_S = 7 * 86400


def mark_no_shows(conn: sqlite3.Connection, now: int) -> int:
    """Bookings still 'booked' whose slot ended in the last NO_SHOW_LOOKBACK_S and that no ticket
    of their branch checked in become 'no_show' (no_show_at = now). Returns how many. A check-in
    that reaches HQ later (the branch was offline) turns the booking back to 'booked'
    (:func:`checked_in`). The window keeps each run small: checked-in bookings stay 'booked'."""
    ids = [r[0] for r in conn.execute(
        "SELECT b.id FROM bookings b WHERE b.status = 'booked' AND b.slot_end <= ? AND b.slot_end > ? AND NOT EXISTS"
        " (SELECT 1 FROM tickets t WHERE t.booking_code = b.code AND t.branch_id = b.branch_id)",
        (now, now - NO_SHOW_LOOKBACK_S))]
    n = 0
    for lo in range(0, len(ids), 500):
        chunk = ids[lo:lo + 500]
        marked = conn.execute(f"UPDATE bookings SET status = 'no_show', no_show_at = ?, updated_at = ?"
                              f" WHERE id IN ({', '.join('?' * len(chunk))}) AND status = 'booked'"
                              f" RETURNING branch_id, service_id, slot_start", (now, now, *chunk)).fetchall()
        for branch, service, start in marked:
            release_places(conn, branch, service, start)
            aggregates.booking_missed(conn, branch, service, start, 1)  # the console's no-show figures
        n += len(marked)
    return n


def checked_in(conn: sqlite3.Connection, branch_id: str, code: str, now: int) -> None:
    """A ticket of the branch checked the booking in: it was no no-show after all."""
    row = conn.execute("UPDATE bookings SET status = 'booked', no_show_at = NULL, updated_at = ?"
                       " WHERE code = ? AND branch_id = ? AND status = 'no_show' RETURNING service_id, slot_start",
                       (now, code, branch_id)).fetchone()
    if row is None:
        return
    add_places(conn, branch_id, row[0], row[1])  # it holds its place again (the slot has passed)
    aggregates.booking_missed(conn, branch_id, row[0], row[1], -1)
