"""The append-only, signed event log keyed (origin, seq), with idempotent ingest.

Runs on the writer thread: every method that writes takes the writer's connection and is
called inside its transaction, so appending an event and folding it (the `apply` callback)
commit together or not at all.

Ingest of foreign events:
- a duplicate (origin, seq) with the same hash is ignored; with another hash it is rejected
  (the origin signed two different events for one place: equivocation);
- a bad signature, an origin not on the roster or another branch is rejected and logged;
- an event whose predecessor is missing is held until the gap is filled;
- an event whose `prev` does not match its predecessor's hash is rejected (broken chain);
- an event more than `max_future_ms` ahead of our clock is quarantined, not folded, until the
  clock catches up or an operator accepts it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync import verify
from sync.db import run_script
from sync.envelope import GENESIS_PREV, INT_MAX, Event, MalformedEvent, canonical_json, check_payload_value, loads
from sync.hlc import HybridLogicalClock, physical_ms

logger = logging.getLogger(__name__)

MAX_FUTURE_MS = verify.MAX_FUTURE_MS
REJECTED_KEEP = 1000

Keyring = Callable[[str], Ed25519PublicKey | None]
Apply = Callable[[sqlite3.Connection, Event], None]
Subject = Callable[[Event], "str | None"]
VersionVector = dict[str, int]


def _create_log_tables(conn: sqlite3.Connection) -> None:
    run_script(conn, 
        """
        CREATE TABLE events (
            origin TEXT NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
            type TEXT NOT NULL, schema INTEGER NOT NULL, payload TEXT NOT NULL,
            branch TEXT NOT NULL, prev TEXT NOT NULL, sig TEXT NOT NULL, hash TEXT NOT NULL,
            received_ms INTEGER NOT NULL, subject TEXT,
            PRIMARY KEY (origin, seq)
        ) WITHOUT ROWID;
        CREATE INDEX events_by_hlc ON events (hlc, origin, seq);
        CREATE INDEX events_by_subject ON events (subject, hlc, origin, seq) WHERE subject IS NOT NULL;
        CREATE TABLE heads (
            origin TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL, hlc INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE held (
            origin TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, received_ms INTEGER NOT NULL,
            PRIMARY KEY (origin, seq)
        ) WITHOUT ROWID;
        CREATE TABLE quarantine (
            origin TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, reason TEXT NOT NULL,
            received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq)
        ) WITHOUT ROWID;
        CREATE TABLE rejected (
            id INTEGER PRIMARY KEY, origin TEXT, seq INTEGER, reason TEXT NOT NULL,
            body TEXT NOT NULL, received_ms INTEGER NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        """
    )


MIGRATIONS = [_create_log_tables]


@dataclass
class IngestResult:
    accepted: list[Event] = field(default_factory=list)
    duplicates: int = 0
    held: int = 0
    quarantined: int = 0
    rejected: list[tuple[str, int, str]] = field(default_factory=list)

    def merge(self, other: IngestResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.held += other.held
        self.quarantined += other.quarantined
        self.rejected += other.rejected


def row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    origin, seq, hlc, type_, schema, payload, branch, prev, sig = tuple(row)[:9]
    return Event(origin, seq, hlc, type_, schema, loads(payload), branch, prev, sig)


EVENT_COLUMNS = "origin, seq, hlc, type, schema, payload, branch, prev, sig"


class EventLog:
    """One device's view of the log. Write methods run on the writer thread only."""

    def __init__(
        self,
        *,
        device_id: str,
        branch: str,
        private_key: Ed25519PrivateKey,
        clock: HybridLogicalClock,
        keyring: Keyring,
        apply: Apply,
        subject: Subject = lambda event: None,
        max_future_ms: int = MAX_FUTURE_MS,
    ) -> None:
        """`subject` names what an event is about (indexed, for `events_about`); the log
        itself gives it no meaning."""
        self.device_id = device_id
        self.branch = branch
        self._key = private_key
        self.clock = clock
        self._keyring = keyring
        self._apply = apply
        self._subject = subject
        self._max_future_ms = max_future_ms
        self._committed_listeners: list[Callable[[list[Event]], None]] = []
        # Revoked origins: {origin: last seq still accepted}. What a revoked device did before
        # its revocation stays; anything later is rejected (set by the node from HQ's event).
        self.revoked: dict[str, int] = {}
        # Events appended in the running transaction, announced after COMMIT.
        self._pending: list[Event] = []
        self._job_mark = 0

    # -- transaction listener (see sync.writer) -------------------------------------------
    def on_commit(self, callback: Callable[[list[Event]], None]) -> Callable[[], None]:
        """Call `callback(events)` on the writer thread after each commit; returns unsubscribe."""
        self._committed_listeners.append(callback)
        return lambda: self._committed_listeners.remove(callback)

    def job_started(self) -> None:
        self._job_mark = len(self._pending)

    def job_failed(self) -> None:
        del self._pending[self._job_mark :]

    def committed(self) -> None:
        events, self._pending = self._pending, []
        if events:
            for callback in list(self._committed_listeners):
                callback(events)

    def rolled_back(self) -> None:
        self._pending = []

    # -- start-up --------------------------------------------------------------------------
    def seed_clock(self, conn: sqlite3.Connection) -> None:
        """Make the HLC start after everything this device has stored or persisted.

        The heads keep each origin's latest timestamp even after compaction deleted its events;
        meta 'hlc' is what stores written before that kept (one more page per append)."""
        seen = conn.execute("SELECT max(hlc) FROM events").fetchone()[0] or 0
        heads = conn.execute("SELECT max(hlc) FROM heads").fetchone()[0] or 0
        meta = conn.execute("SELECT value FROM meta WHERE key = 'hlc'").fetchone()
        persisted = int(meta[0]) if meta else 0
        self.clock.observe(max(seen, heads, persisted))

    # -- local appends ---------------------------------------------------------------------
    def append(self, conn: sqlite3.Connection, type_: str, payload: dict[str, Any], schema: int = 1) -> Event:
        """Create, sign, store and fold one event of this device."""
        check_payload_value(payload)
        head = conn.execute("SELECT seq, hash FROM heads WHERE origin = ?", (self.device_id,)).fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_PREV)
        hlc = self.clock.now()
        event = Event(self.device_id, seq, hlc, type_, schema, payload, self.branch, prev).signed(self._key)
        self._store(conn, event)  # its heads row is the persisted HLC (seed_clock)
        self._apply(conn, event)
        self._pending.append(event)
        return event

    def _store(self, conn: sqlite3.Connection, event: Event) -> None:
        conn.execute(
            f"INSERT INTO events ({EVENT_COLUMNS}, hash, received_ms, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.origin, event.seq, event.hlc, event.type, event.schema,
                canonical_json(event.payload).decode("utf-8"), event.branch, event.prev, event.sig,
                event.hash, self.clock.wall_ms(), self._subject(event),
            ),
        )
        conn.execute(
            "INSERT INTO heads (origin, seq, hash, hlc) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, hlc = excluded.hlc",
            (event.origin, event.seq, event.hash, event.hlc),
        )

    # -- foreign events --------------------------------------------------------------------
    def ingest(self, conn: sqlite3.Connection, raw_events: Iterable[Mapping[str, Any] | Event]) -> IngestResult:
        """Take events from a peer. Idempotent; never raises for bad events (they are rejected)."""
        result = IngestResult()
        parsed: list[Event] = []
        for raw in raw_events:
            if isinstance(raw, Event):
                parsed.append(raw)
                continue
            try:
                parsed.append(Event.from_dict(raw))
            except MalformedEvent as err:
                origin = raw.get("origin") if isinstance(raw, Mapping) else None
                seq = raw.get("seq") if isinstance(raw, Mapping) else None
                self._reject(conn, result, str(origin) if origin is not None else None,
                             seq if isinstance(seq, int) and 0 <= seq <= INT_MAX else None,
                             verify.malformed(str(err)).message, raw)
        parsed.sort(key=lambda e: (e.origin, e.seq))
        runs = _ChainRuns(parsed, self._keyring)
        for index, event in enumerate(parsed):
            self._ingest_one(conn, event, result, allow_future=False, verified=lambda i=index: runs.verified(i))
        return result

    def _ingest_one(self, conn: sqlite3.Connection, event: Event, result: IngestResult, *, allow_future: bool,
                    verified: Callable[[], bool] | None = None) -> None:
        """`verified()` says whether the batch already proved this event authentic (see
        `_ChainRuns`); without it (or when it says no) the signature is checked here."""
        if event.origin == self.device_id:
            existing = conn.execute(
                "SELECT hash FROM events WHERE origin = ? AND seq = ?", (event.origin, event.seq)
            ).fetchone()
            if existing is not None and existing[0] == event.hash:
                result.duplicates += 1
            else:
                self._reject(conn, result, event.origin, event.seq, "claims to be this device", event.to_dict())
            return
        existing = conn.execute(
            "SELECT hash FROM events WHERE origin = ? AND seq = ?", (event.origin, event.seq)
        ).fetchone()
        if existing is not None:
            if not verify.equivocates(event, existing[0]):
                result.duplicates += 1
            else:
                self._reject(conn, result, event.origin, event.seq, verify.EQUIVOCATION.message, event.to_dict())
            return
        refusal = verify.authentic(event, branch=self.branch, key=self._keyring(event.origin),
                                   revoked_after=self.revoked.get(event.origin),
                                   verified=verified is not None and verified())
        if refusal is not None:
            self._reject(conn, result, event.origin, event.seq, refusal.message, event.to_dict())
            return
        if not allow_future and verify.too_far_ahead(event, self.clock.wall_ms(), self._max_future_ms):
            conn.execute(
                "INSERT OR IGNORE INTO quarantine (origin, seq, body, reason, received_ms) VALUES (?, ?, ?, ?, ?)",
                (event.origin, event.seq, canonical_json(event.to_dict()).decode("utf-8"),
                 verify.FUTURE.message, self.clock.wall_ms()),
            )
            logger.warning("quarantined %s/%d: hlc %d ms ahead of our clock", event.origin, event.seq,
                           physical_ms(event.hlc) - self.clock.wall_ms())
            result.quarantined += 1
            return
        head = conn.execute("SELECT seq, hash FROM heads WHERE origin = ?", (event.origin,)).fetchone()
        head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS_PREV)
        if event.seq > head_seq + 1:
            cur = conn.execute(
                "INSERT OR IGNORE INTO held (origin, seq, body, received_ms) VALUES (?, ?, ?, ?)",
                (event.origin, event.seq, canonical_json(event.to_dict()).decode("utf-8"), self.clock.wall_ms()),
            )
            result.held += cur.rowcount
            if cur.rowcount == 0:
                result.duplicates += 1
            return
        if not verify.chained(event, head_hash):
            self._reject(conn, result, event.origin, event.seq, verify.BROKEN_CHAIN.message, event.to_dict())
            return
        self._accept(conn, event, result)
        # Fill the gap: held successors that now connect.
        while True:
            nxt = conn.execute(
                "SELECT body FROM held WHERE origin = ? AND seq = ?", (event.origin, event.seq + 1)
            ).fetchone()
            if nxt is None:
                break
            conn.execute("DELETE FROM held WHERE origin = ? AND seq = ?", (event.origin, event.seq + 1))
            successor = Event.from_dict(loads(nxt[0]))
            if not verify.chained(successor, event.hash):
                self._reject(conn, result, successor.origin, successor.seq, verify.BROKEN_CHAIN.message, successor.to_dict())
                break
            if verify.too_far_ahead(successor, self.clock.wall_ms(), self._max_future_ms):
                self._ingest_one(conn, successor, result, allow_future=False)
                break
            self._accept(conn, successor, result)
            event = successor

    def _accept(self, conn: sqlite3.Connection, event: Event, result: IngestResult) -> None:
        self._store(conn, event)
        self.clock.observe(event.hlc)
        self._apply(conn, event)
        self._pending.append(event)
        result.accepted.append(event)

    def _reject(self, conn: sqlite3.Connection, result: IngestResult, origin: str | None, seq: int | None,
                reason: str, body: Any) -> None:
        logger.warning("rejected event %s/%s: %s", origin, seq, reason)
        try:
            text = canonical_json(body).decode("utf-8")
        except (TypeError, ValueError):
            text = repr(body)
        conn.execute(
            "INSERT INTO rejected (origin, seq, reason, body, received_ms) VALUES (?, ?, ?, ?, ?)",
            (origin, seq, reason, text[:8192], self.clock.wall_ms()),
        )
        conn.execute("DELETE FROM rejected WHERE id <= (SELECT max(id) FROM rejected) - ?", (REJECTED_KEEP,))
        result.rejected.append((origin or "?", seq or 0, reason))

    def release_quarantine(self, conn: sqlite3.Connection, *, accept: tuple[str, int] | None = None) -> IngestResult:
        """Ingest quarantined events whose time has come, or the one an operator accepts."""
        result = IngestResult()
        horizon = self.clock.wall_ms() + self._max_future_ms
        rows = conn.execute("SELECT origin, seq, body FROM quarantine ORDER BY origin, seq").fetchall()
        for origin, seq, body in rows:
            event = Event.from_dict(loads(body))
            forced = accept == (origin, seq)
            if physical_ms(event.hlc) <= horizon or forced:
                conn.execute("DELETE FROM quarantine WHERE origin = ? AND seq = ?", (origin, seq))
                self._ingest_one(conn, event, result, allow_future=forced)
        return result


