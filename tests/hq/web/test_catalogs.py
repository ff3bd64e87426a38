"""Every message of the pages and of citizens' notifications exists in the five languages."""

from __future__ import annotations

import re

import pytest

from hq.pages.catalogs import extract, missing
from hq.pages.i18n import LANGUAGES, messages, negotiate, translator

TEMPLATE = extract()


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_catalog_translates_every_message_with_the_same_placeholders(language):
    assert missing(language, TEMPLATE) == []
    catalog = messages(language)
    for m in TEMPLATE:
        if m.id:
            assert sorted(re.findall(r"\{\w+\}", catalog[m.id])) == sorted(re.findall(r"\{\w+\}", m.id)), m.id


def test_extraction_finds_pages_and_notifications():
    ids = {m.id for m in TEMPLATE}
    assert {"Find an office", "Your turn is near", "Choose a time from the list.", "This page does not exist."} <= ids
    assert len(ids) > 150


def test_accept_language_negotiation_and_locale_formatting():
    assert negotiate("de-CH, fr;q=0.8, en;q=0.5") == "fr"
    assert negotiate("rw-RW") == "rw" and negotiate("") == "en" and negotiate("xx;q=bad,,") == "en"
    assert translator("es").number(12345.5) == "12.345,5"
    # waits: minutes, and hours with minutes from an hour on ("1139 min" was hard to read)
    assert [translator("fr").minutes(s) for s in (59 * 60, 3600, 139 * 60, 1139 * 60)] == \
        ["59 min", "1 h", "2 h 19 min", "18 h 59 min"]
    assert translator("sw").minutes(125 * 60) == "saa 2 na dakika 5" and translator("en").minutes(None) == "–"
    assert translator("fr").datetime(1894000500, "Africa/Kigali", "full").startswith("lundi 7 janvier 2030")


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_numbers_read_as_babel_writes_them(language):
    """Translator.number's own formatting (the analytics tables format thousands of numbers)
    gives Babel's text for integers and floats of every size and sign, rounding halves to even."""
    import random

    from babel.numbers import format_decimal
    t = translator(language)
    rng = random.Random(language)
    values: list[int | float] = [0, 1, -1, 999, 1000, 1234, -1234, 10**6, 10**15, 0.0, -0.0, 0.5, 0.0005, 0.0015,
                                 0.0025, 1.0005, 2.675, -0.0004, 1e20, 1e-7, 66.7, 33.3333333, 1234567.891]
    values += [rng.randint(-10**9, 10**9) for _ in range(300)]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)) for _ in range(300)]
    values += [rng.random() * 10 ** rng.randint(-5, 12) for _ in range(300)]
    assert [t.number(v) for v in values] == [format_decimal(v, locale=t.locale) for v in values]
    assert t.number(float("nan")) == format_decimal(float("nan"), locale=t.locale)  # Babel's own path
