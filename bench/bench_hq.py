"""HQ booking benchmark: 1,000 concurrent clients on 127.0.0.1 against a real HQ process.

Phases (server = `python -m hq` in its own process, client = this process):
1. paced: 1,000 client coroutines, each booking once every ~0.5 s (offered 2,000 bookings/s),
   for --seconds; throughput and latency percentiles (the DESIGN §9 budget). Each phase opens
   its 1,000 connections first, all at once, and reports how long that took (`connect_s`); its
   clock starts when they are open.
2. saturation: the same 1,000 clients with no pause (closed loop): the server's ceiling.
3. hot slot: --hot concurrent attempts on one slot of capacity 3.
Then the database is checked: no slot holds more bookings than its capacity.

`--database pg` runs HQ on a real PostgreSQL 15 server the bench starts itself (durable:
fsync and synchronous_commit on, as in production; tests/hq/pgserver.py), with `--processes`
independent HQ processes (one per "host", each on its own port, clients spread over them as
a load balancer would). The PostgreSQL server's CPU is reported beside HQ's.

    .venv/bin/python bench/bench_hq.py [--database sqlite|pg] [--processes 1] [--clients 1000]
                                       [--seconds 10] [--out bench/results/hq.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
TZ = "Europe/Zurich"
CAPACITY = 50
SLOT_MIN = 5
START_DELAY_S = 0.5  # clients are set up this long before the phase's clock starts
WARM_S = 1.0  # the phase's first second (HQ's first bookings of the run): also reported without it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of process ``pid`` and its direct children (HQ workers) from /proc:
    the server's cost, which stays comparable when other work on the machine steals cores."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


async def setup(url: str, s: aiohttp.ClientSession) -> str:
    async with s.post(f"{url}/api/v1/auth/tokens", json={"email": "bench@hq.test", "password": "bench-password-1"}) as r:
        token = (await r.json())["token"]
    h = {"Authorization": f"Bearer {token}"}
    calls = [
        ("POST", "/api/v1/orgs", {"id": "bench", "name": "Bench"}),
        ("POST", "/api/v1/orgs/bench/branches", {"id": "b1", "name": "Bench 1", "timezone": TZ}),
        ("PUT", "/api/v1/branches/b1/services/general", {"letter": "A", "names": {"en": "General"},
                                                          "slot_minutes": SLOT_MIN, "capacity": CAPACITY}),
        ("PUT", "/api/v1/branches/b1/services/hot", {"letter": "H", "names": {"en": "Hot"}, "slot_minutes": 60, "capacity": 3}),
        ("PUT", "/api/v1/branches/b1/hours", {"weekdays": {str(d): {"opens": "00:00", "closes": "23:55"} for d in range(7)}}),
    ]
    for method, path, body in calls:
        async with s.request(method, f"{url}{path}", json=body, headers=h) as r:
            assert r.status in (200, 201), (path, r.status, await r.text())
    return token


def slot_starts(days: int) -> list[str]:
    tz = ZoneInfo(TZ)
    today = datetime.now(tz).date()
    out = []
    for d in range(1, days + 1):
        day = today + timedelta(days=d)
        t = datetime.combine(day, datetime.min.time(), tzinfo=tz)
        end = datetime.combine(day, datetime.strptime("23:55", "%H:%M").time(), tzinfo=tz)
        while t + timedelta(minutes=SLOT_MIN) <= end:
            out.append(t.isoformat())
            t += timedelta(minutes=SLOT_MIN)
    return out


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection that only knows what this bench needs (a POST
    with a JSON body, the status and Content-Length of the answer): a fraction of aiohttp's
    client CPU per request, which matters when the 1,000 clients share two cores with HQ."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at, length = head.find(b"content-length:"), 0
        if at >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[:end + 4 + length]
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError("connection lost"))

    async def post(self, head: bytes, body: bytes) -> int:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await self.waiting


async def load(urls: list[str], clients: int, seconds: float, interval: float | None, slots: list[str],
               rng: random.Random, server_pids: list[int], db_pid: int | None = None) -> dict[str, object]:
    """``clients`` concurrent clients, each with its own keep-alive connection to one HQ process
    (spread over them as a load balancer would), each booking in a loop (paced: once every
    ``interval`` s; else closed loop). The connections are opened first, all at once (timed on
    their own: ``connect_s``), and the phase's clock, CPU and latencies start when all are open,
    as a proxy's pool to HQ is open before it carries the citizens' bookings."""
    latencies: list[float] = []
    steady: list[float] = []  # requests started after the phase's first WARM_S seconds
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()

    def address(i: int) -> tuple[str, str]:
        url = urls[i % len(urls)]
        host, port = url.split("//")[1].split(":")
        return host, port

    async def connect(i: int) -> HttpConnection | None:
        host, port = address(i)
        try:
            return (await loop.create_connection(HttpConnection, host, int(port)))[1]
        except OSError:
            return None  # the client connects again at its first booking
    t_connect = time.perf_counter()
    opened = await asyncio.gather(*(connect(i) for i in range(clients)))
    connect_s = time.perf_counter() - t_connect
    # The clock starts a moment after every client is set up: setting up 1,000 of them takes the
    # load generator's loop about a tenth of a second, during which the first answers would wait
    # in their sockets and count as HQ's latency. Each client sleeps straight to its first turn.
    t_start = time.perf_counter() + START_DELAY_S
    stop_at = t_start + seconds

    def server_cpu_now() -> float:
        return sum(cpu_seconds(pid) for pid in server_pids)

    async def client(i: int) -> None:
        r = random.Random(rng.random())
        host, port = address(i)
        head = (f"POST /api/v1/public/bookings HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: ").encode()
        conn = opened[i]
        next_at = t_start + (r.random() * interval if interval else 0.0)
        try:
            while True:
                if interval:
                    if next_at >= stop_at:  # no sleeping past the end: the phase's seconds are its rate's
                        return
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                if time.perf_counter() >= stop_at:
                    return
                body = json.dumps({"branch": "b1", "service": "general", "start": r.choice(slots),
                                   "email": f"c{i}@bench.test"}).encode()
                t0 = time.perf_counter()
                try:
                    if conn is None or conn.transport is None:
                        _, conn = await loop.create_connection(HttpConnection, host, int(port))
                    status = await asyncio.wait_for(conn.post(head, body), 60)
                except (OSError, ConnectionError, asyncio.TimeoutError):
                    status, conn = -1, None
                latencies.append(time.perf_counter() - t0)
                if t0 - t_start >= WARM_S:
                    steady.append(latencies[-1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            if conn is not None and conn.transport is not None:
                conn.transport.close()

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
    server_cpu0, client_cpu0 = server_cpu_now(), time.process_time()
    db_cpu0 = cpu_seconds(db_pid) if db_pid else 0.0
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    server_cpu, client_cpu = server_cpu_now() - server_cpu0, time.process_time() - client_cpu0
    db_cpu = cpu_seconds(db_pid) - db_cpu0 if db_pid else None
    ok = statuses.get(201, 0)
    n = max(1, len(latencies))
    return {"clients": clients, "connect_s": round(connect_s, 3), "connections_open": sum(c is not None for c in opened),
            "seconds": round(elapsed, 2), "requests": len(latencies), "bookings": ok,
            "bookings_per_s": round(ok / elapsed, 1), "requests_per_s": round(len(latencies) / elapsed, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_cpu_s": round(server_cpu, 2), "client_cpu_s": round(client_cpu, 2),
            "server_cpu_ms_per_request": round(server_cpu * 1000 / n, 3),
            "client_cpu_ms_per_request": round(client_cpu * 1000 / n, 3),
            "postgresql_cpu_s": round(db_cpu, 2) if db_cpu is not None else None,
            "postgresql_cpu_ms_per_request": round(db_cpu * 1000 / n, 3) if db_cpu is not None else None,
            "latency_ms": {"p50": round(pct(latencies, 50) * 1000, 1), "p90": round(pct(latencies, 90) * 1000, 1),
                           "p99": round(pct(latencies, 99) * 1000, 1), "max": round(max(latencies) * 1000, 1)},
            f"latency_ms_after_{WARM_S:g}s": {"p50": round(pct(steady, 50) * 1000, 1),
                                              "p99": round(pct(steady, 99) * 1000, 1)}}


async def chain_lag(database: str) -> dict[str, float]:
    """PostgreSQL answers a booking before its event joins the branch's chain (hq/db_pg.py): how
    many events were still waiting when the phase's last answer came, and how long until none."""
    import psycopg
    started = time.perf_counter()
    with psycopg.connect(database, autocommit=True) as conn:
        waiting = first = conn.execute("SELECT COUNT(*) FROM outbox_queue").fetchone()[0]
        while waiting and time.perf_counter() - started < 60:
            await asyncio.sleep(0.01)
            waiting = conn.execute("SELECT COUNT(*) FROM outbox_queue").fetchone()[0]
    return {"unchained_at_end": first, "chained_within_s": round(time.perf_counter() - started, 3) if not waiting else None}


