"""Gettext catalogs for the kiosk, read from the .po sources at run time with Babel.

We keep only .po files in the repository (no generated .mo) and parse them when the app
starts: five small catalogs take a few milliseconds, and a translator can edit a .po and
see the result without a build step.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po

logger = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "kiosk"

#: Offered languages, in the order the kiosk shows them, each named in itself.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "Français",
    "rw": "Kinyarwanda",
    "sw": "Kiswahili",
    "es": "Español",
}
SOURCE_LANGUAGE = "en"


class Translator:
    """``gettext``-like lookup for one language; falls back to the English msgid."""

    def __init__(self, language: str, messages: dict[str, str]) -> None:
        self.language = language
        self._messages = messages

    def gettext(self, msgid: str) -> str:
        return self._messages.get(msgid) or msgid

    __call__ = gettext

    def format(self, msgid: str, **values: object) -> str:
        return self.gettext(msgid).format(**values)


def po_path(language: str, locale_dir: Path = LOCALE_DIR) -> Path:
    return locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=None)
def load_messages(language: str, locale_dir: Path = LOCALE_DIR) -> dict[str, str]:
    """msgid -> msgstr for every translated, non-fuzzy message of ``language``."""
    path = po_path(language, locale_dir)
    if not path.exists():
        if language != SOURCE_LANGUAGE:
            logger.warning("no catalog for %s at %s; showing English", language, path)
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=None)
    out: dict[str, str] = {}
    for message in catalog:
        if message.id and isinstance(message.id, str) and message.string and not message.fuzzy:
            out[message.id] = str(message.string)
    return out


def translator(language: str, locale_dir: Path = LOCALE_DIR) -> Translator:
    return Translator(language, load_messages(language, locale_dir))


def template_ids(locale_dir: Path = LOCALE_DIR) -> list[str]:
    """Every msgid of the template (kiosk.pot), the list a catalog must cover."""
    with (locale_dir / f"{DOMAIN}.pot").open("rb") as f:
        return [m.id for m in read_po(f) if m.id and isinstance(m.id, str)]
