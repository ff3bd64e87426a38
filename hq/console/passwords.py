"""Password policy of HQ accounts: long enough, not one of the commonest passwords, not the e-mail.

common-passwords.txt.gz is the list Django ships (django/contrib/auth, BSD licence): 19,640
of the commonest passwords, lowercased, compiled by Royce Williams from breach corpora.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from hq.pages.i18n import N_

MIN_LENGTH = 10
MAX_LENGTH = 1024
LIST = Path(__file__).with_name("common-passwords.txt.gz")


@cache
def common() -> frozenset[str]:
    with gzip.open(LIST, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def problem(password: str, email: str = "") -> str | None:
    """None when ``password`` may be used, else the msgid saying why not (``{n}``: MIN_LENGTH)."""
    if len(password) < MIN_LENGTH:
        return N_("Choose a password of at least {n} characters.")
    if len(password) > MAX_LENGTH:
        return N_("This password is too long.")
    folded = password.strip().lower()
    if folded in common() or len(set(folded)) <= 2:
        return N_("This password is one of the most common ones. Choose another.")
    local = email.split("@")[0].lower()
    if email and (folded == email.lower() or (len(local) >= 4 and local in folded)):
        return N_("The password must not contain the e-mail address.")
    return None
