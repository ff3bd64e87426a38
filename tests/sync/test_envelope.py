"""The canonical encoding is the contract's: json.dumps(sort_keys, compact, ensure_ascii=False)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.envelope import INT_MAX, INT_MIN, MalformedEvent, canonical_json, check_payload_value

payloads = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)


@given(payloads)
def test_canonical_bytes_equal_the_reference_encoding(value):
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert canonical_json(value) == reference


@pytest.mark.parametrize("bad", [1.5, 2**64, {"x": "\ud800"}, {1: "non-string key"}])
def test_values_without_one_canonical_spelling_are_refused(bad):
    with pytest.raises(MalformedEvent):
        check_payload_value(bad if isinstance(bad, dict) else {"v": bad})


def test_one_public_key_parser_reads_every_spelling_hq_and_rosters_use():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.keys import KeyFileError, parse_public_key, public_key_text

    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for text in (public_key_text(key), raw.hex(), pem):
        assert parse_public_key(text).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    for junk in ("", "nope", "zz" * 32):
        try:
            parse_public_key(junk)
        except KeyFileError:
            continue
        raise AssertionError(f"{junk!r} parsed")
