"""Display colours: every text/background pair is listed for the contrast test."""

from __future__ import annotations

from kiosk_ui.theme import hex_rgba

BG = hex_rgba("#0E1217")
PANEL = hex_rgba("#1B232D")
TEXT = hex_rgba("#FFFFFF")
TEXT_DIM = hex_rgba("#B8C4D2")
ACCENT = hex_rgba("#FFD54F")
FLASH_BG = hex_rgba("#FFD54F")
FLASH_FG = hex_rgba("#0E1217")
BANNER_BG = hex_rgba("#A4161A")
DEGRADED_BG = hex_rgba("#8A5A00")
CROWD = {"low": hex_rgba("#7CD992"), "medium": hex_rgba("#FFD54F"), "high": hex_rgba("#FF8A80")}

TEXT_PAIRS = {
    "text on background": (TEXT, BG),
    "text on panel": (TEXT, PANEL),
    "dim text on panel": (TEXT_DIM, PANEL),
    "newest call": (ACCENT, BG),
    "newest call while flashing": (FLASH_FG, FLASH_BG),
    "offline banner": (TEXT, BANNER_BG),
    "degraded banner": (TEXT, DEGRADED_BG),
    **{f"crowd {k}": (v, PANEL) for k, v in CROWD.items()},
}
