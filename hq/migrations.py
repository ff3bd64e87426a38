"""Numbered schema migrations, one history for SQLite and PostgreSQL; each runs in one
transaction together with its record.

Migrations are written in SQLite's DDL; :func:`portable_ddl` turns it into PostgreSQL's with
a few substitutions (``INTEGER`` is 64-bit there too, ``INTEGER PRIMARY KEY`` becomes an
identity column, ``WITHOUT ROWID`` goes). Data migrations that need a dialect's own functions
branch on ``conn.dialect``.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from hq.db import begin_immediate

logger = logging.getLogger(__name__)

Migration = Callable[[Any], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(number: int, name: str) -> Callable[[Migration], Migration]:
    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((number, name, fn))
        return fn
    return register


@migration(1, "tenants")
def _m1(conn: Any) -> None:
    conn.executescript("""
    CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE branches (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), name TEXT NOT NULL,
        timezone TEXT NOT NULL, languages TEXT NOT NULL DEFAULT '["en"]');
    CREATE INDEX branches_org ON branches(org_id);
    CREATE TABLE services (
        branch_id TEXT NOT NULL REFERENCES branches(id), id TEXT NOT NULL, letter TEXT NOT NULL,
        names TEXT NOT NULL, bookable INTEGER NOT NULL DEFAULT 1,
        slot_minutes INTEGER NOT NULL DEFAULT 15, capacity INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (branch_id, id));
    CREATE TABLE counters (
        branch_id TEXT NOT NULL REFERENCES branches(id), id TEXT NOT NULL, name TEXT NOT NULL,
        services TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (branch_id, id));
    CREATE TABLE hours (
        branch_id TEXT NOT NULL REFERENCES branches(id), weekday INTEGER NOT NULL,
        opens TEXT NOT NULL, closes TEXT NOT NULL, PRIMARY KEY (branch_id, weekday));
    CREATE TABLE closed_days (
        branch_id TEXT NOT NULL REFERENCES branches(id), day TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (branch_id, day));
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, branch_id TEXT NOT NULL REFERENCES branches(id), role TEXT NOT NULL,
        public_key TEXT NOT NULL, name TEXT NOT NULL DEFAULT '');
    CREATE TABLE staff (
        branch_id TEXT NOT NULL REFERENCES branches(id), id TEXT NOT NULL, name TEXT NOT NULL,
        pin_hash TEXT NOT NULL DEFAULT '', PRIMARY KEY (branch_id, id));
    """)


@migration(2, "accounts")
def _m2(conn: Any) -> None:
    conn.executescript("""
    CREATE TABLE users (
        id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '',
        password_hash TEXT NOT NULL, role TEXT NOT NULL, org_id TEXT REFERENCES orgs(id),
        branch_id TEXT REFERENCES branches(id), created_at INTEGER NOT NULL);
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL, csrf TEXT NOT NULL DEFAULT '', expires_at INTEGER NOT NULL);
    """)


@migration(3, "hq_outbox_and_events")
def _m3(conn: Any) -> None:
    conn.executescript("""
    CREATE TABLE outbox (
        branch_id TEXT NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL, type TEXT NOT NULL,
        envelope TEXT NOT NULL, hash TEXT NOT NULL, shipped_at INTEGER,
        PRIMARY KEY (branch_id, seq));
    CREATE TABLE hq_clock (id INTEGER PRIMARY KEY CHECK (id = 1), hlc INTEGER NOT NULL);
    CREATE TABLE events (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL, type TEXT NOT NULL,
        branch TEXT NOT NULL, envelope TEXT NOT NULL, received_at INTEGER NOT NULL,
        PRIMARY KEY (origin, seq));
    CREATE INDEX events_branch_hlc ON events(branch, hlc);
    CREATE TABLE tickets (
        branch_id TEXT NOT NULL, id TEXT NOT NULL, service TEXT, day TEXT, label TEXT,
        priority INTEGER NOT NULL DEFAULT 0, issued_ms INTEGER, called_ms INTEGER,
        started_ms INTEGER, completed_ms INTEGER, no_show_ms INTEGER, cancelled_ms INTEGER,
        counter TEXT, booking_code TEXT, phone TEXT, language TEXT,
        PRIMARY KEY (branch_id, id));
    CREATE INDEX tickets_day ON tickets(branch_id, day);
    CREATE INDEX tickets_booking ON tickets(booking_code);
    """)


@migration(4, "bookings_and_notifications")
def _m4(conn: Any) -> None:
    conn.executescript("""
    CREATE TABLE bookings (
        id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, branch_id TEXT NOT NULL,
        service_id TEXT NOT NULL, slot_start INTEGER NOT NULL, slot_end INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'booked', name TEXT, phone TEXT, email TEXT,
        language TEXT NOT NULL DEFAULT 'en', created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL, purged_at INTEGER);
    CREATE INDEX bookings_slot ON bookings(branch_id, service_id, slot_start, status);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY, idem_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        channel TEXT NOT NULL, recipient TEXT, subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL, booking_id INTEGER, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,
        last_error TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL, sent_at INTEGER);
    CREATE INDEX notifications_due ON notifications(status, next_attempt_at);
    """)


@migration(5, "branch_link")
def _m5(conn: Any) -> None:
    """What the branch link needs: event hashes (day digests), contiguous heads per origin
    (the version vector HQ answers in hello), and the config the branch folds (queue rules, notices,
    service rules and order, counter order, device ticket-number ranges)."""
    conn.executescript("""
    ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE sync_heads (
        origin TEXT PRIMARY KEY, branch TEXT NOT NULL, seq INTEGER NOT NULL);
    CREATE INDEX sync_heads_branch ON sync_heads(branch);
    ALTER TABLE branches ADD COLUMN queue TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE branches ADD COLUMN notices TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE services ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE services ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE counters ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN numbers TEXT;
    """)
    import json

    from hq.signing import event_hash
    rows = conn.execute("SELECT origin, seq, envelope FROM events").fetchall()
    for origin, seq, envelope in rows:
        conn.execute("UPDATE events SET hash = ? WHERE origin = ? AND seq = ?", (event_hash(json.loads(envelope)), origin, seq))
    heads: dict[str, tuple[str, int]] = {}
    for origin, branch, seq in conn.execute("SELECT origin, branch, seq FROM events ORDER BY origin, seq").fetchall():
        have = heads.get(origin, (branch, 0))[1]
        if seq == have + 1:
            heads[origin] = (branch, seq)
    for origin, (branch, seq) in heads.items():
        conn.execute("INSERT INTO sync_heads (origin, branch, seq) VALUES (?, ?, ?)", (origin, branch, seq))


@migration(6, "link_nonces")
def _m6(conn: Any) -> None:
    # Branch-link nonces seen by any HQ worker process (the in-memory cache is per process).
    conn.executescript("""
    CREATE TABLE link_nonces (nonce TEXT PRIMARY KEY, time_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX link_nonces_time ON link_nonces(time_ms);
    """)


@migration(7, "ticket_status_tokens")
def _m7(conn: Any) -> None:
    # The unguessable key of a ticket's public status page (/t/<status_token>), from ticket.issued.
    conn.executescript("""
    ALTER TABLE tickets ADD COLUMN status_token TEXT;
    CREATE INDEX tickets_status_token ON tickets(status_token) WHERE status_token IS NOT NULL;
    """)


@migration(8, "device_trust")
def _m8(conn: Any) -> None:
    """Device certificates of the org CAs, one-time enrollment codes, revoked devices (hq/trust.py)."""
    conn.executescript("""
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY, org_id TEXT NOT NULL, branch_id TEXT NOT NULL, device_id TEXT NOT NULL,
        role TEXT NOT NULL, public_key TEXT NOT NULL, not_after INTEGER NOT NULL, issued_at INTEGER NOT NULL,
        revoked_at INTEGER);
    CREATE INDEX certificates_device ON certificates(branch_id, device_id);
    CREATE TABLE enrollments (
        code TEXT PRIMARY KEY, public_key TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', branch_id TEXT, device_id TEXT, bundle TEXT);
    ALTER TABLE devices ADD COLUMN revoked_at INTEGER;
    ALTER TABLE devices ADD COLUMN revoked_after_seq INTEGER;
    """)


@migration(9, "citizen_web")
def _m9(conn: Any) -> None:
    """The citizens' web pages: branch addresses, citizen accounts (Argon2id), their sessions,
    one-time codes (hashed) for verification and password reset, bookings linked to accounts."""
    conn.executescript("""
    ALTER TABLE branches ADD COLUMN address TEXT NOT NULL DEFAULT '';
    CREATE TABLE citizens (
        id INTEGER PRIMARY KEY, email TEXT UNIQUE, phone TEXT UNIQUE, password_hash TEXT NOT NULL,
        language TEXT NOT NULL DEFAULT 'en', verified INTEGER NOT NULL DEFAULT 0,
        failed_logins INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL);
    CREATE TABLE citizen_sessions (
        token_hash TEXT PRIMARY KEY, citizen_id INTEGER NOT NULL REFERENCES citizens(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL);
    CREATE INDEX citizen_sessions_citizen ON citizen_sessions(citizen_id);
    CREATE TABLE citizen_codes (
        citizen_id INTEGER NOT NULL REFERENCES citizens(id) ON DELETE CASCADE, purpose TEXT NOT NULL,
        code_hash TEXT NOT NULL, expires_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (citizen_id, purpose));
    ALTER TABLE bookings ADD COLUMN citizen_id INTEGER REFERENCES citizens(id) ON DELETE SET NULL;
    CREATE INDEX bookings_citizen ON bookings(citizen_id) WHERE citizen_id IS NOT NULL;
    """)


@migration(10, "personal_data_keys")
def _m10(conn: Any) -> None:
    """Daily X25519 keys devices seal phone numbers to (hq/personal.py); destroyed after retention."""
    conn.executescript("""
    CREATE TABLE pd_keys (
        id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, private_pem TEXT, public_key TEXT NOT NULL,
        destroyed_at INTEGER);
    """)


@migration(11, "device_ids_per_org")
def _m11(conn: Any) -> None:
    """Device ids are unique per organization, not across HQ: a second organization can name a
    device `kiosk`. Devices are keyed (branch, id) and unique (org, id); events and heads are
    keyed by branch too, since two organizations' `kiosk` both have a seq 1."""
    conn.executescript("""
    CREATE TABLE devices_new (
        id TEXT NOT NULL, branch_id TEXT NOT NULL REFERENCES branches(id), org_id TEXT NOT NULL,
        role TEXT NOT NULL, public_key TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', numbers TEXT,
        revoked_at INTEGER, revoked_after_seq INTEGER,
        PRIMARY KEY (branch_id, id), UNIQUE (org_id, id));
    INSERT INTO devices_new (id, branch_id, org_id, role, public_key, name, numbers, revoked_at, revoked_after_seq)
        SELECT d.id, d.branch_id, b.org_id, d.role, d.public_key, d.name, d.numbers, d.revoked_at, d.revoked_after_seq
        FROM devices d JOIN branches b ON b.id = d.branch_id;
    DROP TABLE devices;
    ALTER TABLE devices_new RENAME TO devices;
    CREATE TABLE events_new (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL, type TEXT NOT NULL,
        branch TEXT NOT NULL, envelope TEXT NOT NULL, received_at INTEGER NOT NULL, hash TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (branch, origin, seq));
    INSERT INTO events_new (origin, seq, hlc, type, branch, envelope, received_at, hash)
        SELECT origin, seq, hlc, type, branch, envelope, received_at, hash FROM events;
    DROP TABLE events;
    ALTER TABLE events_new RENAME TO events;
    CREATE INDEX events_branch_hlc ON events(branch, hlc);
    CREATE TABLE sync_heads_new (
        origin TEXT NOT NULL, branch TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (branch, origin));
    INSERT INTO sync_heads_new (origin, branch, seq) SELECT origin, branch, seq FROM sync_heads;
    DROP TABLE sync_heads;
    ALTER TABLE sync_heads_new RENAME TO sync_heads;
    """)


@migration(12, "branch_contact")
def _m12(conn: Any) -> None:
    # When HQ last heard from each branch, shared by HQ's worker processes (the status page's
    # "works offline" banner); written at most every CONTACT_WRITE_S per process.
    conn.executescript("""
    CREATE TABLE branch_contact (branch_id TEXT PRIMARY KEY, heard_at INTEGER NOT NULL) WITHOUT ROWID;
    """)


@migration(13, "branch_counter_keys")
def _m13(conn: Any) -> None:
    """Each branch's X25519 counter key; HQ seals config.staff to it (hq/branchkeys.py)."""
    conn.executescript("""
    CREATE TABLE branch_keys (branch_id TEXT PRIMARY KEY, private_pem TEXT NOT NULL, public_key TEXT NOT NULL);
    """)


@migration(14, "console")
def _m14(conn: Any) -> None:
    """The console (issue 10): accounts can be disabled, sessions know when they began, and an
    audit log keeps who changed what, when."""
    conn.executescript("""
    ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor_id INTEGER, actor_email TEXT NOT NULL,
        org_id TEXT, action TEXT NOT NULL, target TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '');
    CREATE INDEX audit_org ON audit(org_id, id);
    """)


@migration(15, "ticket_fold")
def _m15(conn: Any) -> None:
    """HQ's ticket rows come from the branch fold (hq/engine.py): events are indexed by the
    ticket they are about, tickets carry the node's queue order, and every ticket is re-folded."""
    conn.executescript("ALTER TABLE events ADD COLUMN subject TEXT")
    if conn.dialect == "postgresql":
        conn.executescript("""
        UPDATE events SET subject = (envelope::jsonb -> 'payload' ->> 'ticket')
            WHERE type LIKE 'ticket.%' AND jsonb_typeof(envelope::jsonb -> 'payload' -> 'ticket') = 'string';
        """)
    else:
        conn.executescript("""
        UPDATE events SET subject = json_extract(envelope, '$.payload.ticket')
            WHERE type LIKE 'ticket.%' AND json_type(envelope, '$.payload.ticket') = 'text';
        """)
    conn.executescript("""
    CREATE INDEX events_subject ON events(branch, subject) WHERE subject IS NOT NULL;
    ALTER TABLE tickets ADD COLUMN effective_ms INTEGER;
    """)
    from hq.ingest import refold_tickets
    pairs = conn.execute("SELECT DISTINCT branch, subject FROM events WHERE subject IS NOT NULL").fetchall()
    refold_tickets(conn, [(r[0], r[1]) for r in pairs], aggregate=False)  # type: ignore[arg-type]


@migration(16, "enrollment_box_key")
def _m16(conn: Any) -> None:
    """A device's X25519 key in its enrollment request: secrets in its bundle are sealed to it."""
    conn.executescript("""
    ALTER TABLE enrollments ADD COLUMN box_key TEXT;
    """)


@migration(17, "booking_no_shows")
def _m17(conn: Any) -> None:
    """A booking nobody checked in becomes status 'no_show' once its slot has ended (the
    scheduler's no-show job, hq/booking.py mark_no_shows); no_show_at says when it was marked."""
    conn.executescript("""
    ALTER TABLE bookings ADD COLUMN no_show_at INTEGER;
    CREATE INDEX bookings_status_end ON bookings(status, slot_end);
    """)


@migration(18, "counter_names")
def _m18(conn: Any) -> None:
    """A counter's name per language ({"fr": "Guichet 1", ...}; the screens show it in theirs).
    The branch's notices column holds a list or {language: [lines]} (no change needed)."""
    conn.executescript("""
    ALTER TABLE counters ADD COLUMN names TEXT NOT NULL DEFAULT '{}';
    """)


@migration(19, "service_catalogue")
def _m19(conn: Any) -> None:
    """The service catalogue per organization (hq/catalogue.py): a service defined once, offered
    in branches with local overrides; a branch's service can be withdrawn (enabled 0) and carry
    the kiosk's pictogram."""
    conn.executescript("""
    CREATE TABLE catalogue (
        org_id TEXT NOT NULL REFERENCES orgs(id), id TEXT NOT NULL, letter TEXT NOT NULL, names TEXT NOT NULL,
        bookable INTEGER NOT NULL DEFAULT 1, slot_minutes INTEGER NOT NULL DEFAULT 15,
        capacity INTEGER NOT NULL DEFAULT 1, rules TEXT NOT NULL DEFAULT '{}', icon TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (org_id, id));
    CREATE TABLE catalogue_offers (
        branch_id TEXT NOT NULL REFERENCES branches(id), service_id TEXT NOT NULL, org_id TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1, slot_minutes INTEGER, capacity INTEGER,
        PRIMARY KEY (branch_id, service_id));
    CREATE INDEX catalogue_offers_service ON catalogue_offers(org_id, service_id);
    ALTER TABLE services ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE services ADD COLUMN icon TEXT NOT NULL DEFAULT '';
    """)
@migration(20, "calendar_rules")
def _m20(conn: Any) -> None:
    """The console's calendar (hq/slotrules.py): blocked slots (slot_start 0 = the whole day) and
    the capacity of one date, per branch and service."""
    conn.executescript("""
    CREATE TABLE slot_blocks (
        branch_id TEXT NOT NULL, service_id TEXT NOT NULL, day TEXT NOT NULL, slot_start INTEGER NOT NULL,
        reason TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL,
        PRIMARY KEY (branch_id, service_id, day, slot_start));
    CREATE TABLE slot_capacity (
        branch_id TEXT NOT NULL, service_id TEXT NOT NULL, day TEXT NOT NULL, capacity INTEGER NOT NULL,
        PRIMARY KEY (branch_id, service_id, day));
    """)


@migration(21, "analytics_aggregates")
def _m21(conn: Any) -> None:
    """Analytics pre-aggregated as events arrive (hq/aggregates.py): per branch, service, local
    day and hour, and per staff member; each ticket keeps its contribution (agg) and the wait
    estimate shown at its issue; who worked at each counter from when."""
    from hq.aggregates import COUNTS_V1, HIST
    measures = ", ".join(f"{m} INTEGER NOT NULL DEFAULT 0" for m in COUNTS_V1 + HIST)
    conn.executescript(f"""
    ALTER TABLE tickets ADD COLUMN agg TEXT;
    ALTER TABLE tickets ADD COLUMN est_p50 INTEGER;
    ALTER TABLE tickets ADD COLUMN est_p10 INTEGER;
    ALTER TABLE tickets ADD COLUMN est_p90 INTEGER;
    CREATE TABLE analytics_hours (
        branch_id TEXT NOT NULL, service TEXT NOT NULL, day TEXT NOT NULL, hour INTEGER NOT NULL,
        weekday INTEGER NOT NULL, {measures}, PRIMARY KEY (branch_id, service, day, hour));
    CREATE INDEX analytics_hours_day ON analytics_hours(branch_id, day);
    CREATE TABLE analytics_staff (
        branch_id TEXT NOT NULL, staff TEXT NOT NULL, service TEXT NOT NULL, day TEXT NOT NULL,
        hour INTEGER NOT NULL, {measures}, PRIMARY KEY (branch_id, staff, service, day, hour));
    CREATE INDEX analytics_staff_day ON analytics_staff(branch_id, day);
    CREATE TABLE analytics_counter_staff (
        branch_id TEXT NOT NULL, counter TEXT NOT NULL, at_ms INTEGER NOT NULL, staff TEXT NOT NULL,
        PRIMARY KEY (branch_id, counter, at_ms));
    """)
    from hq.aggregates import Aggregator
    agg = Aggregator(conn)
    for r in conn.execute("SELECT branch, type, hlc, envelope FROM events WHERE type IN"
                          " ('counter.opened', 'counter.paused', 'counter.closed')").fetchall():
        payload = json.loads(r[3]).get("payload")
        if isinstance(payload, dict):
            agg.counter_event(r[0], r[1], r[2], payload)
    # the tickets' contributions are added by migration 24, once every table exists


@migration(22, "outbox_subject")
def _m22(conn: Any) -> None:
    """HQ's own ticket events (ticket.moved, the console's reassign) are indexed by their ticket,
    so HQ's ticket row folds them with the branch's events (hq/ingest.py refold_tickets)."""
    conn.executescript("""
    ALTER TABLE outbox ADD COLUMN subject TEXT;
    CREATE INDEX outbox_subject ON outbox(branch_id, subject) WHERE subject IS NOT NULL;
    """)


@migration(23, "device_health")
def _m23(conn: Any) -> None:
    """Each device's latest health report over the branch link (hq/fleet.py, the fleet page)."""
    conn.executescript("""
    CREATE TABLE device_health (
        branch_id TEXT NOT NULL, device_id TEXT NOT NULL, reported_at INTEGER NOT NULL,
        app_version TEXT NOT NULL, role TEXT NOT NULL, clock_offset_ms INTEGER NOT NULL,
        pending INTEGER NOT NULL, printer TEXT, printer_message TEXT NOT NULL DEFAULT '',
        peers TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (branch_id, device_id));
    """)


@migration(24, "analytics_days")
def _m24(conn: Any) -> None:
    """The daily roll-up of analytics_hours (pages without hours read a tenth of the rows), and
    bookings nobody checked in (booking_missed) in every analytics table."""
    from hq.aggregates import MEASURES
    measures = ", ".join(f"{m} INTEGER NOT NULL DEFAULT 0" for m in MEASURES)
    conn.executescript(f"""
    ALTER TABLE analytics_hours ADD COLUMN booking_missed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE analytics_staff ADD COLUMN booking_missed INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE analytics_days (
        branch_id TEXT NOT NULL, service TEXT NOT NULL, day TEXT NOT NULL, weekday INTEGER NOT NULL,
        {measures}, PRIMARY KEY (branch_id, service, day));
    CREATE INDEX analytics_days_day ON analytics_days(branch_id, day);
    """)
    from hq.aggregates import rebuild
    rebuild(conn, running=False)  # every ticket's contribution, to every table (hours, days, staff)


@migration(25, "tickets_waiting")
def _m25(conn: Any) -> None:
    """The front of each queue in call order from a small partial index (hq.live.front_of_queues,
    asked once per ingested push): only waiting tickets are in it."""
    conn.executescript("""
    CREATE INDEX tickets_waiting ON tickets(branch_id, day, service, priority DESC,
        (COALESCE(effective_ms, issued_ms)), id)
        WHERE issued_ms IS NOT NULL AND called_ms IS NULL AND started_ms IS NULL AND completed_ms IS NULL
        AND no_show_ms IS NULL AND cancelled_ms IS NULL;
    """)


@migration(26, "postgresql_ready")
def _m26(conn: Any) -> None:
    """A change feed of the events table that PostgreSQL has too (SQLite's is its rowid)."""
    if conn.dialect == "postgresql":
        conn.executescript("""
        ALTER TABLE events ADD COLUMN rid BIGINT GENERATED BY DEFAULT AS IDENTITY;
        CREATE INDEX events_rid ON events(rid);
        """)


@migration(27, "shared_rate_limits")
def _m27(conn: Any) -> None:
    """Rate-limit buckets in the database: every HQ process draws from the same ones (hq/ratelimit.py)."""
    conn.executescript("""
    CREATE TABLE rate_buckets (
        name TEXT NOT NULL, key TEXT NOT NULL, tokens REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (name, key));
    CREATE INDEX rate_buckets_at ON rate_buckets(at);
    """)


@migration(28, "outbox_queue")
def _m28(conn: Any) -> None:
    """Booking events waiting to be chained into their branch's outbox (PostgreSQL; hq/outbox.py sequence)."""
    conn.executescript("""
    CREATE TABLE outbox_queue (
        id INTEGER PRIMARY KEY, branch_id TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL,
        now_ms INTEGER NOT NULL);
    """)


@migration(29, "slot_counts")
def _m29(conn: Any) -> None:
    """A counter row per booked slot: booking takes a place with one atomic upsert (hq/booking.py
    take_place) instead of counting the slot's bookings, so on PostgreSQL a booking locks only
    its slot's row, not the bookings index. Back-filled from the bookings that hold a place."""
    conn.executescript("""
    CREATE TABLE slot_counts (
        branch_id TEXT NOT NULL, service_id TEXT NOT NULL, slot_start INTEGER NOT NULL,
        booked INTEGER NOT NULL, PRIMARY KEY (branch_id, service_id, slot_start)) WITHOUT ROWID;
    """)
    conn.execute("INSERT INTO slot_counts (branch_id, service_id, slot_start, booked)"
                 " SELECT branch_id, service_id, slot_start, COUNT(*) FROM bookings WHERE status = 'booked'"
                 " GROUP BY branch_id, service_id, slot_start")


@migration(30, "service_target_wait")
def _m30(conn: Any) -> None:
    """A target wait per service (minutes; NULL: the HQ setting target_wait_s): defined in the
    catalogue, overridable per offer, written through to the branch's service row, which the
    live page, the analytics and the staffing advice read (hq/console/targets.py)."""
    conn.executescript("""
    ALTER TABLE catalogue ADD COLUMN target_wait_minutes INTEGER;
    ALTER TABLE catalogue_offers ADD COLUMN target_wait_minutes INTEGER;
    ALTER TABLE services ADD COLUMN target_wait_minutes INTEGER;
    """)


@migration(31, "analytics_running")
def _m31(conn: Any) -> None:
    """Analytics that read a bounded number of rows whatever the period (hq/aggregates.py): an
    organization's daily roll-up (the dashboard of all its branches), and running totals per
    branch, service, weekday and hour (heat map, bottlenecks: the period's end minus its start).
    Back-filled from analytics_days and analytics_hours."""
    from hq.aggregates import MEASURES, backfill_org_days, build_running
    measures = ", ".join(f"{m} INTEGER NOT NULL DEFAULT 0" for m in MEASURES)
    conn.executescript(f"""
    CREATE TABLE analytics_org_days (
        org_id TEXT NOT NULL, service TEXT NOT NULL, day TEXT NOT NULL, weekday INTEGER NOT NULL,
        {measures}, PRIMARY KEY (org_id, day, service)) WITHOUT ROWID;
    CREATE TABLE analytics_running (
        branch_id TEXT NOT NULL, day TEXT NOT NULL, service TEXT NOT NULL, hour INTEGER NOT NULL,
        weekday INTEGER NOT NULL, {measures}, PRIMARY KEY (branch_id, day, service, hour)) WITHOUT ROWID;
    CREATE TABLE analytics_running_span (
        branch_id TEXT NOT NULL, weekday INTEGER NOT NULL, first_day TEXT NOT NULL, last_day TEXT NOT NULL,
        PRIMARY KEY (branch_id, weekday));
    """)
    backfill_org_days(conn)
    build_running(conn)


@migration(32, "notifications_claim_index")
def _m32(conn: Any) -> None:
    """The dispatcher's claim (hq/notify.py: the oldest due of 'pending' and 'sending', LIMIT 50)
    read every due row of both statuses and sorted them, since (status, next_attempt_at) gives
    no order across two statuses: 90 ms a pass on PostgreSQL with a backlog of 30,000 after a
    booking burst, and more as the backlog grows. A partial index in the claim's order stops the
    scan after the rows it takes."""
    conn.execute("CREATE INDEX notifications_claim ON notifications(next_attempt_at, id)"
                 " WHERE status IN ('pending', 'sending')")


@migration(33, "catalogue_version")
def _m33(conn: Any) -> None:
    """A counter that every change to what decides a booking moves (PostgreSQL): the branch and
    service rows, hours, closed days, slot blocks and date capacities. An HQ process keeps a
    slot's day facts with the counter it read them at, and its booking statement writes only if
    the counter has not moved (hq/booking.py ``_target``, ``PgConn.facts``). Statement triggers, so a catalogue
    write of many rows moves it once. On SQLite the table is there (one schema) but nothing
    reads it: a SQLite booking reads its facts in its own write transaction."""
    conn.executescript("""
    CREATE TABLE catalogue_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
    INSERT INTO catalogue_version (id, version) VALUES (1, 0);
    """)
    if conn.dialect != "postgresql":
        return
    conn.execute("CREATE FUNCTION smartq_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$ BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; RETURN NULL; END $$")
    for table in ("branches", "services", "hours", "closed_days", "slot_blocks", "slot_capacity"):
        conn.execute(f"CREATE TRIGGER {table}_catalogue_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
                     f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION smartq_catalogue_changed()")


_PG_DDL = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b", re.I), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT ROWID", re.I), ")"),
)


