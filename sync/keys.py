"""Ed25519 device keys: generated on first start, stored 0600 in the data dir."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

logger = logging.getLogger(__name__)

KEY_FILE = "device.key"


class KeyFileError(Exception):
    """A key file or public key that cannot be used."""


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_or_create_key(data_dir: Path, filename: str = KEY_FILE) -> Ed25519PrivateKey:
    """The device's private key; created (mode 0600) when the data dir has none yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / filename
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning("key file %s has mode %o; tightening to 0600", path, mode)
            path.chmod(0o600)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as err:
            raise KeyFileError(f"cannot read device key {path}: {err}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)
    logger.info("generated device key %s (fingerprint %s)", path, fingerprint(key.public_key()))
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    """Raw 32-byte public key as unpadded URL-safe base64 (how rosters carry it)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key as rosters carry it (unpadded base64url, 43 characters), as 64 hex
    characters, or as a PEM SubjectPublicKeyInfo: the one parser of nodes and HQ."""
    text = (text or "").strip() if isinstance(text, str) else text
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            return key
        if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, AttributeError, binascii.Error) as err:
        raise KeyFileError(f"not an Ed25519 public key: {text!r}") from err


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short stable id of a public key: first 16 hex digits of SHA-256 of the raw key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
