"""WAL checkpoints run on the checkpointer's thread, not inside a command's COMMIT; the log
stays bounded, and a kill -9 at any moment (checkpoints running) loses no acknowledged write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sync import checkpoint
from sync.db import connect
from sync.writer import Writer

PAD = "x" * 1500  # a row of this spreads each commit over a couple of pages


def make_store(path: Path) -> None:
    conn = connect(path)
    conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, pad TEXT NOT NULL)")
    conn.execute("CREATE INDEX rows_by_pad ON rows (pad, id)")
    conn.close()


def insert(n: int):
    return lambda conn: conn.execute("INSERT INTO rows (id, pad) VALUES (?, ?)", (n, f"{n:08d}{PAD}"))


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def log_frames(path: Path) -> tuple[int, int]:
    """(frames in the log, frames copied back) after a PASSIVE checkpoint from a new connection."""
    conn = connect(path)
    try:
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return frames, copied


def test_commits_never_checkpoint_the_checkpointer_copies_the_log_back(tmp_path):
    path = tmp_path / "s.db"
    make_store(path)
    # A threshold the test never reaches: the commits alone must leave every frame in the
    # log, well past the 1,000 pages at which SQLite would have checkpointed inside a COMMIT
    # (and so restarted the log).
    writer = Writer(path, checkpoint_rows=100_000)
    writer.start()
    try:
        for n in range(1600):
            writer.call(insert(n))
        assert writer.checkpointer is not None and writer.checkpointer.checkpoints == 0
        frames, _ = log_frames(path)
        assert frames > 1000
    finally:
        writer.stop()

    path2 = tmp_path / "t.db"
    make_store(path2)
    writer = Writer(path2, checkpoint_rows=20)
    writer.start()
    try:
        for n in range(2000):
            writer.call(insert(n))
        assert wait_until(lambda: writer.checkpointer is not None and writer.checkpointer.checkpoints >= 50)
        # The log restarted from its beginning again and again: even under commits without a
        # pause it never held much more than the backstop's frames of the ~4,000 written.
        assert os.path.getsize(f"{path2}-wal") < (checkpoint.BACKSTOP_PAGES + 100) * 4120
        assert log_frames(path2)[0] < checkpoint.BACKSTOP_PAGES + 100
        reader = connect(path2, readonly=True)
        assert reader.execute("SELECT count(*) FROM rows").fetchone()[0] == 2000
        reader.close()
    finally:
        writer.stop()


def test_another_process_opening_the_store_while_checkpoints_run_is_harmless(tmp_path):
    # A node's store is opened by other processes (smartq verify, backups, tests): the
    # checkpointer must not disturb SQLite's locks on the wal-index (an earlier cut read the
    # -shm file itself, and closing it dropped them: the node died of SIGBUS).
    path = tmp_path / "s.db"
    make_store(path)
    writer = Writer(path, checkpoint_rows=5)
    writer.start()
    root = Path(__file__).resolve().parents[2]
    try:
        for n in range(600):
            writer.call(insert(n))
            if n % 100 == 0:
                out = subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                                      " print(c.execute('SELECT count(*) FROM rows').fetchone()[0])", str(path)],
                                     cwd=root, capture_output=True, text=True, timeout=60, check=True)
                assert int(out.stdout) == n + 1
        assert writer.checkpointer is not None and writer.checkpointer.checkpoints > 0
    finally:
        writer.stop()
    conn = connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM rows").fetchone()[0] == 600
    conn.close()


CHILD = textwrap.dedent("""
    import sys
    from sync.writer import Writer
    path = sys.argv[1]
    writer = Writer(path, checkpoint_rows=6)  # a checkpoint every other commit
    writer.start()
    n = writer.call(lambda conn: conn.execute("SELECT coalesce(max(id), -1) + 1 FROM rows").fetchone()[0])
    while True:
        futures = [writer.submit(lambda conn, n=n + k: conn.execute(
            "INSERT INTO rows (id, pad) VALUES (?, ?)", (n, f"{n:08d}" + "x" * 1500))) for k in range(3)]
        for f in futures:
            f.result()  # acknowledged only after the durable commit
        for k in range(3):
            print(n + k, flush=True)
        n += 3
""")


@pytest.mark.slow
def test_kill_9_while_checkpoints_run_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "s.db"
    make_store(path)
    rnd = random.Random(20261130)
    acked: list[int] = []
    root = Path(__file__).resolve().parents[2]
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=root,
                                stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # it is writing (and checkpointing) now
            assert first, f"round {round_}: the writer process did not start"
            acked.append(int(first))
            time.sleep(rnd.uniform(0.05, 0.6))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        acked += [int(line) for line in out.split()]
        conn = connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT id FROM rows")}
        finally:
            conn.close()
        missing = set(acked) - stored
        assert not missing, f"round {round_}: {len(missing)} acknowledged writes lost"
    assert len(acked) > 12 * 10  # the kills came while it was writing