def portable_ddl(sql: str, dialect: str) -> str:
    """SQLite DDL as the dialect's: 64-bit INTEGER, identity ids, no WITHOUT ROWID on PostgreSQL."""
    if dialect != "postgresql":
        return sql
    for pattern, repl in _PG_DDL:
        sql = pattern.sub(repl, sql)
    return sql


def _begin(conn: Any) -> None:
    if conn.dialect == "postgresql":
        conn.execute("BEGIN")
    else:
        begin_immediate(conn)


def apply_migrations(conn: Any) -> list[int]:
    """Apply the missing migrations in order; return the numbers applied.

    On PostgreSQL the caller holds an advisory lock, so HQ processes starting at once migrate once.
    """
    conn.execute(portable_ddl("CREATE TABLE IF NOT EXISTS migrations (number INTEGER NOT NULL PRIMARY KEY,"
                              " name TEXT NOT NULL, applied_at INTEGER NOT NULL)", conn.dialect))
    done = {row[0] for row in conn.execute("SELECT number FROM migrations")}
    applied = []
    for number, name, fn in sorted(MIGRATIONS):
        if number in done:
            continue
        _begin(conn)
        try:
            # executescript would COMMIT our transaction; run statements one by one instead.
            _run_in_tx(conn, fn)
            conn.execute("INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)",
                         (number, name, int(time.time())))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        logger.info("applied migration %03d %s", number, name)
        applied.append(number)
    return applied


class _TxConn:
    """Wraps a connection so a migration's executescript runs statement by statement, in the
    dialect's DDL."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    def executescript(self, script: str) -> None:
        for stmt in split_statements(portable_ddl(script, self.dialect)):
            self._conn.execute(stmt)

    def execute(self, *args: Any) -> Any:
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> Any:
        return self._conn.executemany(*args)


def split_statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _run_in_tx(conn: Any, fn: Migration) -> None:
    fn(_TxConn(conn))
