"""Maintain the web pages' catalogs: ``python -m hq.pages.catalogs extract|update|check``.

- extract: every msgid of the templates (``_("...")``) and of hq/pages, hq/console and hq/notifications
  (``_``, ``t``, ``N_``, ``PageError`` second argument) into locale/web.pot;
- update: merge the .pot into each language's web.po (new msgids empty, old ones kept fuzzy);
- check: exit 1 listing msgids a language lacks (tests/hq/web/test_catalogs.py runs the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from hq.pages.i18n import DEFAULT, LANGUAGES, LOCALE_DIR

HERE = Path(__file__).parent
KEYWORDS = {"_": None, "t": None, "gettext": None, "N_": None, "PageError": (2,)}
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}}


def extract() -> Catalog:
    catalog = Catalog(project="SmartQ web", domain="web", charset="utf-8")
    for root in (HERE, HERE.parent):
        # hq/notifications.py writes to citizens; hq/console/ is the staff console (issue 10).
        methods = METHODS if root == HERE else [("notifications.py", "python"), ("console/**.py", "python")]
        for filename, lineno, message, comments, _ctx in extract_from_dir(
                root, methods, options_map=OPTIONS if root == HERE else {}, keywords=KEYWORDS, strip_comment_tags=True):
            if isinstance(message, str) and message:
                catalog.add(message, locations=[(str((root / filename).relative_to(HERE.parent.parent)), lineno)],
                            auto_comments=comments)
    return catalog


def missing(language: str, template: Catalog | None = None) -> list[str]:
    template = template or extract()
    path = LOCALE_DIR / language / "LC_MESSAGES" / "web.po"
    if not path.exists():
        return [str(m.id) for m in template if m.id]
    with path.open("rb") as f:
        po = read_po(f)
    have = {str(m.id) for m in po if m.id and m.string and not m.fuzzy}
    return [str(m.id) for m in template if m.id and str(m.id) not in have]


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "check"
    template = extract()
    if cmd == "extract":
        with (LOCALE_DIR / "web.pot").open("wb") as f:
            write_po(f, template, omit_header=True, sort_output=True)
        print(f"{len(template)} msgids -> {LOCALE_DIR / 'web.pot'}")
        return 0
    if cmd == "update":
        for lang in LANGUAGES:
            if lang == DEFAULT:
                continue
            path = LOCALE_DIR / lang / "LC_MESSAGES" / "web.po"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                with path.open("rb") as f:
                    po = read_po(f, locale=lang)
            else:
                po = Catalog(locale=lang, domain="web", charset="utf-8")
            po.update(template, no_fuzzy_matching=True)
            with path.open("wb") as f:
                write_po(f, po, omit_header=False, sort_output=True, ignore_obsolete=True)
        return 0
    bad = {lang: missing(lang, template) for lang in LANGUAGES if lang != DEFAULT}
    for lang, ids in bad.items():
        for msgid in ids:
            print(f"{lang}: {msgid!r}")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
