"""WAL checkpoints off the command path: a thread of their own, with a connection of its own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the log past its threshold
(1,000 pages): that one command then also copies the log's pages into the database file and
syncs it. With a long queue those pages are scattered over a large file, so the command that
drew the checkpoint took several times a plain commit (bench/bench_queue.py: call-next p99
grew with the queue). Here a thread copies the log back concurrently (a PASSIVE checkpoint
never blocks the writer or a reader) once the commits since its last checkpoint changed
`rows` rows (about 4 pages a row with our indexes, so the default is about SQLite's 1,000
pages). It counts rows, not frames: the frame count lives in the wal-index ("-shm"), and
opening that file beside SQLite would drop this process's POSIX locks on it when closed,
letting another process re-initialise it under our mapping (SIGBUS, or worse).

The log restarts from its beginning only when a write transaction begins with every frame
copied. Between bursts of commands that happens after this thread's checkpoint; under
commands without a pause, each checkpoint ends with a few frames committed meanwhile, so the
writer's connection keeps SQLite's automatic checkpoint as a backstop at BACKSTOP_PAGES
frames in the log: the commit that reaches it copies only that remainder (the rest is
copied already), and the log restarts. That bounds the log's file under any load.

Durability is unchanged: a commit is acknowledged after the log is synced
(`synchronous=FULL`), and a checkpoint syncs the log before it copies and the database after
(the same connection settings); a crash mid-checkpoint leaves the log to be replayed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from sync.db import connect

logger = logging.getLogger(__name__)

ROWS = 250  # rows changed between checkpoints: about 1,000 pages, SQLite's own threshold
BACKSTOP_PAGES = 4000  # frames in the log (copied or not) at which a commit checkpoints the remainder
ROUNDS = 3  # follow-up checkpoints of what was committed during one, so the log can restart


class Checkpointer:
    """Wakes after commits; checkpoints once they changed `rows` rows. Start, notify, stop."""

    def __init__(self, path: Path | str, *, rows: int = ROWS, name: str = "sqlite-checkpoint") -> None:
        self._path = path
        self.rows = rows
        self._changes = 0  # the writer connection's total_changes at its last commit
        self._checkpointed_at = 0  # ... when the last checkpoint started
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.checkpoints = 0  # PASSIVE checkpoints run (each a sync of the database file)

    def start(self) -> None:
        self._thread.start()

    def notify(self, total_changes: int) -> None:
        """Called by the writer after each commit with its connection's total_changes."""
        self._changes = total_changes
        if total_changes - self._checkpointed_at >= self.rows:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = connect(self._path)
        except sqlite3.Error:
            logger.exception("checkpointer could not open the store; the writer's backstop checkpoints")
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                self._checkpointed_at = self._changes
                try:
                    self._catch_up(conn)
                except sqlite3.Error:
                    logger.exception("checkpoint failed; the next commit retries it")
        finally:
            conn.close()

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        # The log restarts from its beginning (no growing file) only once every frame is
        # copied; commits landing during a checkpoint leave a few, so copy those too.
        for _ in range(ROUNDS):
            _, log_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if self._stopping or log_frames <= 0 or copied >= log_frames:
                return
