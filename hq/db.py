"""HQ storage: one small connection interface on two backends, chosen by the ``database`` setting.

Domain code is written once as plain functions ``fn(conn) -> result`` and runs with
``await db.write(fn)`` or ``await db.read(fn)``. ``conn`` behaves the same on both backends:
``conn.execute(sql, params)`` with ``?`` placeholders, ``fetchone``/``fetchall``/iteration and
``rowcount`` on its result, rows addressable by column name and by index, ``conn.dialect``
("sqlite" or "postgresql") for the few statements that must differ, and
:class:`IntegrityError` for a violated constraint. SQL has to be portable (docs/hq.md,
"Portable SQL").

SQLite (``sqlite:///path``, the default): one writer thread with group commit. The writer
takes whatever is queued, opens one ``BEGIN IMMEDIATE`` transaction, runs each function
inside its own SAVEPOINT (a failing one rolls back alone), commits once, and only then
resolves the callers' futures. Every write transaction holds the database's write lock, so a
read-check-insert inside one function cannot race, even across HQ worker processes.

PostgreSQL (``postgresql://...``, hq/db_pg.py): each function runs in its own SERIALIZABLE
transaction on a pooled connection, retried when PostgreSQL reports a serialization failure
or deadlock, so the same read-check-insert is just as safe with many HQ processes on many hosts.
Functions marked with :func:`read_committed` (the booking writes) run at READ COMMITTED, and
those marked :func:`autocommit` (the online booking, whose write is one statement) without a
transaction block.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 256
LOCK_WAIT_S = 30.0
LOCK_RETRY_S = 0.0005


def read_committed(fn: Callable[[Any], T]) -> Callable[[Any], T]:
    """Mark a write function safe at READ COMMITTED: on PostgreSQL it runs at that level instead
    of SERIALIZABLE (and is retried only on deadlock). Only for functions whose invariants rest
    on row locks and atomic statements, not on what they read before writing: the booking
    writes, whose capacity is one conditional upsert on the slot's counter (hq/booking.py).
    SQLite's single writer is serializable whatever the mark."""
    fn.isolation = "READ COMMITTED"  # type: ignore[attr-defined]
    return fn


def autocommit(fn: Callable[[Any], T]) -> Callable[[Any], T]:
    """Mark a write function whose every statement may commit on its own: on PostgreSQL it runs
    with no BEGIN/COMMIT (two round trips fewer), each statement atomic at READ COMMITTED and
    retried only on deadlock or serialization failure. Only for functions whose one write is one
    statement after reads that need no snapshot: the online booking (hq/booking.py
    ``_book_in_one_statement``). SQLite's writer runs it in its transaction like any write."""
    fn.isolation = "AUTOCOMMIT"  # type: ignore[attr-defined]
    return fn


def batchable(fn: Callable[[Any], T], order: tuple[Any, ...] = ()) -> Callable[[Any], T]:
    """Mark an autocommit write (:func:`autocommit`) that PostgreSQL's writer threads may run with
    others queued at the same moment in one transaction (hq/db_pg.py ``_write_batch``): it
    writes with one statement, or writes nothing when it raises. ``order``: batches run their
    writes sorted by it (the rows they lock, e.g. the slot), so two batches never deadlock."""
    fn.batchable = True  # type: ignore[attr-defined]
    fn.order = order  # type: ignore[attr-defined]
    return fn


class IntegrityError(sqlite3.IntegrityError):
    """A constraint was violated (unique, foreign key, not null, check), on either backend.

    A subclass of ``sqlite3.IntegrityError`` so ``except IntegrityError`` catches SQLite's own.
    """


class BadData(ValueError):
    """The database refused a value as such (e.g. a NUL character or an out-of-range integer):
    bad input, answered with a 400, never a 500."""


class Busy(RuntimeError):
    """A write kept conflicting with others for too long (PostgreSQL): answered with a 503."""


class DatabaseClosed(RuntimeError):
    """The database was closed while a write was pending."""


class Conn(Protocol):
    """What domain functions may use of a connection (both backends provide it)."""

    dialect: str

    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def executemany(self, sql: str, seq: Any) -> Any: ...


