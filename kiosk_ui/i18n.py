"""The kiosk's gettext catalogs (``kiosk_ui/locale/<lang>/LC_MESSAGES/kiosk.po``); the
machinery is shared in :mod:`ui_common.i18n`."""

from __future__ import annotations

from pathlib import Path

from ui_common.i18n import LANGUAGES, SOURCE_LANGUAGE, Catalogs, Translator

LOCALE_DIR = Path(__file__).with_name("locale")
CATALOGS = Catalogs(LOCALE_DIR, "kiosk")
KIOSK = CATALOGS

__all__ = ["CATALOGS", "KIOSK", "LANGUAGES", "LOCALE_DIR", "SOURCE_LANGUAGE", "Translator"]
