"""Clean free text at the boundary: Unicode NFC, no control characters, no bidi overrides.

Names and free text typed by people (or by a script) end up on screens, tickets, logs and
other people's browsers; a right-to-left override or an escape sequence there can disguise
what is shown (a ticket label, a name) or mangle a terminal. Tabs and newlines become spaces.
"""

from __future__ import annotations

import unicodedata

# Bidi embedding/override/isolate controls and marks (Unicode TR9), zero-width joiners aside.
BIDI = set("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(value: str) -> str:
    """NFC, without control (Cc) or bidi characters, whitespace collapsed, stripped."""
    text = unicodedata.normalize("NFC", value)
    out = []
    for ch in text:
        if ch in BIDI:
            continue
        if unicodedata.category(ch) == "Cc":
            if ch in "\t\n\r":
                out.append(" ")
            continue
        out.append(ch)
    return " ".join("".join(out).split())
