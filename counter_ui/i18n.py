"""The counter screen's gettext catalogs (``counter_ui/locale/<lang>/LC_MESSAGES/counter.po``); the
machinery is shared in :mod:`ui_common.i18n`."""

from __future__ import annotations

from pathlib import Path

from ui_common.i18n import LANGUAGES, SOURCE_LANGUAGE, Catalogs, Translator

CATALOGS = Catalogs(Path(__file__).with_name("locale"), "counter")

__all__ = ["CATALOGS", "LANGUAGES", "SOURCE_LANGUAGE", "Translator"]