def booking_events(database: str) -> int:
    """Booking events in the branches' chains once every HQ process has stopped."""
    import psycopg
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE type = 'booking.created'").fetchone()[0]


def statements(database: str, reset: bool = False, top: int = 12) -> list[dict[str, object]]:
    """PostgreSQL's own account of the saturated phase (pg_stat_statements): per statement, its
    calls, the time spent executing it (wall time inside the server, so waits for locks count),
    and the rows it returned or wrote: where the database's share of a booking goes."""
    import psycopg
    with psycopg.connect(database, autocommit=True) as conn:
        if reset:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
            return []
        rows = conn.execute(
            "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements"
            " WHERE query NOT LIKE '%%pg_stat_statements%%' ORDER BY total_exec_time DESC LIMIT %s", (top,)).fetchall()
    return [{"calls": calls, "total_ms": round(total, 1), "mean_us": round(total * 1000 / max(calls, 1), 1),
             "rows": n, "query": query[:160]} for calls, total, n, query in rows]


async def hot_slot(urls: list[str], attempts: int) -> dict[str, object]:
    tz = ZoneInfo(TZ)
    start = datetime.combine(datetime.now(tz).date() + timedelta(days=2), datetime.strptime("10:00", "%H:%M").time(),
                             tzinfo=tz).isoformat()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one(i: int) -> int:
            async with s.post(f"{urls[i % len(urls)]}/api/v1/public/bookings", json={"branch": "b1", "service": "hot", "start": start,
                                                                      "email": f"h{i}@bench.test"}) as r:
                await r.read()
                return r.status
        statuses = await asyncio.gather(*(one(i) for i in range(attempts)))
    return {"attempts": attempts, "created": statuses.count(201), "refused_full": statuses.count(409)}


