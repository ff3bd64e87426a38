"""Free text cleaned at the boundary (sync.text), as HQ's and the node's inputs use it."""

from __future__ import annotations

import pytest

from hq.errors import ApiError, check_str
from sync.text import clean_text


def test_names_are_nfc_without_control_or_bidi_characters() -> None:
    assert clean_text("Lucı\u0301a\u202e\u2067 Gómez") == clean_text("Lucı́a Gómez")
    assert clean_text("Amina\tUwase\n\x07") == "Amina Uwase"
    assert clean_text("e\u0301") == "\u00e9"
    assert check_str("  Jean\u200f Habimana\x00 ", "name") == "Jean Habimana"
    with pytest.raises(ApiError):
        check_str("\u202e\u2066", "name")  # nothing left: refused like an empty name
