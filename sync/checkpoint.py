"""WAL checkpoints off the command path: a thread of their own, with a connection of its own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the log past its threshold
(1,000 pages): that one command then also copies the log's pages into the database file and
syncs it. With a long queue those pages are scattered over a large file, so the command that
drew the checkpoint took several times a plain commit (bench/bench_queue.py: call-next p99
grew with the queue). Here a thread copies the log back concurrently (a PASSIVE checkpoint
never blocks the writer or a reader) whenever the log holds `pages` frames not yet copied.

The log restarts from its beginning only when a write transaction begins with every frame
copied. Between bursts of commands that happens after this thread's checkpoint; under
commands without a pause, each checkpoint ends with a few frames committed meanwhile, so the
writer's connection keeps SQLite's automatic checkpoint as a backstop at BACKSTOP_FACTOR x
`pages` frames in the log: the commit that reaches it copies only that remainder (the rest is
copied already), and the log restarts. That bounds the log's file under any load.

Durability is unchanged: a commit is acknowledged after the log is synced
(`synchronous=FULL`), and a checkpoint syncs the log before it copies and the database after
(the same connection settings); a crash mid-checkpoint leaves the log to be replayed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from pathlib import Path

from sync.db import connect

logger = logging.getLogger(__name__)

PAGES = 1000  # SQLite's own default threshold: the log is copied back about every 4 MB
BACKSTOP_FACTOR = 4  # frames in the log (copied or not) at which a commit checkpoints the remainder
ROUNDS = 3  # follow-up checkpoints of what was committed during one, so the log can restart

# The wal-index (the "-shm" file, https://sqlite.org/walformat.html) starts with two copies of
# a 48-byte header whose mxFrame (frames in the log) is at byte 16, then the checkpoint info,
# whose nBackfill (frames already copied back) is at byte 96. Native byte order.
_SHM_MX_FRAME = 16
_SHM_BACKFILL = 96


def wal_frames(db_path: Path | str) -> tuple[int, int] | None:
    """(frames in the log, frames of them copied into the database file), from the wal-index;
    None when it cannot be read (no log open)."""
    try:
        fd = os.open(f"{db_path}-shm", os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if len(head) < 100:
        return None
    (mx_frame,) = struct.unpack_from("=I", head, _SHM_MX_FRAME)
    (backfill,) = struct.unpack_from("=I", head, _SHM_BACKFILL)
    return mx_frame, backfill


def wal_backlog(db_path: Path | str) -> int | None:
    """Frames in the log not yet copied into the database file; None when it cannot be read."""
    frames = wal_frames(db_path)
    return None if frames is None else max(0, frames[0] - frames[1])


class Checkpointer:
    """Wakes after commits; checkpoints when `pages` frames wait. Start, notify, stop."""

    def __init__(self, path: Path | str, *, pages: int = PAGES, name: str = "sqlite-checkpoint") -> None:
        self._path = path
        self.pages = pages
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.checkpoints = 0  # PASSIVE checkpoints run (each a sync of the database file)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Called by the writer after each commit (cheap: sets an event)."""
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
                backlog = wal_backlog(self._path)
                if backlog is not None and backlog < self.pages:
                    continue
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
