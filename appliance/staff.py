"""Staff PIN sessions for counter actions: scrypt PIN hashes, bearer tokens, lock-out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import SecurityConfig, StaffConfig
from appliance.errors import BadRequest, Forbidden, TooManyRequests, Unauthorized

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash`, the format of staff[].pin_hash."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt)}${enc(digest)}"


def _check_argon2id(pin: str, pin_hash: str) -> bool:
    """HQ's staff PIN hashes (PHC `$argon2id$v=19$m=..,t=..,p=..$salt$hash`, standard base64)."""
    from cryptography.exceptions import InvalidKey
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    def dec(text: str) -> bytes:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    try:
        _, algo, _version, params, salt, digest = pin_hash.split("$")
        p = dict(item.split("=") for item in params.split(","))
        Argon2id(salt=dec(salt), length=len(dec(digest)), iterations=int(p["t"]), lanes=int(p["p"]),
                 memory_cost=int(p["m"])).verify(pin.encode("utf-8"), dec(digest))
    except (InvalidKey, ValueError, KeyError, TypeError):
        return False
    return algo == "argon2id"


def check_pin(pin: str, pin_hash: str) -> bool:
    if pin_hash.startswith("$argon2id$"):
        return _check_argon2id(pin, pin_hash)
    try:
        scheme, n, r, p, salt, digest = pin_hash.split("$")
        dec = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode(), salt=dec(salt), n=int(n), r=int(r), p=int(p), dklen=len(dec(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, dec(digest))


def recent_failures(conn: sqlite3.Connection, *, since_ms: int, staff: str | None, counter: str) -> int:
    """Wrong PINs anywhere in the branch since `since_ms` (replicated `staff.pin_failed` events):
    aimed at `staff` when a staff id is given, else at `counter`."""
    from appliance.events import STAFF_PIN_FAILED
    field, value = ("$.staff", staff) if staff is not None else ("$.counter", counter)
    return int(conn.execute(
        "SELECT count(*) FROM events WHERE type = ? AND hlc >= ? AND json_extract(payload, ?) = ?",
        (STAFF_PIN_FAILED, since_ms << 16, field, value)).fetchone()[0])


@dataclass(frozen=True)
class Session:
    token: str
    staff_id: str
    staff_name: str
    counter: str
    expires_ms: int


class StaffSessions:
    """In-memory sessions (a restart asks staff to log in again). Thread-safe."""

    def __init__(self, staff: tuple[StaffConfig, ...], security: SecurityConfig, now_ms: Callable[[], int]) -> None:
        self._staff = staff
        self._security = security
        self._now_ms = now_ms
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def replace_staff(self, staff: tuple[StaffConfig, ...]) -> None:
        """The staff list changed (HQ's sealed config.staff, opened by a counter)."""
        with self._lock:
            self._staff = staff

    @property
    def required(self) -> bool:
        return self._security.require_staff_login

    def login(self, counter: str, pin: str, *, staff_id: str | None = None, branch_failures: int = 0) -> Session:
        """Blocking (scrypt): call it off the event loop. `staff_id`: the member the PIN must be
        of (the lock-out then follows that member); `branch_failures`: wrong PINs for this
        member (or counter) at every counter of the branch within the lock-out window."""
        if not pin or len(pin) > 32 or not pin.isdigit():
            raise BadRequest("pin must be 1 to 32 digits")
        now = self._now_ms()
        with self._lock:
            window = [t for t in self._failures.get(counter, []) if now - t < self._security.lockout_s * 1000]
            self._failures[counter] = window
            if max(len(window), branch_failures) >= self._security.max_pin_failures:
                who = f"for {staff_id}" if staff_id else "at this counter"
                raise TooManyRequests(f"too many wrong PINs {who}; wait a minute", code="locked_out")
        candidates = [s for s in self._staff if staff_id is None or s.id == staff_id]
        staff = next((s for s in candidates if check_pin(pin, s.pin_hash)), None)
        if staff is None:
            with self._lock:
                self._failures.setdefault(counter, []).append(now)
            raise Unauthorized("wrong PIN", code="wrong_pin")
        session = Session(secrets.token_urlsafe(24), staff.id, staff.name, counter,
                          now + self._security.session_ttl_s * 1000)
        with self._lock:
            self._failures.pop(counter, None)
            self._sessions[session.token] = session
        return session

    def logout(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def any_session(self, token: str | None) -> Session | None:
        """A valid session at any counter of this device (None when logins are not required)."""
        if token is None:
            if self.required:
                raise Unauthorized("log in with a staff PIN first (Authorization: Bearer <token>)")
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires_ms <= self._now_ms():
                self._sessions.pop(token, None)
                session = None
        if session is None:
            raise Unauthorized("staff session expired or unknown; log in again", code="session_expired")
        return session

    def check(self, token: str | None, counter: str) -> Session | None:
        """The session allowed to act at `counter`; None when logins are not required."""
        session = self.any_session(token)
        if session is not None and session.counter != counter:
            raise Forbidden(f"this session is for counter {session.counter}")
        return session