class _ChainRuns:
    """Authenticate a sorted batch with one signature check per chain run, not per event.

    A *run* is a maximal stretch of one origin's events in the batch where each event's
    `prev` is the hash of the one before (consecutive seqs). An event's hash covers its
    whole envelope, signature included, so a valid signature on the *last* event of a run
    vouches for every event before it through the hash chain: changing any of them would
    change its hash and break the next `prev`. Ed25519 verification (~120 µs) dominates a
    heal of thousands of events; this makes it one check per origin per batch.

    Checked lazily (duplicates need no check at all). When the run's last signature fails,
    `verified` says False and the caller checks each event's own signature, so the genuine
    events before a forged one are still accepted.
    """

    def __init__(self, events: list[Event], keyring: Keyring) -> None:
        self._events = events
        self._keyring = keyring
        self._last: list[int] = [0] * len(events)  # index of the last event of each event's run
        end = len(events) - 1
        for i in range(len(events) - 1, -1, -1):
            if i < len(events) - 1:
                nxt, cur = events[i + 1], events[i]
                if not (nxt.origin == cur.origin and nxt.seq == cur.seq + 1 and nxt.prev == cur.hash):
                    end = i
            self._last[i] = end
        self._outcome: dict[int, bool] = {}

    def verified(self, index: int) -> bool:
        last = self._last[index]
        if last == index:  # a lone event, or the last of a run: known only if already checked
            return self._outcome.get(index, False)
        outcome = self._outcome.get(last)
        if outcome is None:
            event = self._events[last]
            key = self._keyring(event.origin)
            outcome = key is not None and event.signature_valid(key)
            self._outcome[last] = outcome
            if not outcome:
                logger.warning("signature of %s/%d does not verify; checking its run one by one",
                               event.origin, event.seq)
        return outcome


