"""SQLite access for HQ: one writer thread (group commit), a few reader threads.

Writes are plain functions ``fn(conn) -> result`` queued to the writer thread. The writer
takes whatever is queued, opens one ``BEGIN IMMEDIATE`` transaction, runs each function
inside its own SAVEPOINT (a failing one rolls back alone), commits once, and only then
resolves the callers' futures. Because exactly one thread writes, a read-check-insert inside
one function (e.g. "count bookings of the slot, insert if below capacity") cannot race.
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
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 256
LOCK_WAIT_S = 30.0
LOCK_RETRY_S = 0.0005


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


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                               isolation_level=None, timeout=30)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")  # journal_mode may wait for another process
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    # Readers wait in SQLite; the writer takes its lock with begin_immediate's short retries.
    conn.execute(f"PRAGMA busy_timeout={30000 if readonly else 0}")
    return conn


class DatabaseClosed(RuntimeError):
    """The database was closed while a write was pending."""


class _Job:
    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop,
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
    """The HQ database: ``await db.write(fn)`` and ``await db.read(fn)``."""

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = connect(self.path)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._readers = max(1, readers)
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="hq-db-read")
        self._thread = threading.Thread(target=self._run_writer, name="hq-db-writer", daemon=True)
        self._thread.start()

    # -- writes ---------------------------------------------------------------------------
    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in its own transaction on the calling thread (start-up, migrations, tools)."""
        conn = self._write_conn
        begin_immediate(conn)
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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
