from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.db import connect, migrate
from sync.envelope import Event
from sync.hlc import HybridLogicalClock
from sync.log import MIGRATIONS, EventLog


class ManualClock:
    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class LogUnderTest:
    """An EventLog on a real SQLite file; `applied` records what the fold saw."""

    def __init__(self, path: Path, device_id: str, keys: dict[str, Ed25519PrivateKey], clock: ManualClock) -> None:
        self.conn: sqlite3.Connection = connect(path)
        migrate(self.conn, "sync", MIGRATIONS)
        self.applied: list[Event] = []
        self.clock = clock
        self.log = EventLog(
            device_id=device_id, branch="b1", private_key=keys[device_id], clock=HybridLogicalClock(clock=clock),
            keyring=lambda origin: keys[origin].public_key() if origin in keys else None,
            apply=lambda conn, e: self.applied.append(e),
        )

    def txn(self, fn):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self.log.committed()
        return result

    def append(self, type_: str = "t", payload: dict | None = None) -> Event:
        return self.txn(lambda c: self.log.append(c, type_, payload or {}))

    def ingest(self, events):
        return self.txn(lambda c: self.log.ingest(c, [e.to_dict() if isinstance(e, Event) else e for e in events]))


@pytest.fixture
def keys() -> dict[str, Ed25519PrivateKey]:
    return {name: Ed25519PrivateKey.generate() for name in ("a", "b", "c")}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_log(tmp_path, keys, clock):
    def make(device_id: str) -> LogUnderTest:
        return LogUnderTest(tmp_path / f"{device_id}.db", device_id, keys, clock)
    return make
