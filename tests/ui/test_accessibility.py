"""Colour contrast of every text/background pair the three layouts use (WCAG 2.x)."""

from __future__ import annotations

import pytest

import counter_ui.theme
import display_ui.theme
import kiosk_ui.theme
from ui_common.theme import contrast, hex_rgba


def test_contrast_formula_matches_known_values() -> None:
    white, black = (1, 1, 1, 1), (0, 0, 0, 1)
    assert contrast(white, black) == pytest.approx(21)
    assert contrast(hex_rgba("#767676"), white) == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize("theme", [kiosk_ui.theme, display_ui.theme, counter_ui.theme],
                         ids=["kiosk", "display", "counter"])
def test_every_text_colour_has_at_least_4_5_to_1_contrast(theme: object) -> None:
    low = {name: round(contrast(fg, bg), 2) for name, (fg, bg) in theme.TEXT_PAIRS.items()  # type: ignore[attr-defined]
           if contrast(fg, bg) < 4.5}
    assert low == {}


def test_kiosk_touch_targets_are_at_least_9_mm() -> None:
    # Checked on real widgets in test_ui_windows; this keeps the design constant honest.
    assert kiosk_ui.theme.TOUCH_MM >= 9
