"""Counter names per language from the device configuration reach GET /api/v1/state."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.config import load_config
from appliance.node import Node
from appliance.sample import write_sample


async def test_counter_names_per_language_reach_the_state(tmp_path: Path) -> None:
    """[[counters]] names = {...}: every screen shows a counter in its own language."""
    write_sample(tmp_path / "b")
    path = tmp_path / "b" / "kiosk.toml"
    text = path.read_text()
    start = text.index("names", text.index('name = "Counter 1"\n'))
    path.write_text(text[:start] + 'names = { fr = "Guichet 1", rw = "Idirishya 1" }' + text[text.index("\n", start):])
    node = Node(load_config(path))
    await asyncio.to_thread(node.open)
    try:
        state = await node.read(node.branch.state)
        c1 = next(c for c in state["counters"] if c["id"] == "c1")
        assert c1["name"] == "Counter 1" and c1["names"] == {"fr": "Guichet 1", "rw": "Idirishya 1"}
    finally:
        await asyncio.to_thread(node.close)
