"""A hospital's busiest day on real node processes (DESIGN §4, §5; issue 17).

Eight devices replicate over loopback through relays the test can cut (tests/branch/
loopback.py): two kiosks, a waiting-room display and five counter devices holding twenty
counters that serve six overlapping services. 10,000 tickets are issued by the kiosks and,
for walk-ins, by the counter devices, while the counters call and serve. Mid-day a kiosk and
a counter device are cut off from every peer for an hour of the day's work (more than the
1,000 tickets an hour of a 10,000-ticket day brings) and both keep issuing and serving. Then
they rejoin. Proved: no ticket refused, no label given twice (per service and day), every
acknowledged ticket present on every device with its label, one state hash everywhere at
the end, the queue kept moving on both sides of the cut, and the cut-off devices (a counter
among them) showing the branch's state again soon after they rejoin.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from appliance.projection import state_hash
from appliance.sample import issue_local_cert, write_sample
from sync.keys import load_or_create_key, public_key_text
from tests.appliance.procs import NodeProcess

from .loopback import LinkRelays, free_port, static_peers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BRANCH = "busy-hospital"
SERVICES = ["general", "payments", "lab", "pharmacy", "radiology", "dental"]
LETTERS = "ABCDEF"
# device -> (role, ticket number range, counters)
DEVICES = {
    "kiosk": ("kiosk", "1-299", []),
    "kiosk-2": ("kiosk", "300-599", []),
    "display": ("display", None, []),
    **{f"counter-{k}": ("counter", f"{600 + 80 * (k - 1)}-{600 + 80 * k - 1}",
                        [f"c{4 * (k - 1) + j}" for j in range(1, 5)]) for k in range(1, 6)},
}
CUT = ("kiosk-2", "counter-5")
TOTAL = 10_000
SERVICE_PAUSE_S = 1.0  # a counter's time with each citizen (the lines grow; the CPU goes to the rest)


def counter_services(i: int) -> list[str]:
    """Counter i serves two or three services, overlapping its neighbours'."""
    picks = [SERVICES[i % 6], SERVICES[(i + 1) % 6]] + ([SERVICES[(i + 3) % 6]] if i % 3 == 0 else [])
    return list(dict.fromkeys(picks))


def write_branch(directory: Path, links: LinkRelays, lan_ports: dict[str, int]) -> dict[str, Path]:
    write_sample(directory, branch_id=BRANCH)  # the local CA the devices' certificates come from
    keys = {}
    for device, (role, _, _) in DEVICES.items():
        keys[device] = public_key_text(load_or_create_key(directory / "data" / device).public_key())
        issue_local_cert(directory, device, role, BRANCH)
    services = "".join(f'\n[[services]]\nid = "{s}"\nletter = "{LETTERS[i]}"\nnames = {{ en = "{s.title()}" }}\n'
                       for i, s in enumerate(SERVICES))
    counters = "".join(f'\n[[counters]]\nid = "c{i}"\nname = "Counter {i}"\nservices = {counter_services(i)!r}\n'
                       .replace("'", '"') for i in range(1, 21))
    roster = "".join(f'\n[[roster]]\nid = "{d}"\nrole = "{role}"\npublic_key = "{keys[d]}"\n'
                     + (f'numbers = "{rng}"\n' if rng else "") for d, (role, rng, _) in DEVICES.items())
    paths = {}
    for device, (role, _, mine) in DEVICES.items():
        peers = ", ".join(f'"{p}"' for p in static_peers(links, device, DEVICES))
        text = f"""[branch]
id = "{BRANCH}"
name = "Busy Hospital"
timezone = "Africa/Kigali"
languages = ["en"]

[device]
id = "{device}"
role = "{role}"
data_dir = "data/{device}"
counters = {mine!r}

[queue]
max_priority = 1
promote_after_s = 1800
call_timeout_s = 0

[security]
require_staff_login = false

[lan]
listen = "127.0.0.1:{lan_ports[device]}"
mdns = false
static_peers = [{peers}]
anti_entropy_s = 0.5
retry_max_s = 0.5
""".replace("'", '"') + services + counters + roster
        paths[device] = directory / f"{device}.toml"
        paths[device].write_text(text)
    return paths


def db_of(directory: Path, device: str) -> Path:
    return directory / "data" / device / "smartq.db"


