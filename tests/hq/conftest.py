"""Fixtures: a real HQ server on 127.0.0.1 (real sockets, real SQLite in tmp_path), seeded tenants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from hqtest import FakeClock, Server, ThreadedServer, make_settings, seed, start_server


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
async def server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path)
    runner, srv = await start_server(settings, clock)
    try:
        async with aiohttp.ClientSession() as session:
            await seed(srv, session, settings.database_path)
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture()
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ThreadedServer(make_settings(tmp_path_factory.mktemp("hq")), FakeClock()) as srv:
        yield srv
