"""One thread owns the single write connection; writes are queued to it (datasette style).

Jobs queued while a transaction runs are committed together (group commit): one
`BEGIN IMMEDIATE ... COMMIT` and so one fsync for many commands, each job inside its own
SAVEPOINT so a failing job rolls back alone. A job's future resolves only after COMMIT.
The log is copied back into the database file by a checkpointer thread (sync.checkpoint),
not inside a command's COMMIT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sync import checkpoint
from sync.db import connect

logger = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


class TransactionListener(Protocol):
    """Keeps per-transaction state (e.g. events to announce) in step with commits."""

    def job_started(self) -> None: ...
    def job_failed(self) -> None: ...
    def committed(self) -> None: ...
    def rolled_back(self) -> None: ...


class WriterClosed(RuntimeError):
    pass


class Writer:
    def __init__(self, path: Path | str, *, max_batch: int = 128, name: str = "sqlite-writer",
                 checkpoint_rows: int | None = checkpoint.ROWS) -> None:
        """`checkpoint_rows`: rows changed by commits before the checkpointer copies the log
        back; None leaves it to SQLite's automatic checkpoint inside the COMMIT (the old way)."""
        self._path = path
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Job, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        self._listeners: list[TransactionListener] = []
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.checkpointer = checkpoint.Checkpointer(path, rows=checkpoint_rows) if checkpoint_rows else None
        self.transactions = 0
        self.jobs = 0

    def add_listener(self, listener: TransactionListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        if self.checkpointer is not None:
            self.checkpointer.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise WriterClosed("the writer is stopped")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for start-up code and tools (not for the event loop)."""
        return self.submit(fn).result()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():  # else never started (a tool that only read the store), or gone
            self._queue.put(None)
            self._thread.join()
        if self.checkpointer is not None:
            self.checkpointer.stop()  # after the writer: its connection, closing last, checkpoints the rest

    def _run(self) -> None:
        try:
            conn = connect(self._path)
        except BaseException as err:  # surfaced to start()
            self._startup_error = err
            self._ready.set()
            return
        if self.checkpointer is not None:  # a backstop that restarts the log (see sync.checkpoint)
            conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint.BACKSTOP_PAGES}")
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                batch = [item]
                stop_after = False
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop_after = True
                        break
                    batch.append(nxt)
                self._run_batch(conn, batch)
                if stop_after:
                    break
        finally:
            conn.close()
            # Anything still queued after stop() is refused, never silently dropped.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[1].set_exception(WriterClosed("the writer stopped before this write ran"))

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Job, concurrent.futures.Future[Any]]]) -> None:
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            for _, future in batch:
                future.set_exception(err)
            return
        for fn, future in batch:
            if not future.set_running_or_notify_cancel():
                continue
            conn.execute("SAVEPOINT job")
            for listener in self._listeners:
                listener.job_started()
            try:
                result = fn(conn)
            except BaseException as err:  # the job's own failure; others in the batch go on
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                for listener in self._listeners:
                    listener.job_failed()
                outcomes.append((future, None, err))
            else:
                conn.execute("RELEASE job")
                outcomes.append((future, result, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            logger.exception("commit failed; %d writes rolled back", len(outcomes))
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for listener in self._listeners:
                listener.rolled_back()
            for future, _, _ in outcomes:
                future.set_exception(err)
            return
        self.transactions += 1
        self.jobs += len(outcomes)
        if self.checkpointer is not None:
            self.checkpointer.notify(conn.total_changes)
        for listener in self._listeners:
            try:
                listener.committed()
            except Exception:
                logger.exception("commit listener failed")
        for future, result, err in outcomes:
            if err is None:
                future.set_result(result)
            else:
                future.set_exception(err)
