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
