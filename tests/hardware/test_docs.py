"""Every config key a hardware factory reads is documented in docs/hardware.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hardware import config as config_module
from hardware.announcer import build_announcer_from_config
from hardware.keypad import build_keypad_from_config
from hardware.led_sign import build_led_sign_from_config
from hardware.printer import BACKENDS, parse_printer_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "hardware.md"


@pytest.fixture
def keys_read(monkeypatch):
    seen: dict[str, set[str]] = {}
    original = config_module.ConfigReader.finish

    def finish(self):
        seen.setdefault(self.section, set()).update(self._used)
        return original(self)

    monkeypatch.setattr(config_module.ConfigReader, "finish", finish)
    return seen


def documented_keys(section: str) -> set[str]:
    """The keys in the first column of the section's config table."""
    text = DOC.read_text()
    if section == "hardware.printer":
        part = text.split("### Backends and config keys")[1].split("###")[0]
    else:
        part = text.split(f"### Config keys (`[{section}]`)")[1].split("###")[0]
    rows = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?", part, re.M)
    return {key for row in rows for key in row if key}


def test_every_config_key_is_documented(keys_read) -> None:
    base = {"network": {"host": "h"}, "usb": {"vendor_id": 1, "product_id": 2},
            "serial": {"devfile": "/dev/ttyS0"}, "file": {"devfile": "/dev/usb/lp0"},
            "dummy": {}}
    for backend in BACKENDS:
        parse_printer_config({"backend": backend, **base[backend]})
    build_keypad_from_config({"url": "loop://"}, lambda cmd: "OK")
    build_led_sign_from_config({"url": "loop://"})
    build_announcer_from_config({"engine": "none", "sink": "silent"})
    assert set(keys_read) == {"hardware.printer", "hardware.keypad", "hardware.led",
                              "hardware.announcer"}
    for section, keys in keys_read.items():
        missing = keys - documented_keys(section)
        assert not missing, f"{section}: keys not in docs/hardware.md: {sorted(missing)}"
