"""Copy a SQLite HQ database into another database, to grow a one-host HQ into PostgreSQL.

``smartq-hq --config hq.toml copy-database --to postgresql://...`` (docs/hq.md, "Moving from
SQLite to PostgreSQL"): with HQ stopped, the target is migrated to the same schema, then every
table (except the migrations record, which the target has its own of) is copied in one
transaction on the target, read from one snapshot of the source, parents before the tables
whose foreign keys point at them, each in its rowid order (so PostgreSQL's identity columns
that SQLite keeps as rowids, such as ``events.rid``, number the rows in the same order). The
target's identity counters then continue after the copied ids. A target that already holds
HQ data is refused: the copy never merges two HQs.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHUNK = 1000  # rows per executemany (psycopg sends each as one pipeline)
SKIP = {"migrations"}  # the target's own record of its schema
HOLDS_DATA = ("users", "orgs", "branches", "bookings", "events")  # any row here: the target is in use


class CopyError(Exception):
    """The copy cannot be done (say why in one line)."""


def tables_in_order(src: sqlite3.Connection) -> list[str]:
    """Every table of the source, each after the tables its foreign keys reference."""
    names = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    parents = {n: {r[2] for r in src.execute(f'PRAGMA foreign_key_list("{n}")')} - {n} for n in names}
    ordered: list[str] = []
    placed: set[str] = set()

    def place(name: str, path: tuple[str, ...] = ()) -> None:
        if name in placed or name in path:
            return
        for parent in sorted(parents.get(name, ())):
            if parent in parents:
                place(parent, (*path, name))
        placed.add(name)
        ordered.append(name)
    for name in names:
        place(name)
    return [n for n in ordered if n not in SKIP]


def _rows(src: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    cols = ", ".join(f'"{c}"' for c in columns)
    without_rowid = src.execute("SELECT 1 FROM sqlite_master WHERE name = ? AND sql LIKE '%WITHOUT ROWID%'",
                                (table,)).fetchone()
    cur = src.execute(f'SELECT {cols} FROM "{table}"' + ("" if without_rowid else " ORDER BY rowid"))
    while True:
        chunk = cur.fetchmany(CHUNK)
        if not chunk:
            return
        yield [tuple(r) for r in chunk]


def _columns(conn: Any, table: str) -> list[str]:
    cur = conn.execute(f'SELECT * FROM "{table}" WHERE 1 = 0')
    return [d[0] for d in cur.description]


def copy_into(src_path: str | Path, target: Any) -> dict[str, int]:
    """Copy the SQLite file at ``src_path`` into ``target`` (an opened, migrated HQ database of
    either backend); return the rows copied per table."""
    src = sqlite3.connect(f"file:{Path(src_path)}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")  # one snapshot of every table, even if something writes meanwhile
        tables = tables_in_order(src)

        def write(conn: Any) -> dict[str, int]:
            for table in HOLDS_DATA:
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                    raise CopyError(f"the target already holds HQ data (table {table} has rows): "
                                    "copy into a new, empty database")
            missing = [t for t in tables if not _exists(conn, t)]
            if missing:
                raise CopyError(f"the target has no table {missing[0]}: is it older than the source's HQ?")
            for table in reversed(tables):  # what migrations seeded (children first)
                conn.execute(f'DELETE FROM "{table}"')
            counts = {}
            for table in tables:
                columns, have = _columns_sqlite(src, table), set(_columns(conn, table))
                lost = [c for c in columns if c not in have]
                if lost:
                    raise CopyError(f"the target's table {table} has no column {lost[0]}")
                sql = (f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in columns)})'
                       f' VALUES ({", ".join("?" * len(columns))})')
                n = 0
                for chunk in _rows(src, table, columns):
                    conn.executemany(sql, chunk)
                    n += len(chunk)
                counts[table] = n
            if conn.dialect == "postgresql":
                _continue_identities(conn)
            return counts
        return target.write_sync(write)
    finally:
        src.close()


def _columns_sqlite(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]


def _exists(conn: Any, table: str) -> bool:
    if conn.dialect == "postgresql":
        return conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
                            " AND table_name = ?", (table,)).fetchone() is not None
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def _continue_identities(conn: Any) -> None:
    """Each identity column's next value comes after the largest copied one."""
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND is_identity = 'YES'").fetchall():
        conn.execute(f'SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX("{column}"), 0) + 1, false)'
                     f' FROM "{table}"', (f'"{table}"', column))
