"""`[hq]` settings: every key documented, bad input a clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError
from appliance.uplink import SETTINGS, parse_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"url": "https://hq.example.org", "public_key": "x" * 43}


@pytest.mark.parametrize("name", [name for name, _, _ in SETTINGS])
def test_hq_key_is_documented(name):
    assert f"| `{name}` |" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_defaults_and_overrides():
    s = parse_settings({**GOOD, "interval_s": 2, "nightly_at": "03:15"})
    assert (s.interval_s, s.nightly_time, s.retention_days) == (2, (3, 15), 30)


@pytest.mark.parametrize("raw", [
    {}, {"url": "https://x"}, {**GOOD, "url": "ftp://x"}, {**GOOD, "interval_s": "5"}, {**GOOD, "nightly": 1},
    {**GOOD, "nightly_at": "25:00"}, {**GOOD, "batch": 0}, {**GOOD, "surprise": 1}, {**GOOD, "backoff_max_s": 0.1},
    "not a table",
])
def test_bad_hq_section_is_a_clear_error(raw):
    with pytest.raises(ConfigError):
        parse_settings(raw)
