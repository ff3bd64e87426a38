"""Fixtures: a real HQ server on 127.0.0.1 (real sockets, a real database), seeded tenants.

Every test under tests/hq runs on both backends: ``[sqlite]`` on a SQLite file in tmp_path and
``[postgresql]`` (marked ``pg``: ``-m pg`` selects them, ``-m "not pg"`` skips them) on its own
database of one real PostgreSQL server per session (tests/hq/pgserver.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

import hqtest
import pgserver
from hqtest import FakeClock, Server, ThreadedServer, make_settings, seed, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    if not pgserver.available():
        pytest.skip(f"PostgreSQL 15 is not installed ({pgserver.PG_BIN}; `make test` installs it)")
    with pgserver.PgServer() as pg:
        yield pg


@pytest.fixture(scope="session", autouse=True,
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def hq_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which database the test's HQ uses (hqtest.make_settings reads it)."""
    if request.param == "postgresql":
        hqtest.BACKEND["pg"] = request.getfixturevalue("pg_server")
    try:
        yield request.param
    finally:
        hqtest.BACKEND["pg"] = None


@pytest.fixture(autouse=True)
def _drop_test_databases(hq_backend: str) -> Iterator[None]:
    yield
    pg = hqtest.BACKEND["pg"]
    while hqtest.CREATED:
        url = hqtest.CREATED.pop()
        if pg is not None:
            pg.drop_database(url)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
async def server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path)
    runner, srv = await start_server(settings, clock)
    try:
        async with aiohttp.ClientSession() as session:
            await seed(srv, session)
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture()
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory, hq_backend: str) -> Iterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("hq"))
    hqtest.CREATED.remove(settings.database) if settings.database in hqtest.CREATED else None
    with ThreadedServer(settings, FakeClock()) as srv:
        yield srv
    if hqtest.BACKEND["pg"] is not None:
        hqtest.BACKEND["pg"].drop_database(settings.database)
