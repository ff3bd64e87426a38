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


def test_the_hq_systemd_unit_restarts_on_failure_and_runs_the_entry_point(tmp_path):
    import configparser
    import shutil
    import subprocess

    text = (ROOT / "docs" / "deploy" / "smartq-hq.service").read_text(encoding="utf-8")
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read_string(text)
    service = unit["Service"]
    assert service["Restart"] == "on-failure" and service["KillMode"] == "control-group"
    assert service["ExecStart"].split()[0].endswith("/smartq-hq")
    assert "smartq-hq = hq.__main__:main" in (ROOT / "setup.cfg").read_text(encoding="utf-8")
    if shutil.which("systemd-analyze"):  # the syntax, with a binary that exists here
        copy = tmp_path / "smartq-hq.service"
        copy.write_text(text.replace(service["ExecStart"], "/bin/true"))
        proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert "smartq-hq.service:" not in proc.stderr, proc.stderr


def test_the_proxy_example_hides_metrics_and_overwrites_forwarded_for():
    text = (ROOT / "docs" / "deploy" / "nginx-smartq-hq.conf").read_text(encoding="utf-8")
    assert "location = /metrics {\n        return 404;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # overwrite, never $proxy_add_x_forwarded_for
    assert "non_idempotent" not in text.split("proxy_next_upstream", 1)[1].split(";", 1)[0]
    assert "trust_forwarded_for = true" in (ROOT / "docs" / "hq.md").read_text(encoding="utf-8")
