"""The counter screen's gettext catalogs (``counter_ui/locale/<lang>/LC_MESSAGES/counter.po``),
read with Babel at start like the kiosk's (see kiosk_ui.i18n)."""

from __future__ import annotations

from pathlib import Path

from kiosk_ui.i18n import LANGUAGES, SOURCE_LANGUAGE, Catalogs, Translator

CATALOGS = Catalogs(Path(__file__).with_name("locale"), "counter")

__all__ = ["CATALOGS", "LANGUAGES", "SOURCE_LANGUAGE", "Translator"]
