"""Kiosk colours and sizes, in one place so a test can check every text/background pair
against WCAG 2.x contrast (at least 4.5:1) and every touch target against 9 mm."""

from __future__ import annotations


def hex_rgba(value: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    value = value.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return (r, g, b, alpha)


BG = hex_rgba("#0B1F3A")
TEXT = hex_rgba("#FFFFFF")
TEXT_DIM = hex_rgba("#C9D6E8")
ACCENT = hex_rgba("#FFD54F")
ERROR = hex_rgba("#FFB4AB")
BUTTON_BG = hex_rgba("#1A56A0")
BUTTON_FG = TEXT
SELECTED_BG = hex_rgba("#1B6B2A")
BANNER_BG = hex_rgba("#A4161A")
BANNER_FG = TEXT
QR_BG = hex_rgba("#FFFFFF")

#: Every (text, background) pair the layout uses; the contrast test walks this list.
TEXT_PAIRS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "text on background": (TEXT, BG),
    "dim text on background": (TEXT_DIM, BG),
    "ticket number on background": (ACCENT, BG),
    "error on background": (ERROR, BG),
    "button label": (BUTTON_FG, BUTTON_BG),
    "selected button label": (BUTTON_FG, SELECTED_BG),
    "offline banner": (BANNER_FG, BANNER_BG),
}

#: Minimum touch target edge, millimetres (WCAG/ISO guidance for public kiosks: >= 9 mm).
TOUCH_MM = 12