def read_db(path: Path, fn):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return fn(conn)
    finally:
        conn.close()


def hashes(directory: Path) -> dict[str, str]:
    return {d: read_db(db_of(directory, d), state_hash) for d in DEVICES}


def vector(directory: Path, device: str) -> dict[str, int]:
    return dict(read_db(db_of(directory, device), lambda c: c.execute(
        "SELECT origin, max(seq) FROM events GROUP BY origin").fetchall()))


def wait_caught_up(directory: Path, timeout: float) -> float:
    """Seconds until every device holds every event that existed anywhere when called."""
    t0 = time.monotonic()
    target: dict[str, int] = {}
    for device in DEVICES:
        for origin, seq in vector(directory, device).items():
            target[origin] = max(seq, target.get(origin, 0))
    while True:
        behind = {d: o for d in DEVICES for o, s in target.items() if vector(directory, d).get(o, 0) < s}
        if not behind:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not caught up after {timeout} s: {behind}")
        time.sleep(0.2)


def wait_converged(directory: Path, devices: list[str], timeout: float) -> float:
    """Seconds until `devices` hold one state hash (fails with the hashes after `timeout`)."""
    t0 = time.monotonic()
    while True:
        seen = {d: read_db(db_of(directory, d), state_hash) for d in devices}
        if len(set(seen.values())) == 1:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no common state hash after {timeout} s: {seen}")
        time.sleep(0.5)


T0 = time.monotonic()


