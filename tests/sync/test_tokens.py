"""sync.tokens: compact Ed25519 tokens verified offline."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.tokens import (
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenSignatureInvalid,
    _b64d,
    _b64e,
    _canonical,
    sign_token,
    verify_token,
)

NOW = 1_750_000_000
CLAIMS = {"typ": "booking", "code": "7KQ2-M9XD", "branch": "b1", "service": "s1",
          "start": NOW + 3600, "end": NOW + 4500, "exp": NOW + 90000}


@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_round_trip_returns_the_claims(key):
    token = sign_token(key, CLAIMS)
    assert token.startswith("st1.")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert verify_token(key.public_key(), token, now=NOW) == CLAIMS


def test_unicode_claims_survive(key):
    claims = {"name": "Zoë 東京", "exp": NOW + 10}
    assert verify_token(key.public_key(), sign_token(key, claims), now=NOW) == claims


def test_tampered_claims_are_rejected(key):
    token = sign_token(key, CLAIMS)
    prefix, body, sig = token.split(".")
    forged = dict(CLAIMS, branch="other")
    import json
    forged_body = _b64e(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(TokenSignatureInvalid):
        verify_token(key.public_key(), f"{prefix}.{forged_body}.{sig}", now=NOW)


def test_flipped_signature_bit_is_rejected(key):
    token = sign_token(key, CLAIMS)
    prefix, body, sig = token.split(".")
    raw = bytearray(_b64d(sig))
    raw[0] ^= 1
    with pytest.raises(TokenSignatureInvalid):
        verify_token(key.public_key(), f"{prefix}.{body}.{_b64e(bytes(raw))}", now=NOW)


def test_other_key_is_rejected(key):
    token = sign_token(key, CLAIMS)
    with pytest.raises(TokenSignatureInvalid):
        verify_token(Ed25519PrivateKey.generate().public_key(), token, now=NOW)


def test_expired_token_is_rejected(key):
    token = sign_token(key, CLAIMS)
    with pytest.raises(TokenExpired):
        verify_token(key.public_key(), token, now=CLAIMS["exp"])
    assert verify_token(key.public_key(), token, now=CLAIMS["exp"] - 1)["code"] == "7KQ2-M9XD"


def test_not_before_is_honoured(key):
    token = sign_token(key, {"nbf": NOW + 5, "exp": NOW + 10})
    with pytest.raises(TokenNotYetValid):
        verify_token(key.public_key(), token, now=NOW)


@pytest.mark.parametrize("bad", ["", "st1", "st1.a", "st2.abc.def", "st1.!!!.abc", "st1.abc.def", "x" * 5000,
                                 "st1..", "st1.e30." + "A" * 86])
def test_malformed_tokens_raise_a_clear_error(key, bad):
    with pytest.raises((TokenMalformed, TokenSignatureInvalid)):
        verify_token(key.public_key(), bad, now=NOW)


def test_non_string_token_is_malformed(key):
    with pytest.raises(TokenMalformed):
        verify_token(key.public_key(), None, now=NOW)  # type: ignore[arg-type]


def test_signing_requires_integer_expiry(key):
    with pytest.raises(ValueError):
        sign_token(key, {"code": "x"})
    with pytest.raises(ValueError):
        sign_token(key, {"exp": 1.5})


def test_signed_non_object_claims_are_malformed(key):
    head = "st1." + _b64e(b"[1,2]")
    token = head + "." + _b64e(key.sign(head.encode()))
    with pytest.raises(TokenMalformed):
        verify_token(key.public_key(), token, now=NOW)


@pytest.mark.parametrize("claims", [
    CLAIMS,
    {"name": "Zoë 東京 \u2028 \x7f", "exp": NOW, "z": -1, "a": [1, "x"]},
    {"ctl": "".join(map(chr, range(32))) + '"\\/', "exp": 2**63 - 1},
    {"big": 2**64, "exp": NOW},  # beyond orjson's integers: the standard encoder takes over
])
def test_claims_are_encoded_exactly_as_sorted_compact_utf8_json(claims):
    assert _canonical(claims) == json.dumps(claims, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode("utf-8")
