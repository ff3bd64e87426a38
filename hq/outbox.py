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


def tick_hlc(conn: sqlite3.Connection, now_ms: int) -> int:
    row = conn.execute("SELECT hlc FROM hq_clock WHERE id = 1").fetchone()
    hlc = next_hlc(row[0] if row else 0, now_ms)
    conn.execute("INSERT INTO hq_clock (id, hlc) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET hlc = excluded.hlc", (hlc,))
    return hlc


def emit(conn: sqlite3.Connection, key: Ed25519PrivateKey, branch_id: str, type_: str,
         payload: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """Append one signed event to the branch's outbox inside the caller's transaction."""
    last = conn.execute("SELECT seq, hash FROM outbox WHERE branch_id = ? ORDER BY seq DESC LIMIT 1",
                        (branch_id,)).fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, "")
    event = sign_event(key, {
        "origin": hq_origin(branch_id), "seq": seq, "hlc": tick_hlc(conn, now_ms), "type": type_,
        "schema": SCHEMA, "payload": payload, "branch": branch_id, "prev": prev,
    })
    envelope = event.to_dict()
    # The Event hashes its own canonical form: no second parse/validation of what we just built.
    ticket = payload.get("ticket") if type_.startswith("ticket.") else None  # HQ's ticket.moved
    conn.execute("INSERT INTO outbox (branch_id, seq, hlc, type, envelope, hash, subject) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (branch_id, seq, envelope["hlc"], type_, orjson.dumps(envelope).decode(), event.hash,
                  ticket if isinstance(ticket, str) else None))
    return envelope


def pending(conn: sqlite3.Connection, branch_id: str, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """Envelopes for ``branch_id`` with seq > after_seq, in order (what the branch link ships)."""
    rows = conn.execute("SELECT envelope FROM outbox WHERE branch_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (branch_id, after_seq, limit)).fetchall()
    return [json.loads(r[0]) for r in rows]


def mark_shipped(conn: sqlite3.Connection, branch_id: str, up_to_seq: int, now_s: int) -> None:
    conn.execute("UPDATE outbox SET shipped_at = ? WHERE branch_id = ? AND seq <= ? AND shipped_at IS NULL",
                 (now_s, branch_id, up_to_seq))
