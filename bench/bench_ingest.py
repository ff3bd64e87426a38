"""HQ ingest of branch events: events per second through `hq.ingest` (the rules of
`sync/verify.py`, the chain check, and the per-ticket re-fold by the branch fold), and the
time to compute HQ's state hash of the branch (`hq/engine.py`).

A real HQ (in this process, its SQLite file in a temp dir, its writer thread) with the sample
branch registered through its API; a kiosk issues --tickets tickets and two counters call,
start and complete them (4 events a ticket, `seen` as the node writes it). The events are
signed beforehand (not timed) and handed to `ingest_branch_events` in batches of --batch, as
the branch link's push does (HTTP and request signatures not included).

    .venv/bin/python -m bench.bench_ingest [--tickets 5000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import write

ORG, ADMIN, PASSWORD = "bench", "admin@example.org", "bench-password-1"


async def run(tickets: int, batch: int) -> dict[str, Any]:
    from appliance.config import load_config
    from appliance.sample import write_sample
    from hq.app import create_app
    from hq.enroll import register_branch
    from hq.engine import branch_state
    from hq.ingest import ingest_branch_events
    from hq.settings import Settings
    from hq.web import HQ_KEY
    from sync.envelope import Event
    from sync.keys import load_or_create_key

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sample(root / "branch", timezone="UTC", port_base=0)
        app = create_app(Settings(data_dir=str(root / "hq"), port=0, cookie_secure=False, argon2_memory_kib=64,
                                  argon2_iterations=1, argon2_lanes=1, scheduler_enabled=False,
                                  booking_rate_per_minute=0, login_rate_per_minute=0,
                                  bootstrap_admin_email=ADMIN, bootstrap_admin_password=PASSWORD))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/api/v1/auth/tokens", json={"email": ADMIN, "password": PASSWORD}) as r:
                    token = (await r.json())["token"]
                async with session.post(f"{url}/api/v1/orgs", json={"id": ORG, "name": "Bench"},
                                        headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status in (201, 409), await r.text()
                config = load_config(root / "branch" / "kiosk.toml")
                await register_branch(session, url, token, ORG, config, hours=("00:00", "23:45"), weekdays=range(7))
            branch = config.branch_id
            keys = {d: load_or_create_key(load_config(root / "branch" / f"{d}.toml").data_dir)
                    for d in ("kiosk", "counter-1", "counter-2")}
            heads: dict[str, tuple[int, str]] = {d: (0, "") for d in keys}
            t0 = (int(time.time()) - 3600) * 1000
            events: list[dict[str, Any]] = []

            def emit(device: str, type_: str, payload: dict[str, Any], ms: int) -> None:
                seq, prev = heads[device]
                e = Event(device, seq + 1, ms << 16, type_, 1, payload, branch, prev).signed(keys[device])
                heads[device] = (seq + 1, e.hash)
                events.append(e.to_dict())

            day = time.strftime("%Y-%m-%d", time.gmtime(t0 / 1000))
            for i in range(tickets):
                tid = f"{day.replace('-', '')}-A{i + 1:05d}"
                emit("kiosk", "ticket.issued", {"ticket": tid, "label": f"A{i + 1}", "number": i + 1, "day": day,
                                                "service": "general", "priority": 0}, t0 + i)
            for i in range(tickets):
                tid = f"{day.replace('-', '')}-A{i + 1:05d}"
                counter, device = ("c1", "counter-1") if i % 2 == 0 else ("c2", "counter-2")
                seen = {"kiosk": i + 1}
                ms = t0 + tickets + 10 * i
                for k, kind in enumerate(("ticket.called", "ticket.started", "ticket.completed")):
                    emit(device, kind, {"ticket": tid, "counter": counter, "seen": seen}, ms + k)
            hq = app[HQ_KEY]
            load_before = os.getloadavg()[0]
            writer = _writer_clock()
            writer_cpu = time.clock_gettime(writer) if writer is not None else 0.0
            start, cpu = time.perf_counter(), time.process_time()
            accepted = 0
            for lo in range(0, len(events), batch):
                result = await ingest_branch_events(hq, events[lo:lo + batch], branch=branch)
                assert not result.rejected, result.rejected[:3]
                accepted += result.accepted
            ingest_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
            writer_s = time.clock_gettime(writer) - writer_cpu if writer is not None else None
            start = time.perf_counter()
            state = await hq.db.read(lambda c: branch_state(c, branch, database="bench"))
            hash_s = time.perf_counter() - start
        finally:
            await runner.cleanup()
    # The process's CPU time (all its threads) next to the wall clock: on a shared machine the
    # wall-clock rate moves with whatever else runs; events per CPU second is what a free core gives.
    return {"tickets": tickets, "events": accepted, "batch": batch, "ingest_s": round(ingest_s, 3),
            "events_per_s": round(accepted / ingest_s), "cpu_s": round(cpu_s, 3),
            "events_per_cpu_s": round(accepted / cpu_s), "load_average": round(load_before, 2),
            "writer_cpu_s": round(writer_s, 3) if writer_s else None,
            "events_per_writer_cpu_s": round(accepted / writer_s) if writer_s else None,
            "state_hash_s": round(hash_s, 3),
            "state_hash_events": state["events"]}


def _writer_clock() -> int | None:
    """The CPU clock of HQ's database writer thread (where the whole ingest runs), if there is one."""
    import threading
    for t in threading.enumerate():
        if t.name.startswith("hq-db-writer") and t.ident is not None:
            return time.pthread_getcpuclockid(t.ident)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    figures = asyncio.run(run(args.tickets, args.batch))
    path = write("ingest", figures)
    print(f"HQ ingest: {figures['events_per_s']} events/s, {figures['events_per_cpu_s']} per process CPU second,"
          f" {figures['events_per_writer_cpu_s']} per writer-thread CPU second"
          f" ({figures['events']} events in {figures['ingest_s']} s, batches of {figures['batch']}, load average"
          f" {figures['load_average']}); state hash of the branch in {figures['state_hash_s']} s -> {path}")


if __name__ == "__main__":
    main()
