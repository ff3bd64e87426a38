"""Gettext catalogs for the three screens, read from the .po sources at run time with Babel,
and :class:`Translation`, the observable translation the ``.kv`` layouts bind to.

We keep only .po files in the repository (no generated .mo) and parse them when the app
starts: five small catalogs take a few milliseconds, and a translator can edit a .po and
see the result without a build step. Each app has its own domain and ``locale/`` folder
(``kiosk``, ``counter``, ``display``); :class:`Catalogs` serves any of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po
from kivy.event import Observable

from .languages import LANGUAGES, SOURCE_LANGUAGE

logger = logging.getLogger(__name__)

__all__ = ["LANGUAGES", "SOURCE_LANGUAGE", "Catalogs", "Translation", "Translator", "used_msgids"]


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


class Translation(Observable):
    """The current language's texts, observable from ``.kv`` rules.

    A rule ``text: app.vm.tr._('Choose a service')`` binds to ``_`` on this object (Kivy's
    builder binds the last name of a dotted expression on an ``Observable``); switching the
    language re-evaluates every such rule. Same pattern as Kivy's own i18n example, with the
    observers kept per instance and dropped once their widget is gone.
    """

    def __init__(self, catalogs: Catalogs, language: str = SOURCE_LANGUAGE) -> None:
        super().__init__()
        self.catalogs = catalogs
        self._observers: dict[int, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {}
        self._next_uid = 1
        self.language = language
        self.translator = catalogs.translator(language)

    def _(self, msgid: str, **values: object) -> str:
        """``msgid`` in the current language, formatted with ``values``."""
        return self.translator.format(msgid, **values) if values else self.translator(msgid)

    __call__ = _

    def switch(self, language: str) -> None:
        """Change language and re-evaluate every rule bound to ``_``."""
        if language == self.language:
            return
        self.language = language
        self.translator = self.catalogs.translator(language)
        for uid, (func, largs, kwargs) in list(self._observers.items()):
            try:
                func(*largs, self, None, **kwargs)
            except ReferenceError:  # the rule's widget was garbage collected
                self._observers.pop(uid, None)

    # Observable protocol, as used by kivy.lang.builder for the ``_`` name.
    def fbind(self, name: str, func: Callable[..., Any], *largs: Any, **kwargs: Any) -> int:
        if name != "_":
            return super().fbind(name, func, *largs, **kwargs)  # type: ignore[no-any-return]
        uid = self._next_uid
        self._next_uid += 1
        self._observers[uid] = (func, largs, kwargs)
        return uid

    def funbind(self, name: str, func: Callable[..., Any], *largs: Any, **kwargs: Any) -> None:
        if name != "_":
            super().funbind(name, func, *largs, **kwargs)
            return
        for uid, entry in list(self._observers.items()):
            if entry == (func, largs, kwargs):
                del self._observers[uid]
                return

    def unbind_uid(self, name: str, uid: int) -> None:
        if name != "_":
            super().unbind_uid(name, uid)
            return
        self._observers.pop(uid, None)

    @property
    def observers(self) -> int:
        """How many rules are bound (tests)."""
        return len(self._observers)


#: ``t('...')`` / ``t("...")`` / ``_('...')`` calls in .py and .kv sources (the msgids an app
#: asks for).
_T_CALL = re.compile(r"""(?:\bt|\b_)\(\s*(?P<q>['"])(?P<id>(?:\\.|(?!(?P=q)).)*)(?P=q)""")


def used_msgids(*sources: Path) -> set[str]:
    """The msgids the given source files pass to ``t(...)`` or ``_(...)`` as literal strings."""
    found: set[str] = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        found.update(m.group("id").replace("\\'", "'").replace('\\"', '"') for m in _T_CALL.finditer(text))
    return found
