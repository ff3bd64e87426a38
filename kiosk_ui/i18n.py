"""Gettext catalogs for the three screens, read from the .po sources at run time with Babel.

We keep only .po files in the repository (no generated .mo) and parse them when the app
starts: five small catalogs take a few milliseconds, and a translator can edit a .po and
see the result without a build step. Each app has its own domain and ``locale/`` folder
(``kiosk``, ``counter``, ``display``); :class:`Catalogs` serves any of them.
"""

from __future__ import annotations

import logging
import re
from functools import cache
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


@cache
def _read(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        catalog = read_po(f, locale=None)
    out: dict[str, str] = {}
    for message in catalog:
        if message.id and isinstance(message.id, str) and message.string and not message.fuzzy:
            out[message.id] = str(message.string)
    return out


class Catalogs:
    """The catalogs of one domain: ``<locale_dir>/<lang>/LC_MESSAGES/<domain>.po`` plus the
    template ``<locale_dir>/<domain>.pot`` listing every message."""

    def __init__(self, locale_dir: Path, domain: str) -> None:
        self.locale_dir = locale_dir
        self.domain = domain

    def po_path(self, language: str) -> Path:
        return self.locale_dir / language / "LC_MESSAGES" / f"{self.domain}.po"

    def messages(self, language: str) -> dict[str, str]:
        """msgid -> msgstr for every translated, non-fuzzy message of ``language``."""
        path = self.po_path(language)
        if not path.exists():
            if language != SOURCE_LANGUAGE:
                logger.warning("no %s catalog for %s at %s; showing English", self.domain, language, path)
            return {}
        return _read(path)

    def translator(self, language: str) -> Translator:
        return Translator(language, self.messages(language))

    def template_ids(self) -> list[str]:
        """Every msgid of the template, the list a catalog must cover."""
        with (self.locale_dir / f"{self.domain}.pot").open("rb") as f:
            return [m.id for m in read_po(f) if m.id and isinstance(m.id, str)]


#: ``t('...')`` / ``t("...")`` calls in .py and .kv sources (the msgids an app asks for).
_T_CALL = re.compile(r"""\bt\(\s*(?P<q>['"])(?P<id>(?:\\.|(?!(?P=q)).)*)(?P=q)""")


def used_msgids(*sources: Path) -> set[str]:
    """The msgids the given source files pass to ``t(...)`` as literal strings."""
    found: set[str] = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        found.update(m.group("id").replace("\\'", "'").replace('\\"', '"') for m in _T_CALL.finditer(text))
    return found


KIOSK = Catalogs(LOCALE_DIR, DOMAIN)


def po_path(language: str, locale_dir: Path = LOCALE_DIR) -> Path:
    return Catalogs(locale_dir, DOMAIN).po_path(language)


def load_messages(language: str, locale_dir: Path = LOCALE_DIR) -> dict[str, str]:
    """The kiosk's msgid -> msgstr for ``language``."""
    return Catalogs(locale_dir, DOMAIN).messages(language)


def translator(language: str, locale_dir: Path = LOCALE_DIR) -> Translator:
    return Catalogs(locale_dir, DOMAIN).translator(language)


def template_ids(locale_dir: Path = LOCALE_DIR) -> list[str]:
    """Every msgid of the kiosk template (kiosk.pot)."""
    return Catalogs(locale_dir, DOMAIN).template_ids()
