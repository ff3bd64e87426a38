"""Kiosk colours and sizes, in one place so a test can check every text/background pair
against WCAG 2.x contrast (at least 4.5:1) and every touch target against 9 mm."""

from __future__ import annotations

from ui_common.theme import ACCENT, BUTTON_BG, DANGER_BG, ERROR, PRIMARY_BG, TEXT, TOUCH_MM, hex_rgba

BG = hex_rgba("#0B1F3A")
TEXT_DIM = hex_rgba("#C9D6E8")
BUTTON_FG = TEXT
SELECTED_BG = PRIMARY_BG
BANNER_BG = DANGER_BG
BANNER_FG = TEXT
QR_BG = hex_rgba("#FFFFFF")

#: The mark of a chosen answer and the booking pad's back key: drawn from DejaVuSans (shipped
#: with Kivy) through markup, as Roboto has neither character (they showed as boxes).
CHOSEN_MARK = "[font=DejaVuSans]\u25cf[/font] "
BACK_KEY = "[font=DejaVuSans]\u2190[/font]"

#: Every (text, background) pair the layout uses; the contrast test walks this list.
TEXT_PAIRS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "text on background": (TEXT, BG),
    "dim text on background": (TEXT_DIM, BG),
    "ticket number on background": (ACCENT, BG),
    "error on background": (ERROR, BG),
    "button label": (BUTTON_FG, BUTTON_BG),
    "service pictogram": (BUTTON_FG, BUTTON_BG),
    "selected button label": (BUTTON_FG, SELECTED_BG),
    "offline banner": (BANNER_FG, BANNER_BG),
}

__all__ = ["ACCENT", "BACK_KEY", "BANNER_BG", "BANNER_FG", "BG", "BUTTON_BG", "BUTTON_FG", "CHOSEN_MARK", "ERROR", "QR_BG",
           "SELECTED_BG", "TEXT", "TEXT_DIM", "TEXT_PAIRS", "TOUCH_MM", "hex_rgba"]
