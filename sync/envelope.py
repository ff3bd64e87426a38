"""The signed event envelope (DESIGN §4, a contract) and its canonical encoding.

canonical(e) = JSON of every field but `sig`, keys sorted, no spaces, UTF-8.
sig          = Ed25519(canonical(e)), hex.
hash(e)      = SHA-256 of the canonical JSON of every field *including* `sig`, hex;
               the next event of the same origin carries it as `prev` (a per-device chain).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.keys import verify

GENESIS_PREV = ""
FIELDS = ("origin", "seq", "hlc", "type", "schema", "payload", "branch", "prev", "sig")
MAX_HLC = (1 << 64) - 1


class MalformedEvent(ValueError):
    """An envelope that does not have the contract's shape."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_payload_value(value: Any, path: str = "payload") -> None:
    """Payloads hold only JSON values with one canonical spelling: no floats."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
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


@dataclass(frozen=True, slots=True)
class Event:
    origin: str
    seq: int
    hlc: int
    type: str
    schema: int
    payload: dict[str, Any]
    branch: str
    prev: str
    sig: str = ""

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
        return canonical_json(self.unsigned())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

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
        if data["seq"] < 1 or not 0 <= data["hlc"] <= MAX_HLC or data["schema"] < 1:
            raise MalformedEvent("seq and schema start at 1; hlc is a 64-bit unsigned integer")
        if not isinstance(data["payload"], dict):
            raise MalformedEvent("payload must be an object")
        check_payload_value(data["payload"])
        return cls(**{name: data[name] for name in FIELDS})