def note(what: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {what}", flush=True)


class Day:
    """The test's citizens and clerks: issue at the devices' local APIs, serve at the counters."""

    def __init__(self, urls: dict[str, str], session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.session = session
        self.acked: list[dict] = []
        self.refused: list[tuple[str, int, object]] = []
        self.served: Counter[str] = Counter()
        self.superseded: Counter[str] = Counter()
        self.errors: list[tuple[str, int, object]] = []
        self.serving = True

    async def post(self, device: str, path: str, body: dict | None = None) -> tuple[int, object]:
        async with self.session.post(self.urls[device] + path, json=body) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else None)

    async def issue(self, device: str, n: int, rnd: random.Random) -> None:
        for _ in range(n):
            service = rnd.choice(SERVICES)
            status, body = await self.post(device, "/api/v1/tickets",
                                           {"service": service, "priority": int(rnd.random() < 0.08)})
            if status == 201:
                self.acked.append({"id": body["id"], "label": body["label"], "service": service, "by": device})
            else:
                self.refused.append((device, status, body))

    async def serve(self, device: str, counter: str) -> None:
        status, body = await self.post(device, f"/api/v1/counters/{counter}/open")
        assert status == 200, body
        while self.serving:
            status, body = await self.post(device, f"/api/v1/counters/{counter}/call-next")
            if status == 204:
                await asyncio.sleep(0.2)
                continue
            if status != 200:
                self.errors.append((counter, status, body))
                await asyncio.sleep(0.2)
                continue
            status, answer = await self.post(device, f"/api/v1/counters/{counter}/tickets/{body['id']}/start")
            if status == 200:
                self.served[counter] += 1
            elif status == 409:
                self.superseded[counter] += 1  # another counter called it while the news travelled
            else:
                self.errors.append((counter, status, answer))
            await asyncio.sleep(SERVICE_PAUSE_S)

    async def issue_phase(self, plan: dict[str, int], seed: int) -> None:
        await asyncio.gather(*(self.issue(d, n, random.Random(seed * 100 + i)) for i, (d, n) in enumerate(plan.items())))


def test_busiest_day_eight_devices_two_cut_off_for_an_hour(tmp_path: Path) -> None:
    global T0
    T0 = time.monotonic()
    directory = tmp_path / "branch"
    lan_ports = {d: free_port() for d in DEVICES}
    links = LinkRelays(lan_ports)
    links.start()
    procs: dict[str, NodeProcess] = {}
    try:
        paths = write_branch(directory, links, lan_ports)
        for device, path in paths.items():
            procs[device] = NodeProcess(path, log_path=tmp_path / f"{device}.log")
        urls = {d: p.url for d, p in procs.items()}
        issuers = ["kiosk", "kiosk-2"] + [f"counter-{k}" for k in range(1, 6)]

        async def day() -> dict:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                d = Day(urls, session)
                note("8 nodes up")
                clerks = [asyncio.create_task(d.serve(dev, c)) for dev, (_, _, cs) in DEVICES.items() for c in cs]
                # morning: 4,000 tickets
                await d.issue_phase({"kiosk": 1700, "kiosk-2": 1700, **{f"counter-{k}": 120 for k in range(1, 6)}}, 1)
                served_before = sum(d.served.values())
                note(f"morning: {len(d.acked)} issued, {served_before} served")
                waiting_peak = read_db(db_of(directory, "display"), lambda c: c.execute(
                    "SELECT count(*) FROM tickets WHERE status = 'waiting'").fetchone()[0])
                # mid-day: kiosk-2 and counter-5 cut off for an hour's work (2,100 tickets)
                links.cut(*CUT)
                cut_served = {c: d.served[c] for c in d.served}
                await d.issue_phase({"kiosk-2": 600, "counter-5": 300, "kiosk": 800,
                                     **{f"counter-{k}": 100 for k in range(1, 5)}}, 2)
                served_during_cut = {c: d.served[c] - cut_served.get(c, 0) for c in d.served}
                note(f"cut off: {len(d.acked)} issued, {sum(d.served.values())} served")
                links.heal()
                rejoined_s = await asyncio.to_thread(wait_caught_up, directory, 120)
                note(f"every device had every event of the cut hour {rejoined_s:.1f} s after the heal")
                # afternoon: the rest of the 10,000
                rest = TOTAL - len(d.acked) - len(d.refused)
                per = rest // len(issuers)
                plan = {dev: per for dev in issuers}
                plan["kiosk"] += rest - per * len(issuers)
                await d.issue_phase(plan, 3)
                d.serving = False
                await asyncio.gather(*clerks)
                note(f"afternoon: {len(d.acked)} issued, {sum(d.served.values())} served")
                return {"day": d, "served_before": served_before, "waiting_peak": waiting_peak,
                        "served_during_cut": served_during_cut, "rejoined_s": rejoined_s}

        out = asyncio.run(day())
        d: Day = out["day"]
        converged_s = wait_converged(directory, list(DEVICES), 180)
        note(f"all equal after {converged_s:.1f} s")

        # no refusal, every ticket acknowledged, no label twice
        assert d.refused == []
        assert len(d.acked) == TOTAL
        assert not d.errors, d.errors[:5]
        keys = Counter((a["id"].split("-")[0], a["service"], a["label"]) for a in d.acked)
        assert max(keys.values()) == 1
        assert len({a["id"] for a in d.acked}) == TOTAL
        # both cut-off devices issued while cut off, and the line kept moving on both sides
        assert sum(1 for a in d.acked if a["by"] == "kiosk-2") >= 2000
        cut_counters = DEVICES["counter-5"][2]
        assert sum(n for c, n in out["served_during_cut"].items() if c in cut_counters) > 0
        assert sum(n for c, n in out["served_during_cut"].items() if c not in cut_counters) > 0

        # one state, with every acknowledged ticket, on every device
        states = hashes(directory)
        assert len(set(states.values())) == 1, states
        for device in DEVICES:
            rows = read_db(db_of(directory, device), lambda c: c.execute(
                "SELECT id, label, issue_service FROM tickets").fetchall())
            held = {i: (label, s) for i, label, s in rows}
            missing = [a for a in d.acked if held.get(a["id"]) != (a["label"], a["service"])]
            assert not missing, (device, missing[:5])
            per_service = Counter((i.split("-")[0], s, label) for i, label, s in rows)
            assert max(per_service.values()) == 1
        # what the display's API shows agrees
        for device in ("display", *CUT):
            status, body = procs[device].request("GET", "/api/v1/state", timeout=60)
            assert status == 200 and body["state_hash"] == states["display"]
        note(f"busy day: {TOTAL} tickets, served {sum(d.served.values())} ({sum(d.superseded.values())} calls "
             f"superseded), waiting at the morning's end {out['waiting_peak']}, cut devices caught up "
             f"{out['rejoined_s']:.1f} s after the heal, all equal {converged_s:.1f} s after the last ticket")
    finally:
        for p in procs.values():
            p.stop()
        links.stop()
