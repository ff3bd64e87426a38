"""The HQ signing key, public-key parsing, and HQ's use of the contract envelope.

The envelope encoding (canonical JSON, Ed25519 hex `sig`, SHA-256 hash) lives in
`sync.envelope` only; the helpers here take and give plain dicts (what HQ stores as JSON)
and delegate to `sync.envelope.Event`, so HQ and the branches cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.envelope import Event, MalformedEvent
from sync.hlc import tick
from sync import keys as sync_keys
from sync.keys import public_key_text

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


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw key as unpadded URL-safe base64: how branch rosters and `[hq] public_key` carry it."""
    return public_key_text(key)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Accept a raw 32-byte key as 64 hex characters, as unpadded base64url (the branch
    roster's spelling, 43 characters), or a PEM SubjectPublicKeyInfo (`sync.keys` parses)."""
    if not isinstance(text, str) or not (len(text.strip()) in (43, 64) or text.strip().startswith("-----BEGIN")):
        raise KeyError_("public key must be 64 hex characters, 43 base64url characters or an Ed25519 PEM")
    try:
        return sync_keys.parse_public_key(text)
    except sync_keys.KeyFileError as err:
        raise KeyError_("public key must be 64 hex characters, 43 base64url characters or an Ed25519 PEM") from err


def canonical_public_key(text: str) -> str:
    """Any accepted spelling -> base64url (stored at HQ, sent in config.roster)."""
    return public_key_b64(parse_public_key(text))


def sign_event(key: Ed25519PrivateKey, envelope: dict[str, Any]) -> Event:
    """The envelope fields (no sig) -> the signed Event (its ``hash`` is then computed once)."""
    return Event(**{f: envelope[f] for f in ENVELOPE_FIELDS}).signed(key)


def sign_envelope(key: Ed25519PrivateKey, envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope fields (no sig) -> the signed envelope dict (sync.envelope encoding)."""
    return sign_event(key, envelope).to_dict()


def to_event(envelope: Any) -> Event:
    """A received envelope dict as an Event; raises MalformedEvent."""
    return Event.from_dict(envelope)


def verify_envelope(key: Ed25519PublicKey, envelope: dict[str, Any]) -> bool:
    try:
        return to_event(envelope).signature_valid(key)
    except MalformedEvent:
        return False


def event_hash(envelope: dict[str, Any]) -> str:
    return to_event(envelope).hash


next_hlc = tick  # the HLC arithmetic is sync.hlc's
