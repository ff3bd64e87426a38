"""Languages of the web pages and of citizens' messages: Babel catalogs read from .po at run time.

As the Kivy apps do (kiosk_ui/i18n.py), only the .po sources are in the repository; they are
parsed once per process (a few ms). Dates, times and numbers are formatted by Babel for the
visitor's locale, in the branch's time zone.
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import get_date_format, get_time_format
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, get_decimal_symbol, get_group_symbol, get_minus_sign_symbol

logger = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "web"
#: The offered languages, each named in itself, in the switcher's order.
LANGUAGES: dict[str, str] = {"en": "English", "fr": "Français", "rw": "Kinyarwanda", "sw": "Kiswahili", "es": "Español"}
DEFAULT = "en"


def N_(msgid: str) -> str:
    """Marks a msgid for extraction (python -m hq.pages.catalogs); translated where shown."""
    return msgid


@cache
def messages(language: str) -> dict[str, str]:
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT or not path.exists():
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=None)
    return {str(m.id): str(m.string) for m in catalog if m.id and isinstance(m.id, str) and m.string and not m.fuzzy}


class Translator:
    """gettext for one language (falls back to the English msgid) plus Babel formatting."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else DEFAULT
        self._messages = messages(self.language)
        self.locale = Locale.parse(self.language)
        # Parsed once: Babel's format_* would parse the CLDR pattern on every call.
        self._time = get_time_format("short", locale=self.locale)
        self._dates = {f: get_date_format(f, locale=self.locale) for f in ("short", "medium", "long", "full")}
        # (ts, tz, fmt) -> text: many bookings share few slot starts (a confirmation formats its
        # slot's in the writer transaction; Babel's pattern costs ~20 us a call)
        self._datetimes: dict[tuple[int | float, str, str], str] = {}
        # Numbers: Babel's format_decimal costs ~30 us a call (a page of tables makes thousands);
        # for the common pattern "#,##0.###" the same text comes from Python's own formatting
        # with the locale's symbols (a test compares both over many values in every language).
        pattern = self.locale.decimal_formats[None]
        self._number_symbols: dict[int, str] | None = None
        if pattern.pattern == "#,##0.###" and pattern.grouping == (3, 3):
            self._number_symbols = str.maketrans({",": get_group_symbol(self.locale),
                                                  ".": get_decimal_symbol(self.locale),
                                                  "-": get_minus_sign_symbol(self.locale)})

    def gettext(self, msgid: str, **values: Any) -> str:
        text = self._messages.get(msgid) or msgid
        if values:
            try:
                return text.format(**values)
            except (KeyError, IndexError, ValueError):  # a broken translation: the English text
                logger.warning("bad %s translation of %r", self.language, msgid)
                return msgid.format(**values)
        return text

    __call__ = gettext

    # -- formatting in the branch's time zone --------------------------------------------
    def datetime(self, ts: int | float, tz: str, fmt: str = "medium") -> str:
        """The date (``fmt``: medium or full) and the time to the minute, in ``tz``."""
        key = (ts, tz, fmt)
        text = self._datetimes.get(key)
        if text is None:
            dt = datetime.fromtimestamp(ts, ZoneInfo(tz))
            text = f"{self._dates[fmt].apply(dt.date(), self.locale)}, {self._time.apply(dt, self.locale)}"
            if len(self._datetimes) >= 4096:  # bounded; threads share it (single dict operations)
                self._datetimes.clear()
            self._datetimes[key] = text
        return text

    def date(self, value: date | int | float, tz: str | None = None, fmt: str = "full") -> str:
        if not isinstance(value, date):
            value = datetime.fromtimestamp(value, ZoneInfo(tz or "UTC")).date()
        return self._dates[fmt].apply(value, self.locale)

    def time(self, ts: int | float, tz: str) -> str:
        return self._time.apply(datetime.fromtimestamp(ts, ZoneInfo(tz)), self.locale)

    def number(self, n: int | float) -> str:
        """``n`` in the locale's digits grouping, at most three decimals (Babel's default pattern)."""
        table = self._number_symbols
        if table is not None and not isinstance(n, bool):
            if isinstance(n, int):
                return f"{n:,}".translate(table)
            if isinstance(n, float) and math.isfinite(n):
                # as Babel: the float's shortest repr, rounded half-even to three decimals
                text = f"{Decimal(repr(n)).quantize(THOUSANDTH, rounding=ROUND_HALF_EVEN):,f}"
                return text.rstrip("0").rstrip(".").translate(table)
        return format_decimal(n, locale=self.locale)

    def minutes(self, seconds: int | None) -> str:
        """A wait as whole minutes, e.g. "12 min", and from an hour on as hours and minutes,
        "2 h 5 min" ("139 min" is hard to read at a glance)."""
        if seconds is None:
            return "–"
        total = max(0, round(seconds / 60))
        if total < 60:
            return self.gettext("{n} min", n=self.number(total))
        hours, rest = divmod(total, 60)
        if rest == 0:
            return self.gettext("{h} h", h=self.number(hours))
        return self.gettext("{h} h {m} min", h=self.number(hours), m=self.number(rest))


THOUSANDTH = Decimal("0.001")


@cache
def translator(language: str) -> Translator:
    return Translator(language)


def negotiate(accept_language: str) -> str:
    """The best offered language for an Accept-Language header (q-values honoured)."""
    choices: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0:
            choices.append((-q, i, primary))
    return min(choices)[2] if choices else DEFAULT
