"""The ticket status link (HELPERS contract): status_token in every ticket.issued, status_url in
the local API's ticket JSON (201, GET, stream), null without `[hq] public_url`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest

from appliance.api import create_app
from appliance.config import ConfigError, load_config
from appliance.node import Node
from appliance.uplink import from_config
from sync.log import all_events

from .conftest import ManualClock, copy_branch

TOKEN = re.compile(r"^[A-Za-z0-9_-]{22}$")


async def running(paths: dict[str, Path], aiohttp_client, public_url: str | None):
    config = load_config(paths["kiosk"])
    if public_url is not None:
        config = dataclasses.replace(config, public_url=public_url)
    node = Node(config, clock=ManualClock())
    await asyncio.to_thread(node.open)
    await node.start()
    client = await aiohttp_client(create_app(node))
    client.node = node
    return client


@pytest.fixture
async def api(sample_template, tmp_path, aiohttp_client):
    client = await running(copy_branch(sample_template, tmp_path / "b"), aiohttp_client, "https://hq.example.org")
    yield client
    await client.node.stop()


async def test_every_ticket_gets_its_own_unguessable_status_url_in_201_get_and_stream(api):
    async with api.get("/api/v1/stream") as stream:
        await stream.content.readuntil(b"\n\n")  # hello
        await stream.content.readuntil(b"\n\n")  # peers
        r = await api.post("/api/v1/tickets", json={"service": "general"})
        assert r.status == 201
        issued = await r.json()
        raw = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), timeout=10)
    second = await (await api.post("/api/v1/tickets", json={"service": "general"})).json()
    url = issued["status_url"]
    assert url.startswith("https://hq.example.org/t/")
    token = url.removeprefix("https://hq.example.org/t/")
    assert TOKEN.match(token) and issued["id"] not in url and issued["label"] not in url
    assert second["status_url"] != url
    assert (await (await api.get(f"/api/v1/tickets/{issued['id']}")).json())["status_url"] == url
    data = json.loads(dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())["data"])
    assert data["ticket"]["status_url"] == url
    assert data["event"]["payload"]["status_token"] == token  # what HQ indexes the ticket by
    # the token is in the signed ticket.issued event itself, so it replicates to peers and HQ
    events = await api.node.read(lambda c: [e for e in all_events(c) if e.type == "ticket.issued"])
    assert [e.payload["status_token"] for e in events] == [token, second["status_url"].rsplit("/", 1)[1]]


async def test_status_url_is_null_without_public_url(sample_template, tmp_path, aiohttp_client):
    client = await running(copy_branch(sample_template, tmp_path / "b"), aiohttp_client, None)
    try:
        assert client.node.config.public_url is None
        t = await (await client.post("/api/v1/tickets", json={"service": "general"})).json()
        assert t["status_url"] is None
    finally:
        await client.node.stop()


def write_kiosk(paths: dict[str, Path], extra: str) -> Path:
    path = paths["kiosk"]
    path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def test_public_url_is_read_from_hq_and_a_table_with_only_it_starts_no_link(sample_template, tmp_path):
    path = write_kiosk(copy_branch(sample_template, tmp_path / "b"), '\n[hq]\npublic_url = "https://hq.example.org/"\n')
    config = load_config(path)
    assert config.public_url == "https://hq.example.org"
    assert config.status_url("A" * 22) == "https://hq.example.org/t/" + "A" * 22
    assert from_config(config) is None


@pytest.mark.parametrize("value", ['"hq.example.org"', '"ftp://hq"', "3", '"https://hq.example.org/?x=1"'])
def test_a_bad_public_url_is_a_clear_config_error(sample_template, tmp_path, value):
    path = write_kiosk(copy_branch(sample_template, tmp_path / "b"), f"\n[hq]\npublic_url = {value}\n")
    with pytest.raises(ConfigError, match="hq.public_url: expected an http:// or https:// address"):
        load_config(path)
