"""Helpers for HQ tests: a real HQ server on 127.0.0.1 (real sockets, a real database), seeded tenants.

Every HQ test runs twice (tests/hq/conftest.py): on a real SQLite file in tmp_path and on a
fresh database of a real PostgreSQL server the tests started (tests/hq/pgserver.py).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from hq.app import create_app
from hq.auth import hash_password
from hq.settings import Settings
from hq.web import HQ_KEY

# Monday 2030-01-07 07:00 UTC (08:00 in Zurich): deterministic "now" for bookings.
T0 = int(datetime(2030, 1, 7, 7, 0, tzinfo=timezone.utc).timestamp())
PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


# The PostgreSQL server of the running test when it runs on PostgreSQL (set by conftest's hq_backend).
BACKEND: dict[str, Any] = {"pg": None}
CREATED: list[str] = []  # databases made for the running test; conftest drops them after it


def make_settings(tmp_path: Path, **over: Any) -> Settings:
    base = dict(data_dir=str(tmp_path / "hq"), port=0, cookie_secure=False, argon2_memory_kib=64,
                argon2_iterations=1, argon2_lanes=1, scheduler_enabled=False, booking_rate_per_minute=0,
                login_rate_per_minute=0, default_phone_region="CH", pool_size=4, read_connections=2)
    if BACKEND["pg"] is not None and "database" not in over:
        base["database"] = BACKEND["pg"].create_database()
        CREATED.append(base["database"])
    base.update(over)
    return Settings(**base)


class TestDb:
    """A direct connection to a test HQ's database (either backend): ``execute`` with ``?``
    parameters, rows by name and index; commits and closes at the end of a ``with``."""

    def __init__(self, where: Settings | Server | Any) -> None:
        if isinstance(where, (str, Path)):  # a SQLite file
            where = Settings(database=str(where))
        settings = where.app[HQ_KEY].settings if isinstance(where, Server) else where
        url = settings.database_url
        if url.startswith("postgresql"):
            import psycopg
            from hq.db_pg import PgConn, _configure, row_factory
            raw = psycopg.connect(url, autocommit=True, row_factory=row_factory)
            _configure(raw)
            self._raw: Any = raw
            self._conn: Any = PgConn(raw)
        else:
            self._raw = self._conn = sqlite3.connect(settings.database_path)
            self._conn.row_factory = sqlite3.Row
        self.dialect = "postgresql" if url.startswith("postgresql") else "sqlite"

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, seq: Any) -> Any:
        return self._conn.executemany(sql, seq)

    def commit(self) -> None:
        if self.dialect == "sqlite":
            self._raw.commit()

    def close(self) -> None:
        self.commit()
        self._raw.close()

    def __enter__(self) -> TestDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_db(where: Settings | Server | Any) -> TestDb:
    return TestDb(where)


@dataclass
class Server:
    url: str
    app: web.Application
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


async def start_server(settings: Settings, clock: FakeClock, **kw: Any) -> tuple[web.AppRunner, Server]:
    app = create_app(settings, clock=clock, rng=random.Random(7), **kw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, Server(f"http://127.0.0.1:{port}", app, clock)


def add_user(where: Settings | Server, email: str, role: str, org: str | None = None, branch: str | None = None) -> None:
    encoded = hash_password(PASSWORD, memory_kib=64, iterations=1, lanes=1)
    with connect_db(where) as c:
        c.execute("INSERT INTO users (email, password_hash, role, org_id, branch_id, created_at) VALUES (?, ?, ?, ?, ?, 0)",
                  (email, encoded, role, org, branch))


async def api(session: aiohttp.ClientSession, method: str, url: str, expect: int | None = None, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as resp:
        data = await resp.json(content_type=None) if resp.status != 204 else None
        if expect is not None:
            assert resp.status == expect, (method, url, resp.status, data)
        return data


async def seed(srv: Server, session: aiohttp.ClientSession, where: Settings | None = None) -> None:
    """Two orgs (acme, beta), each with one branch, a bookable service, a counter, hours; one user per role."""
    where = where or srv
    add_user(where, "root@hq.test", "super_admin")
    srv.tokens["super"] = (await api(session, "POST", f"{srv.url}/api/v1/auth/tokens", 201,
                                     json={"email": "root@hq.test", "password": PASSWORD}))["token"]
    sup = srv.h("super")
    for org, branch in (("acme", "acme-main"), ("beta", "beta-main")):
        await api(session, "POST", f"{srv.url}/api/v1/orgs", 201, json={"id": org, "name": org.title()}, headers=sup)
        await api(session, "POST", f"{srv.url}/api/v1/orgs/{org}/branches", 201, headers=sup,
                  json={"id": branch, "name": f"{org} main", "timezone": "Europe/Zurich", "languages": ["en", "de"]})
        await api(session, "PUT", f"{srv.url}/api/v1/branches/{branch}/services/general", 200, headers=sup,
                  json={"letter": "A", "names": {"en": "General", "de": "Allgemein"}, "slot_minutes": 15, "capacity": 3})
        await api(session, "PUT", f"{srv.url}/api/v1/branches/{branch}/counters/c1", 200, headers=sup,
                  json={"name": "Counter 1", "services": ["general"]})
        await api(session, "PUT", f"{srv.url}/api/v1/branches/{branch}/hours", 200, headers=sup,
                  json={"weekdays": {str(d): {"opens": "08:00", "closes": "17:00"} for d in range(5)}})
        for role, who in (("org_admin", "admin"), ("branch_manager", "manager"), ("staff", "staff")):
            email = f"{who}@{org}.test"
            add_user(where, email, role, org, branch if role != "org_admin" else None)
            srv.tokens[f"{org}-{who}"] = (await api(session, "POST", f"{srv.url}/api/v1/auth/tokens", 201,
                                                    json={"email": email, "password": PASSWORD}))["token"]


class ThreadedServer:
    """A real HQ server on its own loop in a thread, for synchronous clients (schemathesis)."""

    def __init__(self, settings: Settings, clock: FakeClock) -> None:
        self.settings, self.clock = settings, clock
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.srv: Server | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            runner, self.srv = await start_server(self.settings, self.clock)
            async with aiohttp.ClientSession() as session:
                await seed(self.srv, session)
        except BaseException as err:
            self.error = err
            self.ready.set()
            raise
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Server:
        self.thread.start()
        self.ready.wait(60)
        if self.error or self.srv is None:
            raise RuntimeError("HQ server did not start") from self.error
        return self.srv

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        self.loop.close()
