"""The signed event envelope (DESIGN §4, a contract) and its canonical encoding.

canonical(e) = JSON of every field but `sig`, keys sorted, no spaces, UTF-8.
sig          = Ed25519(canonical(e)), hex.
hash(e)      = SHA-256 of the canonical JSON of every field *including* `sig`, hex;
               the next event of the same origin carries it as `prev` (a per-device chain).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.keys import verify

GENESIS_PREV = ""
FIELDS = ("origin", "seq", "hlc", "type", "schema", "payload", "branch", "prev", "sig")
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
# Every integer of the envelope is stored as a signed 64-bit column (SQLite INTEGER, PostgreSQL
# bigint): an event that could not be stored is malformed, refused like any other, never a crash.
MAX_HLC = INT_MAX


class MalformedEvent(ValueError):
    """An envelope that does not have the contract's shape."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8; byte-identical to json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False) (a test holds them equal), but fast."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as err:
        raise MalformedEvent(f"cannot encode canonically: {err}") from err


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def check_payload_value(value: Any, path: str = "payload") -> None:
    """Payloads hold only JSON values with one canonical spelling: no floats."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise MalformedEvent(f"{path} is not valid Unicode text") from err
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise MalformedEvent(f"{path} is outside the 64-bit integer range")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_payload_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedEvent(f"{path} has a non-string key")
            check_payload_value(item, f"{path}.{key}")
        return
    raise MalformedEvent(f"{path} holds a {type(value).__name__}; only str, int, bool, null, list, object")


class Event:
    """One envelope. Treat it as immutable: its canonical bytes and hash are cached."""

    __slots__ = ("origin", "seq", "hlc", "type", "schema", "payload", "branch", "prev", "sig", "_canonical", "_hash")

    def __init__(self, origin: str, seq: int, hlc: int, type: str, schema: int, payload: dict[str, Any],
                 branch: str, prev: str, sig: str = "") -> None:
        self.origin = origin
        self.seq = seq
        self.hlc = hlc
        self.type = type
        self.schema = schema
        self.payload = payload
        self.branch = branch
        self.prev = prev
        self.sig = sig
        self._canonical: bytes | None = None
        self._hash: str | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.origin, self.seq, self.sig))

    def __repr__(self) -> str:
        return f"Event({self.origin}/{self.seq} {self.type} hlc={self.hlc})"

    def replace(self, **changes: Any) -> Event:
        return Event(**{**self.to_dict(), **changes})

    def unsigned(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "seq": self.seq,
            "hlc": self.hlc,
            "type": self.type,
            "schema": self.schema,
            "payload": self.payload,
            "branch": self.branch,
            "prev": self.prev,
        }

    def canonical(self) -> bytes:
        if self._canonical is None:
            self._canonical = canonical_json(self.unsigned())
        return self._canonical

    def to_dict(self) -> dict[str, Any]:
        """The envelope as sent on the wire (the payload is shared, not copied)."""
        return {**self.unsigned(), "sig": self.sig}

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(canonical_json(self.to_dict())).hexdigest()
        return self._hash

    @property
    def key(self) -> tuple[int, str, int]:
        """The total order every device folds in: HLC, then origin, then seq."""
        return (self.hlc, self.origin, self.seq)

    def signed(self, private_key: Ed25519PrivateKey) -> Event:
        sig = private_key.sign(self.canonical()).hex()
        return Event(**{**self.unsigned(), "sig": sig})

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        try:
            sig = bytes.fromhex(self.sig)
        except ValueError:
            return False
        return len(sig) == 64 and verify(public_key, sig, self.canonical())

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        """Validate an envelope received from outside; raises MalformedEvent."""
        if not isinstance(data, dict):
            raise MalformedEvent("an event must be a JSON object")
        extra = set(data) - set(FIELDS)
        missing = set(FIELDS) - set(data)
        if missing or extra:
            raise MalformedEvent(f"event fields: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name in ("origin", "type", "branch", "prev", "sig"):
            if not isinstance(data[name], str):
                raise MalformedEvent(f"{name} must be a string")
        for name in ("seq", "hlc", "schema"):
            if not isinstance(data[name], int) or isinstance(data[name], bool):
                raise MalformedEvent(f"{name} must be an integer")
        if not data["origin"] or len(data["origin"]) > 64:
            raise MalformedEvent("origin must be 1-64 characters")
        if not 1 <= data["seq"] <= INT_MAX or not 1 <= data["schema"] <= INT_MAX:
            raise MalformedEvent(f"seq and schema must be from 1 to {INT_MAX}")
        if not 0 <= data["hlc"] <= MAX_HLC:
            raise MalformedEvent(f"hlc must be from 0 to {MAX_HLC}")
        if not isinstance(data["payload"], dict):
            raise MalformedEvent("payload must be an object")
        check_payload_value(data["payload"])
        event = cls(**{name: data[name] for name in FIELDS})
        event.canonical()  # anything that cannot be encoded canonically fails here
        return event
