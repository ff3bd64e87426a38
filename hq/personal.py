"""HQ's personal-data keys: devices seal phone numbers to the current one (sync.sealed).

One X25519 key per UTC day, created when first needed, announced to branches in the link's
hello (`pd_key: {id, public_key}`). HQ opens sealed values while it holds the private key
(to send "your turn is near"); the purge destroys private keys older than the retention
period, so what was sealed to them is unreadable at HQ and at every branch, events included,
while the events, their signatures and the state hashes stay unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sync.sealed import SealedError, key_id_of, open_sealed, public_key_text


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def current_key(conn: sqlite3.Connection, now: float) -> dict[str, str]:
    """Today's key (created on first use): {id, public_key}."""
    key_id = _day(now)
    row = conn.execute("SELECT public_key FROM pd_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None:
        key = X25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
        public = public_key_text(key.public_key())
        conn.execute("INSERT INTO pd_keys (id, created_at, private_pem, public_key) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (id) DO NOTHING",
                     (key_id, int(now), pem, public))
        row = conn.execute("SELECT public_key FROM pd_keys WHERE id = ?", (key_id,)).fetchone()
    return {"id": key_id, "public_key": row[0]}


def open_value(conn: sqlite3.Connection, sealed: Any) -> str | None:
    """The plaintext of a sealed value, or None (malformed, unknown or destroyed key)."""
    try:
        row = conn.execute("SELECT private_pem FROM pd_keys WHERE id = ?", (key_id_of(sealed),)).fetchone()
        if row is None or row[0] is None:
            return None
        key = serialization.load_pem_private_key(row[0].encode("ascii"), password=None)
        assert isinstance(key, X25519PrivateKey)
        return open_sealed(key, sealed)
    except SealedError:
        return None


def destroy_keys(conn: sqlite3.Connection, now: float, after_days: int) -> int:
    """Destroy the private keys of days older than the retention period."""
    cutoff = _day(now - (after_days + 1) * 86400)
    return conn.execute("UPDATE pd_keys SET private_pem = NULL, destroyed_at = ? WHERE id <= ? AND private_pem IS NOT NULL",
                        (int(now), cutoff)).rowcount