def start_hq(work: Path, database: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (work / "hq.toml").write_text(
        f'port = {port}\ndata_dir = "{work}"\ndatabase = "{database}"\nbooking_rate_per_minute = 0\n'
        f'log_level = "WARNING"\nbootstrap_admin_email = "bench@hq.test"\nbootstrap_admin_password = "bench-password-1"\n'
        f'argon2_memory_kib = 8192\nargon2_iterations = 1\nargon2_lanes = 1\nbooking_horizon_days = 60\n'
        + (f'workers = {workers}\n' if workers > 1 else ''))
    proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(work / "hq.toml")], cwd=ROOT)
    return proc, f"http://127.0.0.1:{port}"


async def wait_up(s: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with s.get(f"{url}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("HQ did not start")


def check_db(database: str, work: Path) -> tuple[list[tuple[str, int, int]], int]:
    sql = ("SELECT s.id, s.capacity, MAX(n) FROM (SELECT service_id, COUNT(*) AS n FROM bookings"
           " WHERE status = 'booked' GROUP BY service_id, slot_start) b JOIN services s"
           " ON s.id = b.service_id GROUP BY s.id, s.capacity")
    if database.startswith("postgresql"):
        import psycopg
        with psycopg.connect(database) as c:
            return c.execute(sql).fetchall(), c.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
    with sqlite3.connect(work / "hq.sqlite3") as c:
        return c.execute(sql).fetchall(), c.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="bench-hq-"))
    pg = None
    database, db_pid = "hq.sqlite3", None
    if args.database == "pg":
        sys.path.insert(0, str(ROOT / "tests" / "hq"))
        from pgserver import PgServer
        pg = PgServer(durable=True, settings={"shared_preload_libraries": "pg_stat_statements"}
                      if args.pg_statements else None).start()
        pg.sql("CREATE DATABASE hq_bench")
        database = pg.url("hq_bench")
        db_pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first, url = start_hq(work / "hq0", database, args.workers)
        procs.append(first)
        urls = [url]
        async with aiohttp.ClientSession() as s:
            await wait_up(s, url)  # the first one migrates and creates the key
            for n in range(1, args.processes):
                (work / f"hq{n}").mkdir()
                shutil.copy(work / "hq0" / "hq_ed25519.pem", work / f"hq{n}" / "hq_ed25519.pem")
                proc, extra = start_hq(work / f"hq{n}", database, args.workers)
                procs.append(proc)
                urls.append(extra)
                await wait_up(s, extra)
            await setup(url, s)
        slots = slot_starts(args.days)
        rng = random.Random(args.seed)
        pids = [p.pid for p in procs]
        paced = await load(urls, args.clients, args.seconds, args.clients / args.rate, slots, rng, pids, db_pid)
        if pg is not None:
            paced["chain"] = await chain_lag(database)
        if args.pg_statements:
            statements(database, reset=True)
        saturation = await load(urls, args.clients, args.seconds, None, slots, rng, pids, db_pid)
        if pg is not None:
            saturation["chain"] = await chain_lag(database)
        if args.pg_statements:
            saturation["postgresql_statements"] = statements(database)
        hot = await hot_slot(urls, args.hot)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        worst, total = check_db(database, work / "hq0")
        chained = booking_events(database) if pg is not None else None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    overbooked = [{"service": sid, "capacity": cap, "max_in_a_slot": n} for sid, cap, n in worst if n > cap]
    return {
        "bench": "hq_booking", "when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "target": {"bookings_per_s": 2000, "p99_ms": 100, "overbooked_slots": 0},
        "database": "postgresql" if pg else "sqlite", "hq_processes": args.processes,
        "workers": args.workers, "paced": paced | {"offered_per_s": args.rate}, "saturation": saturation, "hot_slot": hot,
        "bookings_in_db": total, "overbooked_slots": overbooked,
        **({"booking_events_chained": chained, "every_booking_chained": chained == total} if chained is not None else {}),
        "zero_overbooking": not overbooked and hot["created"] == 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered bookings/s in the paced phase")
    parser.add_argument("--hot", type=int, default=500)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-statements", action="store_true",
                        help="with --database pg: load pg_stat_statements and report the saturated phase's statements")
    parser.add_argument("--workers", type=int, default=1, help="HQ `workers` setting (server processes on one port)")
    parser.add_argument("--database", choices=("sqlite", "pg"), default="sqlite",
                        help="HQ's storage: a SQLite file, or a PostgreSQL 15 server the bench starts")
    parser.add_argument("--processes", type=int, default=1,
                        help="independent HQ processes on their own ports sharing the database (pg only)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hq.json"))
    args = parser.parse_args()
    if args.processes > 1 and args.database != "pg":
        parser.error("--processes > 1 needs --database pg (SQLite: use --workers)")
    if args.pg_statements and args.database != "pg":
        parser.error("--pg-statements needs --database pg")
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
