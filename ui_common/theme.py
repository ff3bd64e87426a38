"""Colours the three screens share, and the WCAG contrast arithmetic their tests use.

Each app's ``theme.py`` keeps its own palette and lists every text/background pair it uses
in ``TEXT_PAIRS``; ``tests/ui/test_accessibility.py`` checks each pair with :func:`contrast`.
"""

from __future__ import annotations

import re

Colour = tuple[float, float, float, float]


def hex_rgba(value: str, alpha: float = 1.0) -> Colour:
    value = value.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return (r, g, b, alpha)


def luminance(rgba: tuple[float, ...]) -> float:
    """Relative luminance (WCAG 2.x)."""

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: tuple[float, ...], bg: tuple[float, ...]) -> float:
    """WCAG contrast ratio of two colours, 1 to 21."""
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


TEXT = hex_rgba("#FFFFFF")
ACCENT = hex_rgba("#FFD54F")
ERROR = hex_rgba("#FFB4AB")
BUTTON_BG = hex_rgba("#1A56A0")
PRIMARY_BG = hex_rgba("#1B6B2A")
WARN_BG = hex_rgba("#8A5A00")
DANGER_BG = hex_rgba("#A4161A")

#: Minimum touch target edge, millimetres (WCAG/ISO guidance for public kiosks: >= 9 mm).
TOUCH_MM = 12


#: Kivy's default font (Roboto) has no arrows, shapes or dingbats: such characters are drawn
#: from DejaVuSans, which Kivy ships too (else they show as boxes).
SYMBOL_FONT = "DejaVuSans"
_SYMBOLS = re.compile("([\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff]+)")


def with_symbols(text: str) -> str:
    """``text`` as Kivy markup (for a label with ``markup: True``): escaped, its arrows and
    symbols in ``SYMBOL_FONT``."""
    from kivy.utils import escape_markup

    return "".join(f"[font={SYMBOL_FONT}]{part}[/font]" if i % 2 else escape_markup(part)
                   for i, part in enumerate(_SYMBOLS.split(text)))
