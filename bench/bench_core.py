"""Core budgets of DESIGN §9: fold and re-fold rates, POST /tickets latency, node memory.

    .venv/bin/python -m bench.bench_core [--events 100000] [--requests 2000] [--day-events 50000] [--day-only]

Writes bench/results/core.json with:
- fold: whole re-fold of a 100,000-event log (events/s; target >= 100,000/s);
- refold_day: whole re-fold of one 50,000-event day (--day-events) into its consistent
  projection (every ticket re-folded and compared; only differing rows written), median of
  3 by wall time (events_per_s: wall, SQLite I/O and the durable commit included), with the
  wall time before the COMMIT, the COMMIT's own (with any checkpoint it draws) and the writer
  thread's CPU time;
- refold_day_empty: the same day re-folded into an emptied tickets table (every row written,
  indexes built once after the bulk load);
- fold_in_memory: the fold alone over those events, already in memory (no SQLite I/O);
- ingest: a second device ingesting those signed events (events/s, chains and signatures checked);
- post_tickets_sequential: p50/p99 over 2,000 sequential requests to a real node (target p99 <= 15 ms);
- post_tickets_concurrent: 8 clients, tickets/s and p99 (target >= 1,000/s, p99 <= 20 ms);
- rss_after_day_mb: node resident memory after serving that day (target <= 80 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from appliance import fold
from appliance.config import load_config
from appliance.errors import DomainError
from appliance.node import Node
from appliance.sample import write_sample
from bench.common import drop_tables, latency_summary, rss_mb, write
from sync.log import all_events

DAY_MS = 24 * 3600 * 1000
START_MS = 1_795_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        return self.ms


def simulate(node: Node, clock: Clock, events: int, rnd: random.Random, per_day: int = 20_000) -> None:
    """A realistic mix (issue, call, start, complete, some no-shows and transfers) until `events`."""
    branch = node.branch
    services = ["general", "payments", "documents"]
    counters = ["c1", "c2", "c3"]

    def batch(conn) -> int:
        made = 0
        for c in counters:
            branch.set_counter(conn, c, "open", None)
        while made < 2000:
            clock.ms += rnd.randint(500, 4000)
            try:
                branch.issue(conn, {"service": rnd.choice(services), "priority": int(rnd.random() < 0.1)})
                c = rnd.choice(counters)
                t = branch.call_next(conn, c)
                if t is not None:
                    if rnd.random() < 0.05:
                        branch.act(conn, c, t["id"], "no-show", {})
                    else:
                        branch.act(conn, c, t["id"], "start", {})
                        if rnd.random() < 0.03:
                            branch.act(conn, c, t["id"], "transfer", {"to_service": rnd.choice(services)})
                        else:
                            branch.act(conn, c, t["id"], "complete", {})
            except DomainError:
                pass
            made = conn.execute("SELECT count(*) FROM events").fetchone()[0] - start
        return made

    total = 0
    day_events = 0
    while total < events:
        start = node.writer.call(lambda conn: conn.execute("SELECT count(*) FROM events").fetchone()[0])
        total += node.writer.call(batch)
        day_events += 2000
        if day_events >= per_day:
            clock.ms += DAY_MS - (clock.ms - START_MS) % DAY_MS + 6 * 3600 * 1000
            day_events = 0


def io_bytes() -> tuple[int, int]:
    """(bytes this process made the disk read, bytes it sent to be written): /proc/self/io."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"]), int(fields["write_bytes"])


def timed_refold(node: Node, *, empty: bool) -> tuple[float, float, float, int, int]:
    """(wall s, writer-thread CPU s, wall s of the re-fold before its COMMIT, disk bytes read,
    disk bytes written) of one whole re-fold; wall includes the durable commit (and any
    checkpoint it draws)."""
    if empty:  # emptying the tickets table is not part of the timing
        node.writer.call(lambda conn: conn.execute("DELETE FROM tickets"))

    def run(conn) -> tuple[float, float]:
        c0, w0 = time.thread_time(), time.perf_counter()
        node.projection.rebuild(conn)
        return time.thread_time() - c0, time.perf_counter() - w0

    io0 = io_bytes()
    t0 = time.perf_counter()
    cpu, job = node.writer.call(run)
    wall = time.perf_counter() - t0
    io1 = io_bytes()
    return wall, cpu, job, io1[0] - io0[0], io1[1] - io0[1]


