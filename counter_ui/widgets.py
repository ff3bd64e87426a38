"""View classes for the counter: its lists of rows are ``ui_common.widgets.RowList``."""

from __future__ import annotations

from ui_common.widgets import RowList

__all__ = ["RowList"]
