"""A service HQ's catalogue adds or withdraws reaches the node as config.service: an added one is
listed in GET /state (what the kiosk offers) with its pictogram; a withdrawn one (`enabled: false`)
is marked so the kiosk stops offering it and walk-ins are refused, while tickets already waiting
stay in the line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance import events as ev
from appliance.config import load_config
from appliance.errors import Conflict
from appliance.node import Node
from appliance.sample import write_sample

TAX = {"id": "tax", "letter": "T", "names": {"en": "Taxes", "fr": "Impôts"}, "rules": {}, "order": 5, "icon": "money"}


async def test_a_catalogue_service_is_listed_then_withdrawn_and_its_waiting_ticket_stays(tmp_path: Path) -> None:
    write_sample(tmp_path / "b")
    node = Node(load_config(tmp_path / "b" / "kiosk.toml"))
    await asyncio.to_thread(node.open)
    try:
        await node.write(lambda conn: node.log.append(conn, ev.CONFIG_SERVICE, TAX))
        state = await node.read(node.branch.state)
        tax = next(s for s in state["services"] if s["id"] == "tax")
        assert tax["icon"] == "money" and "enabled" not in tax and tax["names"]["fr"] == "Impôts"
        ticket = await node.write(lambda conn: node.branch.issue(conn, {"service": "tax"}))
        assert ticket["label"].startswith("T")
        await node.write(lambda conn: node.log.append(conn, ev.CONFIG_SERVICE, TAX | {"enabled": False}))
        state = await node.read(node.branch.state)
        tax = next(s for s in state["services"] if s["id"] == "tax")
        assert tax["enabled"] is False and tax["waiting"] == 1
        with pytest.raises(Conflict) as refused:
            await node.write(lambda conn: node.branch.issue(conn, {"service": "tax"}))
        assert refused.value.code == "service_withdrawn"
        # Offered again: walk-ins are taken again.
        await node.write(lambda conn: node.log.append(conn, ev.CONFIG_SERVICE, TAX))
        again = await node.write(lambda conn: node.branch.issue(conn, {"service": "tax"}))
        assert again["label"] != ticket["label"]
    finally:
        await asyncio.to_thread(node.close)
