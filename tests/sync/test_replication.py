"""Replication between real event logs (SQLite files, writer threads) over real HTTP on 127.0.0.1.

No network namespaces here: peers are given as static `PeerInfo`s. The namespace tests in
tests/branch/ run the same code between real `smartq node` processes found by mDNS.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.db import connect, migrate
from sync.envelope import Event
from sync.hlc import HybridLogicalClock
from sync.keys import fingerprint
from sync.log import MIGRATIONS, EventLog, version_vector
from sync.peers import PeerInfo
from sync.protocol import PREFIX, PeerClient, PeerError, sign_headers
from sync.replication import Replicator, SyncSettings, create_sync_app
from sync.writer import Writer

T = TypeVar("T")
FAST = SyncSettings(anti_entropy_s=0.1, retry_min_s=0.05, retry_max_s=0.2, pull_batch=7, push_batch=5)


class Device:
    """A minimal replication store: an EventLog on a real SQLite file, its writer thread,
    plus the sync app on 127.0.0.1 and a Replicator."""

    def __init__(self, tmp: Path, device_id: str, keys: dict[str, Ed25519PrivateKey], branch: str = "b1",
                 db_name: str | None = None) -> None:
        self.id, self.key, self.branch = device_id, keys[device_id], branch
        self.path = tmp / (db_name or f"{device_id}.db")
        conn = connect(self.path)
        migrate(conn, "sync", MIGRATIONS)
        conn.close()
        self.keyring = lambda origin: keys[origin].public_key() if origin in keys else None
        self.log = EventLog(device_id=device_id, branch=branch, private_key=self.key,
                            clock=HybridLogicalClock(), keyring=self.keyring, apply=lambda conn, e: None)
        self.writer = Writer(self.path)
        self.writer.add_listener(self.log)
        self.committed: list[Event] = []
        self.replicator: Replicator | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = connect(self.path, readonly=True)
            try:
                return fn(conn)
            finally:
                conn.close()
        return await asyncio.to_thread(run)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.run(fn)

    async def start(self, settings: SyncSettings = FAST) -> None:
        loop = asyncio.get_running_loop()
        self.writer.start()
        self.replicator = Replicator(self, device_id=self.id, branch=self.branch, key=self.key,
                                     keyring=self.keyring, settings=settings)

        def committed(events: list[Event]) -> None:  # writer thread -> loop, like the node
            self.committed.extend(events)
            if self.replicator is not None:
                loop.call_soon_threadsafe(self.replicator.on_committed, events)

        self.log.on_commit(committed)
        app = create_sync_app(self, device_id=self.id, role="counter", branch=self.branch, key=self.key,
                              keyring=self.keyring, settings=settings, on_request=self.replicator.heard_from)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        await self.replicator.start()

    def info(self, *, source: str = "static", device_id: str | None = None, fp: str | None = None,
             branch: str | None = None) -> PeerInfo:
        return PeerInfo(device_id=device_id or self.id, branch=branch or self.branch, role="counter",
                        addresses=("127.0.0.1",), port=self.port, protocol_version=1,
                        fingerprint=fingerprint(self.key.public_key()) if fp is None else fp,
                        last_seen=0.0, source=source)  # type: ignore[arg-type]

    async def append(self, n: int = 1) -> list[Event]:
        return await self.write(lambda conn: [self.log.append(conn, "t", {"i": i}) for i in range(n)])

    async def vv(self) -> dict[str, int]:
        return await self.read(version_vector)

    async def stop(self) -> None:
        if self.replicator is not None:
            await self.replicator.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        self.writer.stop()


@pytest.fixture
def keys() -> dict[str, Ed25519PrivateKey]:
    return {name: Ed25519PrivateKey.generate() for name in ("a", "b", "c")}


@pytest.fixture
async def devices(tmp_path, keys):
    made: list[Device] = []

    async def make(device_id: str, **kw: Any) -> Device:
        device = Device(tmp_path, device_id, keys, **kw)
        await device.start()
        made.append(device)
        return device

    yield make
    for device in made:
        await device.stop()


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def link(x: Device, y: Device) -> None:
    x.replicator.upsert(y.info())
    y.replicator.upsert(x.info())


async def test_a_committed_event_is_pushed_to_every_peer(devices):
    a, b, c = await devices("a"), await devices("b"), await devices("c")
    link(a, b)
    link(a, c)
    await a.append(3)
    await until(lambda: _equal(a, b, c))
    assert await b.vv() == {"a": 3}


async def test_anti_entropy_relays_events_of_a_device_that_is_not_reachable(devices):
    a, b, c = await devices("a"), await devices("b"), await devices("c")
    link(a, b)
    link(b, c)  # c never talks to a
    await a.append(20)
    await c.append(4)
    await until(lambda: _equal(a, b, c))
    assert await c.vv() == {"a": 20, "c": 4}


async def test_a_peer_that_was_away_catches_up_in_batches_and_gaps_are_filled(devices, keys):
    a, b = await devices("a"), await devices("b")
    await a.append(30)  # b knows nothing of a yet: no push
    link(a, b)
    await a.append(1)   # pushed at once, held by b (gap) until the batches arrive
    await until(lambda: _equal(a, b))
    assert await b.vv() == {"a": 31}


async def test_peer_view_says_who_is_reachable_and_how_far_behind(devices, tmp_path, keys):
    a, b = await devices("a"), await devices("b")
    link(a, b)
    await a.append(2)
    await until(lambda: _equal(a, b))
    await until(lambda: _async(a.replicator.view()[0]["status"] == "ok"))
    row = a.replicator.view()[0]
    assert row["id"] == "b" and row["address"] == f"127.0.0.1:{b.port}" and row["last_seen"] is not None
    await b.stop()
    await a.append(1)
    await until(lambda: _async(a.replicator.view()[0]["status"] == "unreachable"))
    assert a.replicator.view()[0]["last_error"]


async def test_a_static_peer_without_id_is_identified_by_its_signed_answer(devices):
    a, b = await devices("a"), await devices("b")
    info = b.info(device_id=f"static:127.0.0.1:{b.port}")
    assert a.replicator.upsert(info)
    b.replicator.upsert(a.info())
    await a.append(2)
    await until(lambda: _equal(a, b))
    await until(lambda: _async(a.replicator.view()[0]["id"] == "b"))


async def test_discovered_peers_off_the_roster_with_a_wrong_fingerprint_or_branch_are_ignored(devices, caplog):
    a, b = await devices("a"), await devices("b")
    assert not a.replicator.upsert(b.info(source="mdns", fp="0" * 16))
    assert not a.replicator.upsert(b.info(source="mdns", branch="b2"))
    assert not a.replicator.upsert(b.info(source="mdns", device_id="rogue"))
    assert a.replicator.view() == []
    assert "fingerprint" in caplog.text and "not on the roster" in caplog.text
    assert a.replicator.upsert(b.info(source="mdns"))


async def test_an_outsider_can_neither_push_nor_pull(devices, keys):
    a, b = await devices("a"), await devices("b")
    await a.append(2)
    rogue = Ed25519PrivateKey.generate()
    forged = Event("a", 3, 1, "t", 1, {"i": 666}, "b1", "").signed(rogue).to_dict()
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{a.port}"
        # Its own key and id: not on the roster.
        outsider = PeerClient(session, base, device="rogue", branch="b1", key=rogue, peer_device="a")
        for call in (outsider.hello(), outsider.pull({}), outsider.push([forged])):
            with pytest.raises(PeerError) as err:
                await call
            assert err.value.status == 403
        # A roster id with its own key: the request signature fails.
        impostor = PeerClient(session, base, device="b", branch="b1", key=rogue, peer_device="a")
        with pytest.raises(PeerError) as err:
            await impostor.pull({})
        assert err.value.status == 401
        # A request b really signed, replayed, or re-sent to another device.
        body = b'{"vv":{},"limit":10}'
        captured = sign_headers(keys["b"], device="b", branch="b1", method="POST", path=f"{PREFIX}/pull",
                                body=body, to="a")
        async with session.post(base + f"{PREFIX}/pull", data=body, headers=captured) as resp:
            assert resp.status == 200  # the genuine delivery
        for url in (base, f"http://127.0.0.1:{b.port}"):
            async with session.post(url + f"{PREFIX}/pull", data=body, headers=captured) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "refused"
    assert await a.vv() == {"a": 2}


async def test_answers_not_signed_by_the_expected_peer_are_not_ingested(devices, tmp_path, keys):
    a, b = await devices("a"), await devices("b")
    await b.append(3)
    # An impostor listening where a's replicator believes "b" is: signs with its own key.
    impostor_key = Ed25519PrivateKey.generate()
    impostor = Device(tmp_path, "b", {**keys, "b": impostor_key}, db_name="impostor.db")
    await impostor.start()
    try:
        await impostor.append(2)
        a.replicator.upsert(PeerInfo("b", "b1", "counter", ("127.0.0.1",), impostor.port, 1, "", 0.0, "static"))
        await until(lambda: _async(a.replicator.peer("b").status == "unreachable"))
        assert "untrusted answer" in a.replicator.peer("b").last_error
        assert await a.vv() == {}
    finally:
        await impostor.stop()


async def test_bad_bodies_get_clear_4xx_errors(devices, keys):
    a = await devices("a")
    async with aiohttp.ClientSession() as session:
        for path, body in ((f"{PREFIX}/pull", b'{"vv": [1]}'), (f"{PREFIX}/push", b'{"events": 3}'),
                           (f"{PREFIX}/pull", b"not json")):
            headers = sign_headers(keys["b"], device="b", branch="b1", method="POST", path=path, body=body, to="a")
            async with session.post(f"http://127.0.0.1:{a.port}{path}", data=body, headers=headers) as resp:
                assert resp.status == 400, await resp.text()
                assert "error" in await resp.json()


async def _async(value: Any) -> Any:
    return value


async def _equal(*devs: Device) -> bool:
    vvs = [await d.vv() for d in devs]
    return all(v == vvs[0] for v in vvs) and bool(vvs[0])


@pytest.mark.parametrize("steps", range(4))
async def test_stop_ends_even_when_a_peer_is_woken_as_it_is_cancelled(devices, steps):
    """Python 3.11's `asyncio.wait_for` returns the inner result, swallowing the cancellation,
    when both arrive in the same turn of the loop: a replication loop then ran on after
    `stop()` and a node's shutdown hung. Waking a peer's loops just before stopping, a few loop
    turns apart, hits that turn."""
    a, b = await devices("a"), await devices("b")
    link(a, b)
    await a.append(1)
    await until(lambda: _equal(a, b))
    peer = next(iter(a.replicator._peers.values()))
    peer.next_round = asyncio.get_running_loop().time() + 60  # the pull loop waits on its wake
    await asyncio.sleep(0.3)
    peer.wake.set()
    peer.push_wake.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await a.replicator.stop()
    assert all(t.done() for t in (peer.task, peer.push_task) if t is not None)
