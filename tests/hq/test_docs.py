"""Every HQ setting is documented in docs/hq.md; every route is in docs/api-hq.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from hq.routes import ROUTES
from hq.settings import SETTINGS, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_setting_is_documented(name):
    assert f"| `{name}` |" in (ROOT / "docs" / "hq.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_route_is_documented(route):
    assert f"`{route.method} {route.path}`" in (ROOT / "docs" / "api-hq.md").read_text(encoding="utf-8")


def test_settings_load_from_toml(tmp_path):
    (tmp_path / "hq.toml").write_text('[hq]\nport = 9000\ndata_dir = "state"\ncookie_secure = false\n')
    s = load_settings(tmp_path / "hq.toml")
    assert s.port == 9000 and s.cookie_secure is False and s.data_dir == str(tmp_path / "state")
    assert s.database_path == tmp_path / "state" / "hq.sqlite3"


@pytest.mark.parametrize("text", ['port = "x"', "nope = 1", "port = ", 'cookie_secure = "yes"'])
def test_bad_settings_are_clear_errors(tmp_path, text):
    (tmp_path / "hq.toml").write_text(text)
    with pytest.raises(SettingsError):
        load_settings(tmp_path / "hq.toml")


def test_settings_are_immutable():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]
