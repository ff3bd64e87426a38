"""Counter colours; every text/background pair is listed for the contrast test."""

from __future__ import annotations

from kiosk_ui.theme import hex_rgba

BG = hex_rgba("#10161E")
PANEL = hex_rgba("#1B2430")
TEXT = hex_rgba("#FFFFFF")
TEXT_DIM = hex_rgba("#B8C4D2")
ACCENT = hex_rgba("#FFD54F")
BUTTON_BG = hex_rgba("#1A56A0")
PRIMARY_BG = hex_rgba("#1B6B2A")
WARN_BG = hex_rgba("#8A5A00")
DANGER_BG = hex_rgba("#A4161A")
ERROR = hex_rgba("#FFB4AB")

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
