"""Counter colours; every text/background pair is listed for the contrast test."""

from __future__ import annotations

from ui_common.theme import ACCENT, BUTTON_BG, DANGER_BG, ERROR, PRIMARY_BG, TEXT, WARN_BG, hex_rgba

BG = hex_rgba("#10161E")
PANEL = hex_rgba("#1B2430")
TEXT_DIM = hex_rgba("#B8C4D2")

TEXT_PAIRS = {
    "text on background": (TEXT, BG),
    "text on panel": (TEXT, PANEL),
    "dim text on panel": (TEXT_DIM, PANEL),
    "current ticket": (ACCENT, BG),
    "button label": (TEXT, BUTTON_BG),
    "call next label": (TEXT, PRIMARY_BG),
    "superseded notice": (TEXT, WARN_BG),
    "offline banner": (TEXT, DANGER_BG),
    "error": (ERROR, BG),
}

__all__ = ["ACCENT", "BG", "BUTTON_BG", "DANGER_BG", "ERROR", "PANEL", "PRIMARY_BG", "TEXT",
           "TEXT_DIM", "TEXT_PAIRS", "WARN_BG"]
