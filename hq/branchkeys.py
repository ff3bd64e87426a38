"""Each branch's counter key: HQ seals the staff list (names, PIN hashes) of `config.staff` to it.

The staff PIN hashes are what a thief would brute-force (a 4-digit PIN is 10,000 guesses). Only
counter devices verify PINs, so only they get the branch's private counter key (in their
enrollment bundle); kiosks and displays relay the sealed staff list without being able to
read it, and neither can anyone who copies their disk or listens on the LAN.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sync.sealed import parse_public_key, public_key_text, seal


def counter_key(conn: sqlite3.Connection, branch_id: str) -> tuple[str, str]:
    """(private PEM, public key text) of the branch's counter key, created on first use."""
    row = conn.execute("SELECT private_pem, public_key FROM branch_keys WHERE branch_id = ?", (branch_id,)).fetchone()
    if row is None:
        key = X25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
        conn.execute("INSERT INTO branch_keys (branch_id, private_pem, public_key) VALUES (?, ?, ?)",
                     (branch_id, pem, public_key_text(key.public_key())))
        return pem, public_key_text(key.public_key())
    return row[0], row[1]


def sealed_staff(conn: sqlite3.Connection, branch_id: str, staff: list[dict[str, Any]]) -> dict[str, Any]:
    """The `config.staff` payload: `{sealed}`, the staff list sealed to the counter key."""
    _, public = counter_key(conn, branch_id)
    return {"sealed": seal(parse_public_key(public), json.dumps({"staff": staff}), key_id=f"counter-{branch_id}")}
