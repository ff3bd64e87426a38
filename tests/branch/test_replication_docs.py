"""docs/replication.md documents every [lan] setting (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError
from appliance.lan import DEFAULTS, SETTINGS, parse_lan

DOC = Path(__file__).resolve().parents[2] / "docs" / "replication.md"


def test_every_lan_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name, _, _ in SETTINGS if f"| `{name}` |" not in text]
    assert missing == []


def test_lan_settings_parse_and_bad_ones_say_which_key() -> None:
    settings = parse_lan({"listen": "0.0.0.0:9000", "mdns": False, "static_peers": ["display@10.0.0.2:9000"],
                          "retry_max_s": 2})
    assert (settings.listen_host, settings.listen_port, settings.mdns) == ("0.0.0.0", 9000, False)
    assert settings.sync.retry_max_s == 2.0 and settings.static_peers == ("display@10.0.0.2:9000",)
    assert parse_lan({}).listen_port == int(DEFAULTS["listen"].rsplit(":", 1)[1])
    for bad, key in (({"listen": "nowhere"}, "lan.listen"), ({"mdns": "yes"}, "lan.mdns"),
                     ({"pull_batch": 0}, "lan.pull_batch"), ({"static_peers": "x"}, "lan.static_peers"),
                     ({"colour": 1}, "unknown")):
        with pytest.raises(ConfigError, match=key):
            parse_lan(bad)