def refold_summary(events: int, runs: list[tuple[float, float, float, int, int]]) -> dict:
    """The median run by wall time. Wall far above CPU with next to no disk reads means the
    thread waited for a core (a loaded machine), not for the disk."""
    wall, cpu, job, read, written = sorted(runs)[len(runs) // 2]
    return {"events": events, "ms": round(wall * 1000, 1), "events_per_s": round(events / wall),
            "before_commit_ms": round(job * 1000, 1), "commit_ms": round((wall - job) * 1000, 1),
            "cpu_ms": round(cpu * 1000, 1), "events_per_cpu_s": round(events / cpu),
            "disk_read_mb": round(read / 1e6, 2), "disk_written_mb": round(written / 1e6, 2),
            "all_runs_ms": [round(r[0] * 1000, 1) for r in runs]}


def fold_figures(base: Path, n_events: int) -> dict:
    """The whole re-fold of `n_events` over several days, and the fold alone in memory."""
    paths = {p.stem: p for p in base.glob("*.toml")}
    clock = Clock()
    node = Node(load_config(paths["kiosk"]), clock=clock)
    node.open()
    simulate(node, clock, n_events, random.Random(1))
    count = node.writer.call(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
    t0 = time.perf_counter()
    node.writer.call(node.projection.rebuild)
    fold_s = time.perf_counter() - t0
    # The fold alone, events already in memory: what the rules cost without SQLite I/O.
    by_ticket: dict[str, list] = defaultdict(list)
    for e in node.writer.call(all_events):
        if e.type.startswith("ticket."):
            by_ticket[e.payload["ticket"]].append(e)
    ticket_events = sum(len(v) for v in by_ticket.values())
    t0 = time.perf_counter()
    for events in by_ticket.values():
        fold.refold(events, presorted=True)
    memory_s = time.perf_counter() - t0
    node.close()
    return {
        "fold": {"events": count, "seconds": round(fold_s, 3), "events_per_s": round(count / fold_s),
                 "note": "whole re-fold: read every event from SQLite, fold, write every projected row"},
        "fold_in_memory": {"events": ticket_events, "seconds": round(memory_s, 3),
                           "events_per_s": round(ticket_events / memory_s)},
    }


def day_figures(base: Path, day_events: int) -> dict:
    """One day of `day_events` on a fresh device, then its re-fold and a peer's ingest."""
    day_base = base.parent / "day"
    shutil.copytree(base, day_base)
    shutil.rmtree(day_base / "data" / "kiosk" / "smartq.db", ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        (day_base / "data" / "kiosk" / f"smartq.db{suffix}").unlink(missing_ok=True)
    day_paths = {p.stem: p for p in day_base.glob("*.toml")}
    clock = Clock()
    day = Node(load_config(day_paths["kiosk"]), clock=clock)
    day.open()
    simulate(day, clock, day_events, random.Random(2), per_day=10**9)
    day_count = day.writer.call(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
    refold_day = refold_summary(day_count, [timed_refold(day, empty=False) for _ in range(3)])
    refold_day_empty = refold_summary(day_count, [timed_refold(day, empty=True) for _ in range(3)])
    events = day.writer.call(all_events)
    day.close()

    peer = Node(load_config(day_paths["display"]), clock=clock)
    peer.open()
    dicts = [e.to_dict() for e in events]
    t0 = time.perf_counter()
    for i in range(0, len(dicts), 1000):
        peer.writer.call(lambda c, chunk=dicts[i:i + 1000]: peer.log.ingest(c, chunk))
    ingest_s = time.perf_counter() - t0
    peer.close()
    return {
        "refold_day": refold_day,
        "refold_day_empty": refold_day_empty,
        "ingest": {"events": len(dicts), "seconds": round(ingest_s, 3), "events_per_s": round(len(dicts) / ingest_s),
                   "note": "1,000-event batches from a peer: chain checked per event, one Ed25519 signature "
                           "per contiguous run, fold included"},
        "day_db": str(day_base),
    }


async def post_latency(url: str, n: int, clients: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    services = ["general", "payments", "documents"]
    async with aiohttp.ClientSession() as session:
        async def worker(k: int) -> None:
            for i in range(k, n, clients):
                t0 = time.perf_counter()
                async with session.post(f"{url}/api/v1/tickets", json={"service": services[i % 3]}) as r:
                    await r.read()
                    if r.status != 201:
                        raise RuntimeError(f"POST /tickets -> {r.status}")
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        return latencies, time.perf_counter() - t0


def start_node(config: Path) -> tuple[object, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.appliance.procs import NodeProcess

    proc = NodeProcess(config, log_path=config.parent / "node.log")
    return proc, proc.url


def api_figures(base: Path, requests: int) -> dict:
    fresh = base.parent / "api"
    shutil.copytree(base, fresh, ignore=shutil.ignore_patterns("smartq.db*"))
    # The API alone: printing has its own bench (bench_print_path), and rendering a ticket
    # for the sample's dummy printer would compete for the same two cores.
    drop_tables(fresh / "kiosk.toml", "[hardware")
    proc, url = start_node(fresh / "kiosk.toml")
    try:
        seq, _ = asyncio.run(post_latency(url, requests, 1))
        conc, elapsed = asyncio.run(post_latency(url, requests, 8))
    finally:
        proc.stop()
    return {
        "post_tickets_sequential": latency_summary(seq),
        "post_tickets_concurrent": {**latency_summary(conc), "clients": 8,
                                    "tickets_per_s": round(len(conc) / elapsed)},
    }


def rss_figure(day_base: Path) -> dict:
    proc, url = start_node(day_base / "kiosk.toml")
    try:
        async def touch() -> None:
            async with aiohttp.ClientSession() as s:
                for _ in range(20):
                    async with s.get(f"{url}/api/v1/state") as r:
                        await r.read()
                    async with s.post(f"{url}/api/v1/tickets", json={"service": "general"}) as r:
                        await r.read()
        asyncio.run(touch())
        return {"rss_after_day_mb": rss_mb(proc.proc.pid)}
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--day-events", type=int, default=50_000)
    parser.add_argument("--day-only", action="store_true",
                        help="only the day: its re-fold, a peer's ingest and the node's RSS after it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smartq-bench-"))
    try:
        base = tmp / "branch"
        write_sample(base)
        figures = {} if args.day_only else fold_figures(base, args.events)
        figures.update(day_figures(base, args.day_events))
        day_base = Path(figures.pop("day_db"))
        if not args.day_only:
            figures.update(api_figures(base, args.requests))
        figures.update(rss_figure(day_base))
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write("core", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
