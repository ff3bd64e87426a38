"""Signed HQ config events, one gapless chain per branch, waiting for the branch link.

Each branch gets its own HQ origin ``hq:<branch>`` so the branch sees a contiguous seq (its
version vector needs it) and a per-origin hash chain, as for device events (DESIGN §4).
"""

from __future__ import annotations

import json
import sqlite3

import orjson
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq.signing import next_hlc, sign_event

SCHEMA = 1


def hq_origin(branch_id: str) -> str:
    return f"hq:{branch_id}"


def emit(conn: sqlite3.Connection, key: Ed25519PrivateKey, branch_id: str, type_: str,
         payload: dict[str, Any], now_ms: int, *, defer: bool = False, after_hlc: int = 0) -> dict[str, Any] | None:
    """Append one signed event to the branch's outbox inside the caller's transaction.

    ``defer`` (bookings): on PostgreSQL the event is queued in ``outbox_queue`` instead, and
    chained by :func:`sequence` right after the commit, many transactions' events in one pass
    (hq/db_pg.py runs it before the write returns). Appending to a branch's chain is a serial
    point; inside every booking transaction it made concurrent bookings of a branch fail
    with serialization errors. SQLite has one writer, so it appends at once.

    The HLC follows the branch's own last event (its origin ``hq:<branch>``), not one clock row
    for all of HQ: that row was a point every write of every branch contended on (PostgreSQL
    answered concurrent writers with serialization failures)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        if defer:
            conn.execute("INSERT INTO outbox_queue (branch_id, type, payload, now_ms) VALUES (?, ?, ?, ?)",
                         (branch_id, type_, orjson.dumps(payload).decode(), now_ms))
            conn.queued = True
            return None
        # Events queued for this branch were committed before this one: they go first, or a
        # console reassign could ship a booking's cancel ahead of its creation (when the pass
        # that chains the queue failed and nothing has run it since).
        _chain(conn, key, conn.execute("SELECT id, branch_id, type, payload, now_ms FROM outbox_queue"
                                       " WHERE branch_id = ? ORDER BY id", (branch_id,)).fetchall())
    return _append(conn, key, branch_id, type_, payload, now_ms, after_hlc)


def _append(conn: Any, key: Ed25519PrivateKey, branch_id: str, type_: str, payload: dict[str, Any],
            now_ms: int, after_hlc: int = 0) -> dict[str, Any]:
    seq, prev, hlc = _head(conn, branch_id)
    envelope, values = _next(key, branch_id, (seq, prev, max(hlc, after_hlc)), type_, payload, now_ms)
    conn.execute(_INSERT, values)
    return envelope


_INSERT = "INSERT INTO outbox (branch_id, seq, hlc, type, envelope, hash, subject) VALUES (?, ?, ?, ?, ?, ?, ?)"


def _head(conn: Any, branch_id: str) -> tuple[int, str, int]:
    """(seq, hash, hlc) of the branch's last HQ event, (0, "", 0) before the first."""
    last = conn.execute("SELECT seq, hash, hlc FROM outbox WHERE branch_id = ? ORDER BY seq DESC LIMIT 1",
                        (branch_id,)).fetchone()
    return (last[0], last[1], last[2]) if last else (0, "", 0)


def _next(key: Ed25519PrivateKey, branch_id: str, head: tuple[int, str, int], type_: str, payload: dict[str, Any],
          now_ms: int) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The signed event after ``head`` and the values of its outbox row."""
    seq, prev, last_hlc = head
    event = sign_event(key, {
        "origin": hq_origin(branch_id), "seq": seq + 1, "hlc": next_hlc(last_hlc, now_ms), "type": type_,
        "schema": SCHEMA, "payload": payload, "branch": branch_id, "prev": prev,
    })
    envelope = event.to_dict()
    # The Event hashes its own canonical form: no second parse/validation of what we just built.
    ticket = payload.get("ticket") if type_.startswith("ticket.") else None  # HQ's ticket.moved
    return envelope, (branch_id, seq + 1, envelope["hlc"], type_, orjson.dumps(envelope).decode(), event.hash,
                      ticket if isinstance(ticket, str) else None)


SEQUENCE_BATCH = 2000  # queued events chained per pass (a pass that chained this many runs again)


def sequence(conn: Any, key: Ed25519PrivateKey, limit: int = SEQUENCE_BATCH) -> int:
    """Chain queued events (``emit(defer=True)``) into their branches' outboxes, oldest first.

    The queue's rows are taken with one ``DELETE ... RETURNING`` (a round trip fewer per pass
    than a read and a delete); the pass's transaction makes that and the appends one."""
    rows = conn.execute("DELETE FROM outbox_queue WHERE id IN (SELECT id FROM outbox_queue ORDER BY id LIMIT ?)"
                        " RETURNING id, branch_id, type, payload, now_ms", (limit,)).fetchall()
    return _chain(conn, key, sorted(rows, key=lambda r: r[0]), deleted=True)


def _chain(conn: Any, key: Ed25519PrivateKey, rows: list[Any], *, deleted: bool = False) -> int:
    """Append ``rows`` of the queue in order: one head read per branch, one batch of inserts
    and (unless the caller took them out already) one of deletes (psycopg sends an
    ``executemany`` as one pipeline), whatever their number."""
    heads: dict[str, tuple[int, str, int]] = {}
    values = []
    for r in rows:
        head = heads.get(r[1]) or _head(conn, r[1])
        envelope, row = _next(key, r[1], head, r[2], orjson.loads(r[3]), r[4])
        heads[r[1]] = (row[1], row[5], row[2])
        values.append(row)
    if rows:
        conn.executemany(_INSERT, values)
        if not deleted:
            conn.executemany("DELETE FROM outbox_queue WHERE id = ?", [(r[0],) for r in rows])
    return len(rows)


def queued_for(conn: Any, branch_id: str) -> bool:
    """Whether events of ``branch_id`` wait to be chained (PostgreSQL; the table is empty on SQLite)."""
    return conn.execute("SELECT 1 FROM outbox_queue WHERE branch_id = ? LIMIT 1", (branch_id,)).fetchone() is not None


async def settle(db: Any, branch_id: str) -> None:
    """Chain what is queued for ``branch_id`` before its chain is read. PostgreSQL answers a
    booking once it is committed and chains its event in the chainer's next pass
    (hq/db_pg.py); SQLite chains inside the booking's transaction, so nothing is ever queued."""
    if getattr(db, "chain", None) is not None and await db.read(lambda c: queued_for(c, branch_id)):
        await db.chain_now()


def pending(conn: sqlite3.Connection, branch_id: str, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """Envelopes for ``branch_id`` with seq > after_seq, in order (what the branch link ships)."""
    rows = conn.execute("SELECT envelope FROM outbox WHERE branch_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (branch_id, after_seq, limit)).fetchall()
    return [json.loads(r[0]) for r in rows]


def mark_shipped(conn: sqlite3.Connection, branch_id: str, up_to_seq: int, now_s: int) -> None:
    conn.execute("UPDATE outbox SET shipped_at = ? WHERE branch_id = ? AND seq <= ? AND shipped_at IS NULL",
                 (now_s, branch_id, up_to_seq))
