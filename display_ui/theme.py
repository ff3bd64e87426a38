"""Display colours: every text/background pair is listed for the contrast test."""

from __future__ import annotations

from ui_common.theme import ACCENT, DANGER_BG, TEXT, WARN_BG, hex_rgba

BG = hex_rgba("#0E1217")
PANEL = hex_rgba("#1B232D")
TEXT_DIM = hex_rgba("#B8C4D2")
FLASH_BG = ACCENT
FLASH_FG = BG
BANNER_BG = DANGER_BG
DEGRADED_BG = WARN_BG
CROWD = {"low": hex_rgba("#7CD992"), "medium": ACCENT, "high": hex_rgba("#FF8A80")}

TEXT_PAIRS = {
    "text on background": (TEXT, BG),
    "text on panel": (TEXT, PANEL),
    "dim text on panel": (TEXT_DIM, PANEL),
    "newest call": (ACCENT, BG),
    "recent call awaited ('Please come')": (ACCENT, PANEL),
    "newest call while flashing": (FLASH_FG, FLASH_BG),
    "offline banner": (TEXT, BANNER_BG),
    "degraded banner": (TEXT, DEGRADED_BG),
    **{f"crowd {k}": (v, PANEL) for k, v in CROWD.items()},
}

__all__ = ["ACCENT", "BANNER_BG", "BG", "CROWD", "DEGRADED_BG", "FLASH_BG", "FLASH_FG", "PANEL",
           "TEXT", "TEXT_DIM", "TEXT_PAIRS"]
