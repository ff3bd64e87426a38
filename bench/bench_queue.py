"""Call-next, position and estimate, and issue, at queue lengths 100 to 20,000 (DESIGN §9:
flat, p99 <= 3 ms at every length).

    .venv/bin/python -m bench.bench_queue [--sizes 100,1000,5000,20000] [--calls 300]
        [--checkpoint thread|inline|both]

One node in this process (a real SQLite file, its writer thread, a durable commit per
command). For each size: a branch with that many tickets waiting over three services, 10%
of them of a priority class and some old enough to be promoted; then, timed one by one:
- call_next: a counter's call-next through the writer (the command, its events, the fold
  and the durable commit), a fresh ticket issued after each call so the length holds;
- call_next_command: the same calls without the commit (choosing, appending, folding);
- position: GET /tickets/{id}'s read (position and estimate) of the last ticket in line;
- issue: a walk-in ticket through the writer (numbering, position, estimate, commit);
- commit_floor: a one-row durable commit to a scratch SQLite file beside the store, at the
  same moments: what the disk alone costs then (on a shared machine it moves with the load).
`--checkpoint`: `thread` (the node's way: the log is copied back by the checkpointer thread,
sync.checkpoint), `inline` (SQLite's automatic checkpoint inside the COMMIT that crosses
1,000 pages, as before), `both` (each size measured both ways, one after the other).
Writes bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from appliance.config import load_config
from sync.checkpoint import ROWS
from sync.db import connect
from appliance.node import Node
from appliance.sample import write_sample
from bench.common import latency_summary, write

START_MS = 1_795_000_000_000 + 8 * 3600 * 1000  # a morning in Kigali
SERVICES = ["general", "payments", "documents"]


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        return self.ms


def fill(node: Node, clock: Clock, waiting: int, rnd: random.Random) -> None:
    """`waiting` tickets issued over the last hour or so (a few older than promote_after_s)."""
    branch = node.branch
    step = max(1, 3_600_000 // waiting)
    clock.ms -= 3_600_000 + 10 * step  # the oldest ones are promoted by the time we call

    def batch(conn, n: int) -> None:
        for _ in range(n):
            clock.ms += step
            branch.issue(conn, {"service": rnd.choice(SERVICES), "priority": int(rnd.random() < 0.1)})

    done = 0
    while done < waiting:
        n = min(2000, waiting - done)
        node.writer.call(lambda conn, n=n: batch(conn, n))
        done += n
    clock.ms = START_MS


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(base: Path, waiting: int, calls: int, checkpoint: str) -> dict:
    folder = base.parent / f"q{waiting}-{checkpoint}"
    shutil.copytree(base, folder)
    clock = Clock()
    node = Node(load_config(folder / "kiosk.toml"), clock=clock,
                checkpoint_rows=ROWS if checkpoint == "thread" else None)
    node.open()
    rnd = random.Random(waiting)
    scratch = connect(folder / "floor.db")
    scratch.execute("CREATE TABLE t (x INTEGER)")
    try:
        fill(node, clock, waiting, rnd)
        for c in ("c1", "c2", "c3"):
            node.writer.call(lambda conn, c=c: node.branch.set_counter(conn, c, "open", None))
        settle = connect(node.db_path)  # both ways start from an empty log, not the fill's
        settle.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        settle.close()
        call, command, position, issue, floor = [], [], [], [], []
        reader = connect(node.db_path, readonly=True)  # as a reader thread of the node has
        for i in range(calls):
            clock.ms += 1000
            counter = ("c1", "c2", "c3")[i % 3]
            t0 = time.perf_counter()
            inner = node.writer.call(lambda conn: _timed(node.branch.call_next, conn, counter))
            call.append(time.perf_counter() - t0)
            command.append(inner)
            t0 = time.perf_counter()
            ticket = node.writer.call(lambda conn: node.branch.issue(conn, {"service": rnd.choice(SERVICES)}))
            issue.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            view = node.branch.ticket(reader, ticket["id"])
            position.append(time.perf_counter() - t0)
            assert view["position"] is not None
            t0 = time.perf_counter()
            scratch.execute("BEGIN IMMEDIATE")
            scratch.execute("INSERT INTO t VALUES (?)", (i,))
            scratch.execute("COMMIT")
            floor.append(time.perf_counter() - t0)
        reader.close()
        left = node.writer.call(lambda conn: conn.execute(
            "SELECT count(*) FROM tickets WHERE status = 'waiting'").fetchone()[0])
        checkpoints = node.writer.checkpointer.checkpoints if node.writer.checkpointer else None
    finally:
        scratch.close()
        node.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"waiting": waiting, "checkpoint": checkpoint, "waiting_at_end": left,
            "call_next": latency_summary(call), "call_next_command": latency_summary(command),
            "position_estimate": latency_summary(position), "issue": latency_summary(issue),
            "commit_floor": latency_summary(floor), "thread_checkpoints": checkpoints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,5000,20000")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--checkpoint", choices=("thread", "inline", "both"), default="thread")
    args = parser.parse_args()
    ways = ("thread", "inline") if args.checkpoint == "both" else (args.checkpoint,)
    tmp = Path(tempfile.mkdtemp(prefix="smartq-bench-queue-"))
    try:
        base = tmp / "branch"
        write_sample(base)
        sizes = [int(s) for s in args.sizes.split(",")]
        results = [measure(base, n, args.calls, way) for n in sizes for way in ways]
        write("queue", {"calls_per_size": args.calls, "sizes": results})
        for r in results:
            print(f"{r['waiting']:>6} waiting, checkpoint {r['checkpoint']:<6}: "
                  + "; ".join(f"{k} p50 {r[k]['p50_ms']:.2f} p99 {r[k]['p99_ms']:.2f} ms"
                              for k in ("call_next", "call_next_command", "issue", "position_estimate", "commit_floor")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
