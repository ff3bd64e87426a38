"""Sealed values: personal data a device encrypts to HQ's current personal-data key.

`seal(public_key, plaintext, key_id)` -> ``ps1.<key id>.<base64url(ephemeral X25519 key | nonce |
ChaCha20-Poly1305 ciphertext)>``. Only the holder of that key's private half (HQ) opens it;
every node of the branch stores and relays the sealed text like any other payload field, so a
phone number is never in a log in clear. HQ rotates the key daily and destroys a private key
after its retention period: every value sealed to it is then unreadable everywhere (the events
themselves, their signatures and every state hash stay as they were).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "ps1"


class SealedError(ValueError):
    """A sealed value that cannot be opened (malformed, another key, tampered)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"smartq-sealed-v1" + eph + recipient).derive(shared)


def public_key_text(key: X25519PublicKey) -> str:
    return _b64(_raw(key))


def parse_public_key(text: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(_unb64(text))
    except (ValueError, TypeError) as err:
        raise SealedError(f"not an X25519 public key: {text!r}") from err


def seal(public_key: X25519PublicKey, plaintext: str, *, key_id: str) -> str:
    eph = X25519PrivateKey.generate()
    eph_raw, recipient = _raw(eph.public_key()), _raw(public_key)
    nonce = os.urandom(12)
    ct = ChaCha20Poly1305(_key(eph.exchange(public_key), eph_raw, recipient)).encrypt(
        nonce, plaintext.encode("utf-8"), key_id.encode("utf-8"))
    return f"{PREFIX}.{key_id}.{_b64(eph_raw + nonce + ct)}"


def key_id_of(sealed: str) -> str:
    parts = sealed.split(".") if isinstance(sealed, str) else []
    if len(parts) != 3 or parts[0] != PREFIX:
        raise SealedError("not a sealed value")
    return parts[1]


def open_sealed(private_key: X25519PrivateKey, sealed: str) -> str:
    key_id = key_id_of(sealed)
    try:
        blob = _unb64(sealed.split(".")[2])
        eph_raw, nonce, ct = blob[:32], blob[32:44], blob[44:]
        eph = X25519PublicKey.from_public_bytes(eph_raw)
        recipient = _raw(private_key.public_key())
        return ChaCha20Poly1305(_key(private_key.exchange(eph), eph_raw, recipient)).decrypt(
            nonce, ct, key_id.encode("utf-8")).decode("utf-8")
    except (ValueError, InvalidTag, UnicodeDecodeError) as err:
        raise SealedError("cannot open the sealed value") from err
