"""Call-next, position and estimate, and issue, at queue lengths 100 to 20,000 (DESIGN §9:
flat, p99 <= 3 ms at every length).

    .venv/bin/python -m bench.bench_queue [--sizes 100,1000,5000,20000] [--calls 300]

One node in this process (a real SQLite file, its writer thread, a durable commit per
command). For each size: a branch with that many tickets waiting over three services, 10%
of them of a priority class and some old enough to be promoted; then, timed one by one:
- call_next: a counter's call-next through the writer (the command, its events, the fold
  and the durable commit), a fresh ticket issued after each call so the length holds;
- call_next_command: the same calls without the commit (choosing, appending, folding);
- position: GET /tickets/{id}'s read (position and estimate) of the last ticket in line;
- issue: a walk-in ticket through the writer (numbering, position, estimate, commit).
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


def measure(base: Path, waiting: int, calls: int) -> dict:
    folder = base.parent / f"q{waiting}"
    shutil.copytree(base, folder)
    clock = Clock()
    node = Node(load_config(folder / "kiosk.toml"), clock=clock)
    node.open()
    rnd = random.Random(waiting)
    try:
        fill(node, clock, waiting, rnd)
        for c in ("c1", "c2", "c3"):
            node.writer.call(lambda conn, c=c: node.branch.set_counter(conn, c, "open", None))
        call, command, position, issue = [], [], [], []
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
        reader.close()
        left = node.writer.call(lambda conn: conn.execute(
            "SELECT count(*) FROM tickets WHERE status = 'waiting'").fetchone()[0])
    finally:
        node.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"waiting": waiting, "waiting_at_end": left, "call_next": latency_summary(call),
            "call_next_command": latency_summary(command),
            "position_estimate": latency_summary(position), "issue": latency_summary(issue)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,5000,20000")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smartq-bench-queue-"))
    try:
        base = tmp / "branch"
        write_sample(base)
        sizes = [int(s) for s in args.sizes.split(",")]
        write("queue", {"calls_per_size": args.calls, "sizes": [measure(base, n, args.calls) for n in sizes]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
