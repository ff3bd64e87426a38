"""Two HQ processes ("two hosts") sharing one real PostgreSQL: the invariants hold across them.

Each HQ is its own `python -m hq` process with its own port, its own data dir (a copy of the
HQ key, as a second host would have) and the same `database = "postgresql://..."`.
- a storm of bookings on one slot, spread over both, leaves exactly its capacity;
- a branch pushing the same signed events to both at once has each stored once;
- every confirmation is sent once although both processes run a dispatcher;
- SIGKILL of one HQ mid-storm: every acknowledged booking is stored, the other keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hq.signing import event_hash, public_key_hex, sign_envelope
from hqtest import api, connect_db, make_settings
from sync.keys import load_or_create_key
from sync.protocol import encode, sign_headers

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Europe/Zurich")
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hq:
    """One HQ process (`python -m hq --config`), stopped (or killed) by its PID."""

    def __init__(self, folder: Path, database: str) -> None:
        self.folder, self.port = folder, _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hq.toml").write_text(
            f'port = {self.port}\ndata_dir = "{folder}"\ndatabase = "{database}"\nlog_level = "WARNING"\n'
            'booking_rate_per_minute = 0\nnotify_poll_s = 1\nbootstrap_admin_email = "root@hq.test"\n'
            f'bootstrap_admin_password = "{PASSWORD}"\nargon2_memory_kib = 64\nargon2_iterations = 1\nargon2_lanes = 1\n'
            'pool_size = 8\n')
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, s: aiohttp.ClientSession) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(self.folder / "hq.toml")], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "stderr.log", "wb"))
        for _ in range(600):
            if self.proc.poll() is not None:
                raise AssertionError(f"HQ exited: {(self.folder / 'stderr.log').read_text()[-2000:]}")
            try:
                async with s.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("HQ did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _book(s: aiohttp.ClientSession, url: str, service: str, start: str, i: int) -> tuple[int, str | None]:
    try:
        async with s.post(f"{url}/api/v1/public/bookings", json={"branch": "b", "service": service, "start": start,
                                                                 "email": f"p{i}@x.test"}) as r:
            body = await r.json(content_type=None)
            return r.status, (body or {}).get("code") if r.status == 201 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return -1, None  # the connection died (the killed HQ): not acknowledged


def _slot(days: int, hhmm: str) -> str:
    day = datetime.now(TZ).date() + timedelta(days=days)
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time(), tzinfo=TZ).isoformat()


async def test_two_hq_processes_on_one_postgresql_keep_every_invariant(tmp_path, hq_backend):
    if hq_backend != "postgresql":
        pytest.skip("several HQ hosts share a server database (SQLite: see test_workers)")
    settings = make_settings(tmp_path)
    a, b = Hq(tmp_path / "a", settings.database), Hq(tmp_path / "b", settings.database)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await a.start(s)
            shutil.copy(a.folder / "hq_ed25519.pem", b.folder / "hq_ed25519.pem")  # the second host's copy
            await b.start(s)
            token = (await api(s, "POST", f"{a.url}/api/v1/auth/tokens", 201,
                               json={"email": "root@hq.test", "password": PASSWORD}))["token"]
            h = {"Authorization": f"Bearer {token}"}
            await api(s, "POST", f"{a.url}/api/v1/orgs", 201, json={"id": "o", "name": "O"}, headers=h)
            await api(s, "POST", f"{b.url}/api/v1/orgs/o/branches", 201, headers=h,  # a session works on both
                      json={"id": "b", "name": "B", "timezone": "Europe/Zurich"})
            for service, capacity in (("hot", 5), ("wide", 10000)):
                await api(s, "PUT", f"{a.url}/api/v1/branches/b/services/{service}", 200, headers=h,
                          json={"letter": service[0].upper(), "names": {"en": service}, "slot_minutes": 60,
                                "capacity": capacity})
            await api(s, "PUT", f"{b.url}/api/v1/branches/b/hours", 200, headers=h,
                      json={"weekdays": {str(d): {"opens": "08:00", "closes": "18:00"} for d in range(7)}})

            # 1. a storm on one slot of capacity 5, half to each process
            hot = _slot(2, "10:00")
            storm = await asyncio.gather(*(_book(s, (a, b)[i % 2].url, "hot", hot, i) for i in range(300)))
            statuses = [st for st, _ in storm]
            assert statuses.count(201) == 5 and statuses.count(409) == 295, sorted(set(statuses))

            # 2. one branch device pushes the same events to both processes at once
            key = load_or_create_key(tmp_path / "kiosk")
            await api(s, "POST", f"{a.url}/api/v1/branches/b/devices", 201, headers=h,
                      json={"id": "kiosk-1", "role": "kiosk", "public_key": public_key_hex(key.public_key())})
            events, prev, now_ms = [], "", int(time.time() * 1000)
            day = datetime.now(TZ).strftime("%Y%m%d")
            for n in range(1, 41):
                e = sign_envelope(key, {"origin": "kiosk-1", "seq": n, "hlc": (now_ms + n) << 16, "type": "ticket.issued",
                                        "schema": 1, "branch": "b", "prev": prev,
                                        "payload": {"ticket": f"{day}-K{n:03d}", "service": "wide", "number": n,
                                                    "label": f"K{n:03d}", "day": day, "priority": 0}})
                prev = event_hash(e)
                events.append(e)
            body = encode({"events": events})

            async def push(url: str) -> dict:
                headers = sign_headers(key, device="kiosk-1", branch="b", method="POST", path="/sync/v1/push",
                                       body=body, to="hq:b")
                async with s.post(f"{url}/sync/v1/push", data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    return await r.json(content_type=None)
            answers = await asyncio.gather(*(push(u) for u in (a.url, b.url, a.url, b.url)))
            assert sum(x["accepted"] for x in answers) == 40
            assert sum(x["duplicates"] for x in answers) == 3 * 40

            # 3. SIGKILL one process mid-storm: no acknowledged booking lost, the other serves on
            wide = _slot(3, "11:00")
            assert b.proc is not None

            done: list[int] = []

            async def book(i: int) -> tuple[int, str | None]:
                out = await _book(s, (a, b)[i % 2].url, "wide", wide, 1000 + i)
                done.append(out[0])
                return out

            async def killer() -> None:
                while done.count(201) < 100:  # mid-storm: some acknowledged, most still in flight
                    await asyncio.sleep(0.01)
                os.kill(b.proc.pid, signal.SIGKILL)
            results, _ = await asyncio.gather(asyncio.gather(*(book(i) for i in range(600))), killer())
            acked = [code for st, code in results if st == 201]
            assert -1 in [st for st, _ in results]  # requests to the killed HQ failed: the kill was mid-storm
            after = await asyncio.gather(*(_book(s, a.url, "wide", wide, 5000 + i) for i in range(20)))
            assert [st for st, _ in after] == [201] * 20  # the survivor keeps serving
            assert b.proc.wait(10) == -signal.SIGKILL

            # 4. every confirmation is sent once, though both processes (until the kill) dispatched
            with connect_db(settings) as c:
                for _ in range(120):
                    left = c.execute("SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'sending')"
                                     ).fetchone()[0]
                    if left == 0:
                        break
                    await asyncio.sleep(0.5)
                stored = {r[0] for r in c.execute("SELECT code FROM bookings WHERE service_id = 'wide'")}
                booked_hot = c.execute("SELECT COUNT(*) FROM bookings WHERE service_id = 'hot' AND status = 'booked'"
                                       ).fetchone()[0]
                n_events = c.execute("SELECT COUNT(*) FROM events WHERE origin = 'kiosk-1'").fetchone()[0]
                claims = c.execute("SELECT status, attempts, COUNT(*) FROM notifications GROUP BY status, attempts"
                                   ).fetchall()
            assert booked_hot == 5
            assert n_events == 40
            assert acked and set(acked) <= stored, len(set(acked) - stored)
            # rows the killed process had claimed come back on the survivor's recover only at its
            # restart; every other confirmation was claimed and sent exactly once
            by = {(r[0], r[1]): r[2] for r in claims}
            assert set(by) <= {("sent", 1), ("sending", 1)}, by
            assert by.get(("sent", 1), 0) >= len(acked) + 5 + 20 - by.get(("sending", 1), 0)
    finally:
        a.stop()
        b.stop()
