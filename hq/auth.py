"""Accounts: Argon2id password hashes, sessions (cookie) and bearer tokens, role/tenant checks.

Access rule (every admin route goes through :func:`check_org` or :func:`check_branch`):
a resource outside the caller's tenant is reported as 404 (its existence is not revealed);
a resource inside it that the role may not change is 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from hq.errors import ApiError, forbidden, not_found

ROLES = ("super_admin", "org_admin", "branch_manager", "staff")
Level = Literal["read", "manage", "admin"]
COOKIE_NAME = "smartq_session"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, memory_kib: int, iterations: int, lanes: int) -> str:
    """PHC-style string: $argon2id$v=19$m=..,t=..,p=..$salt$hash."""
    salt = secrets.token_bytes(16)
    kdf = Argon2id(salt=salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_kib)
    digest = kdf.derive(password.encode("utf-8"))
    return f"$argon2id$v=19$m={memory_kib},t={iterations},p={lanes}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, algo, _version, params, salt, digest = encoded.split("$")
        if algo != "argon2id":
            return False
        p = dict(item.split("=") for item in params.split(","))
        kdf = Argon2id(salt=_unb64(salt), length=len(_unb64(digest)), iterations=int(p["t"]),
                       lanes=int(p["p"]), memory_cost=int(p["m"]))
        kdf.verify(password.encode("utf-8"), _unb64(digest))
    except (InvalidKey, ValueError, KeyError):
        return False
    return True


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    email: str
    role: str
    org_id: str | None
    branch_id: str | None
    via: str  # "cookie" or "bearer"
    csrf: str = ""

    def as_json(self) -> dict[str, object]:
        return {"id": self.user_id, "email": self.email, "role": self.role,
                "org": self.org_id, "branch": self.branch_id}


def create_session(conn: sqlite3.Connection, user_id: int, kind: str, expires_at: int,
                   created_at: int = 0) -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if kind == "cookie" else ""
    conn.execute("INSERT INTO sessions (token_hash, user_id, kind, csrf, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                 (token_digest(token), user_id, kind, csrf, expires_at, created_at))
    return token, csrf


def lookup_session(conn: sqlite3.Connection, token: str, kind: str, now: int) -> Principal | None:
    row = conn.execute(
        "SELECT u.id, u.email, u.role, u.org_id, u.branch_id, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = ? AND s.kind = ? AND s.expires_at > ? AND u.disabled = 0", (token_digest(token), kind, now)).fetchone()
    if row is None:
        return None
    return Principal(row[0], row[1], row[2], row[3], row[4], kind, row[5])


def csrf_ok(principal: Principal, supplied: str | None) -> bool:
    return bool(supplied) and hmac.compare_digest(principal.csrf, supplied or "")


def require(principal: Principal | None) -> Principal:
    if principal is None:
        raise ApiError(401, "unauthorized", "log in or send a bearer token")
    return principal


def check_org(p: Principal, org_id: str, level: Level) -> None:
    """Raise unless ``p`` may act at ``level`` on organization ``org_id``."""
    if p.role == "super_admin":
        return
    if p.org_id != org_id:
        raise not_found("organization")
    if p.role == "org_admin":
        return
    if level != "read":
        raise forbidden("only an org admin may do this")


def check_branch(p: Principal, org_id: str, branch_id: str, level: Level) -> None:
    """Raise unless ``p`` may act at ``level`` on branch ``branch_id`` of ``org_id``.

    read: everyone of the branch; manage (services, counters, hours): branch manager and up;
    admin (devices, staff, accounts): org admin and up.
    """
    if p.role == "super_admin":
        return
    if p.org_id != org_id:
        raise not_found("branch")
    if p.role == "org_admin":
        return
    if p.branch_id != branch_id:
        raise not_found("branch")
    if level == "read":
        return
    if level == "manage" and p.role == "branch_manager":
        return
    raise forbidden(f"role {p.role} may not do this")