class SqliteConnection(sqlite3.Connection):
    """sqlite3's connection with the shared interface's extras: ``dialect`` and GREATEST/LEAST."""

    dialect = "sqlite"

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().execute(sql, params)
        except sqlite3.IntegrityError as err:
            if isinstance(err, IntegrityError):
                raise
            raise IntegrityError(str(err)) from err

    def executemany(self, sql: str, seq: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executemany(sql, seq)
        except sqlite3.IntegrityError as err:
            if isinstance(err, IntegrityError):
                raise
            raise IntegrityError(str(err)) from err


def _greatest(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return max(values) if values else None


def _least(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return min(values) if values else None


def begin_immediate(conn: sqlite3.Connection, wait_s: float = LOCK_WAIT_S) -> None:
    """``BEGIN IMMEDIATE``, retrying every 0.5 ms while another process holds the write lock.

    The write connection has no SQLite busy timeout: SQLite's own busy handler backs off to
    100 ms sleeps, so with several HQ worker processes the one that just committed kept winning
    and the others' requests waited seconds. Short retries keep the tail short.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_RETRY_S)


def connect(path: Path, *, readonly: bool = False) -> SqliteConnection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                               isolation_level=None, timeout=30, factory=SqliteConnection)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30,
                               factory=SqliteConnection)
        conn.execute("PRAGMA busy_timeout=30000")  # journal_mode may wait for another process
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    # Readers wait in SQLite; the writer takes its lock with begin_immediate's short retries.
    conn.execute(f"PRAGMA busy_timeout={30000 if readonly else 0}")
    conn.create_function("greatest", -1, _greatest, deterministic=True)
    conn.create_function("least", -1, _least, deterministic=True)
    return conn  # type: ignore[return-value]


def sqlite_path(url: str, data_dir: str | Path = ".") -> Path:
    """The file of a ``sqlite:///path`` URL (or a bare path); relative paths are under data_dir.

    As in SQLAlchemy, ``sqlite:///hq.sqlite3`` is relative and ``sqlite:////var/lib/hq.sqlite3`` absolute.
    """
    raw = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
    path = Path(raw)
    return path if path.is_absolute() else Path(data_dir) / path


def dialect_of(url: str) -> str:
    return "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"


class _Job:
    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[Any]) -> None:
        self.fn, self.loop, self.future = fn, loop, future


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Database:
    """The HQ database on SQLite: ``await db.write(fn)`` and ``await db.read(fn)``."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path.resolve()}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = connect(self.path)
        self._write_lock = threading.Lock()  # write_sync from a thread other than the writer's
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._readers = max(1, readers)
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="hq-db-read")
        self._thread = threading.Thread(target=self._run_writer, name="hq-db-writer", daemon=True)
        self._thread.start()

    def migrate(self) -> list[int]:
        from hq.migrations import apply_migrations
        with self._write_lock:
            return apply_migrations(self._write_conn)

    # -- writes ---------------------------------------------------------------------------
    def write_sync(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` in its own transaction on the calling thread (start-up, migrations, tools)."""
        conn = self._write_conn
        with self._write_lock:
            begin_immediate(conn)
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise DatabaseClosed("database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return await future

    def _run_writer(self) -> None:
        conn = self._write_conn
        while True:
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            with self._write_lock:
                self._run_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            begin_immediate(conn)
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as err:  # the caller gets its own error; others go on
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, err))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except Exception as err:
            logger.exception("write transaction failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, err)] * len(batch)
        for job, (ok, value) in zip(batch, outcomes):
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)
            except RuntimeError:  # the caller's loop is gone
                pass

    # -- reads ----------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._read_lock:
                self._read_conns.append(conn)
        return conn

    def read_sync(self, fn: Callable[[Any], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def read(self, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise DatabaseClosed("database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.read_sync, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)
        with self._read_lock:
            for conn in self._read_conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # created in another thread; closed with the process
            self._read_conns.clear()


SqliteDatabase = Database


def open_database(url: str, *, data_dir: str | Path = ".", readers: int = 4, pool_size: int = 4) -> Any:
    """The database of a ``database`` setting: ``sqlite:///path`` (or a bare path) or ``postgresql://...``."""
    if dialect_of(url) == "postgresql":
        from hq.db_pg import PostgresDatabase
        return PostgresDatabase(url, readers=readers, writers=pool_size)
    return Database(sqlite_path(url, data_dir), readers=readers)
