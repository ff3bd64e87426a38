"""The HQ signing key and the contract envelope (canonical JSON, Ed25519 hex sig, sha256 hash).

Kept here, small and dependency-free, so HQ follows the DESIGN §4 contract today; it is the same
encoding as sync's envelope module.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ENVELOPE_FIELDS = ("origin", "seq", "hlc", "type", "schema", "payload", "branch", "prev")


class KeyError_(ValueError):
    """A key file or public key text that cannot be used."""


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the HQ Ed25519 key (PKCS#8 PEM) or create it with mode 0600."""
    path = Path(path)
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as err:
            raise KeyError_(f"{path} is not a PEM private key") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"{path} is not an Ed25519 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Accept a raw 32-byte key as hex, or a PEM SubjectPublicKeyInfo."""
    text = (text or "").strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise KeyError_("not an Ed25519 public key")
            return key
        raw = bytes.fromhex(text)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, binascii.Error) as err:
        raise KeyError_("public key must be 64 hex characters or an Ed25519 PEM") from err


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_envelope(key: Ed25519PrivateKey, envelope: dict[str, Any]) -> dict[str, Any]:
    unsigned = {f: envelope[f] for f in ENVELOPE_FIELDS}
    return {**unsigned, "sig": key.sign(canonical(unsigned)).hex()}


def verify_envelope(key: Ed25519PublicKey, envelope: dict[str, Any]) -> bool:
    try:
        sig = bytes.fromhex(envelope["sig"])
        key.verify(sig, canonical({f: envelope[f] for f in ENVELOPE_FIELDS}))
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return False
    return True


def event_hash(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({**{f: envelope[f] for f in ENVELOPE_FIELDS}, "sig": envelope["sig"]})).hexdigest()


def next_hlc(previous: int, now_ms: int) -> int:
    """Hybrid logical clock tick: (unix_ms << 16) | counter, strictly increasing."""
    candidate = now_ms << 16
    return candidate if candidate > previous else previous + 1