ChainRuns = _ChainRuns  # HQ's ingest authenticates its batches the same way


# -- reads (any connection) ------------------------------------------------------------------

def version_vector(conn: sqlite3.Connection) -> VersionVector:
    """{origin: highest contiguous seq}; heads only ever advance contiguously."""
    return {origin: seq for origin, seq in conn.execute("SELECT origin, seq FROM heads")}


def events_since(conn: sqlite3.Connection, vv: Mapping[str, int], limit: int = 1000) -> list[Event]:
    """Events not covered by `vv`, at most `limit`, in (origin, seq) order per origin."""
    out: list[Event] = []
    for origin, head in conn.execute("SELECT origin, seq FROM heads ORDER BY origin").fetchall():
        have = int(vv.get(origin, 0))
        if head <= have:
            continue
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?",
            (origin, have, limit - len(out)),
        ).fetchall()
        out.extend(row_to_event(r) for r in rows)
        if len(out) >= limit:
            break
    return out


def events_about(conn: sqlite3.Connection, subject: str) -> list[Event]:
    """Every stored event with this subject, in total order."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE subject = ? ORDER BY hlc, origin, seq", (subject,)
    ).fetchall()
    return [row_to_event(r) for r in rows]


def all_events(conn: sqlite3.Connection) -> list[Event]:
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY hlc, origin, seq").fetchall()
    return [row_to_event(r) for r in rows]


def verify_chains(conn: sqlite3.Connection, keyring: Keyring | None = None,
                  floors: Mapping[str, tuple[int, str]] | None = None) -> list[str]:
    """Every problem found in the stored chains (empty when all verify).

    `floors` gives, per origin whose oldest events were compacted away, the last removed
    (seq, hash): its chain is checked from there."""
    problems: list[str] = []
    origin = None
    floors = floors or {}
    expected_seq, prev_hash = 1, GENESIS_PREV
    rows = conn.execute(f"SELECT {EVENT_COLUMNS}, hash FROM events ORDER BY origin, seq")
    for row in rows:
        event = row_to_event(row)
        if event.origin != origin:
            origin = event.origin
            floor_seq, floor_hash = floors.get(origin, (0, GENESIS_PREV))
            expected_seq, prev_hash = floor_seq + 1, floor_hash
        where = f"{event.origin}/{event.seq}"
        if event.seq != expected_seq:
            problems.append(f"{where}: expected seq {expected_seq}")
        if event.prev != prev_hash:
            problems.append(f"{where}: prev does not match the previous event's hash")
        if event.hash != row[9]:
            problems.append(f"{where}: stored hash does not match the content")
        if keyring is not None:
            key = keyring(event.origin)
            if key is None or not event.signature_valid(key):
                problems.append(f"{where}: signature does not verify")
        expected_seq, prev_hash = event.seq + 1, event.hash
    for origin_, seq, hash_ in conn.execute("SELECT origin, seq, hash FROM heads"):
        last = conn.execute("SELECT hash FROM events WHERE origin = ? AND seq = ?", (origin_, seq)).fetchone()
        if last is None or last[0] != hash_:
            problems.append(f"{origin_}: head {seq} does not match the stored events")
    return problems


__all__ = [
    "MIGRATIONS", "ChainRuns", "EventLog", "IngestResult", "Keyring", "VersionVector", "all_events", "events_about", "events_since",
    "row_to_event", "verify_chains", "version_vector",
]
