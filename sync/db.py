"""SQLite connections and numbered migrations.

Every connection runs in WAL mode with `synchronous=FULL`, so a commit is on disk before a
command is acknowledged. Connections are opened with `isolation_level=None`: the writer
issues `BEGIN IMMEDIATE` itself.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated DDL inside the current transaction (executescript would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def migrate(conn: sqlite3.Connection, namespace: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations of `namespace` not applied yet, each in a transaction with its record.

    Returns how many were applied. Migration N is `migrations[N - 1]`; never reorder them.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS migrations ("
        " namespace TEXT NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL,"
        " applied_ms INTEGER NOT NULL, PRIMARY KEY (namespace, number))"
    )
    done = {row[0] for row in conn.execute("SELECT number FROM migrations WHERE namespace = ?", (namespace,))}
    applied = 0
    for number, step in enumerate(migrations, start=1):
        if number in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(
                "INSERT INTO migrations (namespace, number, name, applied_ms) VALUES (?, ?, ?, ?)",
                (namespace, number, step.__name__, int(time.time() * 1000)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("applied migration %s/%d %s", namespace, number, step.__name__)
        applied += 1
    return applied
