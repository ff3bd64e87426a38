"""The languages the screens offer (no Kivy import: the command line reads it before Kivy
is configured)."""

from __future__ import annotations

#: Offered languages, in the order the kiosk shows them, each named in itself.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "Français",
    "rw": "Kinyarwanda",
    "sw": "Kiswahili",
    "es": "Español",
}
SOURCE_LANGUAGE = "en"
