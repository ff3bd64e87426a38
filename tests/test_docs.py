"""Every user-visible setting of the node is in docs/configuration.md (datasette style)."""

from __future__ import annotations

from pathlib import Path

from appliance.config import SETTINGS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_node_setting_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in SETTINGS if f"`{name}`" not in text]
    assert not missing, f"document these settings in docs/configuration.md: {missing}"


def test_every_local_api_route_is_documented():
    from appliance.openapi import openapi_document

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [path for path in openapi_document()["paths"] if path not in text]
    assert not missing, f"document these routes in docs/api.md: {missing}"
