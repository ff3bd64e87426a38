"""Several HQ processes on one SQLite file: shared capacity, shared link nonces, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hq.signing import public_key_hex
from sync.keys import load_or_create_key
from sync.protocol import sign_headers
from hqtest import api, make_settings, start_server

ROOT = Path(__file__).resolve().parents[2]


async def test_a_link_replay_is_refused_by_another_hq_process_on_the_same_database(tmp_path, server, clock, session):
    # `server` is HQ #1; HQ #2 opens the same database as a second worker would.
    runner2, second = await start_server(make_settings(tmp_path), clock)
    try:
        key = load_or_create_key(tmp_path / "kiosk")
        await api(session, "POST", f"{server.url}/api/v1/branches/acme-main/devices", 201, headers=server.h("super"),
                  json={"id": "kiosk-1", "role": "kiosk", "public_key": public_key_hex(key.public_key())})
        body = b""
        headers = sign_headers(key, device="kiosk-1", branch="acme-main", method="GET", path="/sync/v1/hello", body=body,
                               to="hq:acme-main")
        for url, expect in ((server.url, 200), (second.url, 401), (server.url, 401)):
            async with session.get(f"{url}/sync/v1/hello", headers=headers) as resp:
                assert resp.status == expect, (url, await resp.text())
        fresh = sign_headers(key, device="kiosk-1", branch="acme-main", method="GET", path="/sync/v1/hello", body=body,
                             to="hq:acme-main")
        async with session.get(f"{second.url}/sync/v1/hello", headers=fresh) as resp:
            assert resp.status == 200
    finally:
        await runner2.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
async def test_two_worker_processes_never_overbook_and_stop_together(tmp_path):
    port = _free_port()
    (tmp_path / "hq.toml").write_text(
        f'port = {port}\nworkers = 2\ndata_dir = "{tmp_path}"\nbooking_rate_per_minute = 0\nlog_level = "WARNING"\n'
        'bootstrap_admin_email = "root@hq.test"\nbootstrap_admin_password = "correct horse battery"\n'
        'argon2_memory_kib = 64\nargon2_iterations = 1\nargon2_lanes = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(tmp_path / "hq.toml")], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    workers: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
            for _ in range(300):
                try:
                    async with s.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("HQ did not start")
            workers = _children(proc.pid)
            assert workers, "no worker process was started"
            token = (await api(s, "POST", f"{url}/api/v1/auth/tokens", 201,
                               json={"email": "root@hq.test", "password": "correct horse battery"}))["token"]
            h = {"Authorization": f"Bearer {token}"}
            await api(s, "POST", f"{url}/api/v1/orgs", 201, json={"id": "o", "name": "O"}, headers=h)
            await api(s, "POST", f"{url}/api/v1/orgs/o/branches", 201, headers=h,
                      json={"id": "b", "name": "B", "timezone": "Europe/Zurich"})
            await api(s, "PUT", f"{url}/api/v1/branches/b/services/hot", 200, headers=h,
                      json={"letter": "H", "names": {"en": "Hot"}, "slot_minutes": 60, "capacity": 3})
            await api(s, "PUT", f"{url}/api/v1/branches/b/hours", 200, headers=h,
                      json={"weekdays": {str(d): {"opens": "08:00", "closes": "18:00"} for d in range(7)}})
            tz = ZoneInfo("Europe/Zurich")
            start = datetime.combine(datetime.now(tz).date() + timedelta(days=2),
                                     datetime.strptime("10:00", "%H:%M").time(), tzinfo=tz).isoformat()

            async def one(i: int) -> int:
                async with s.post(f"{url}/api/v1/public/bookings", json={"branch": "b", "service": "hot",
                                                                         "start": start, "email": f"p{i}@x.test"}) as r:
                    await r.read()
                    return r.status
            statuses = await asyncio.gather(*(one(i) for i in range(200)))
        assert statuses.count(201) == 3 and statuses.count(409) == 197, sorted(set(statuses))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in workers:  # the parent stops its workers; never leave one behind
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"worker {pid} outlived the parent")
    with sqlite3.connect(tmp_path / "hq.sqlite3") as c:
        assert c.execute("SELECT COUNT(*) FROM bookings WHERE status = 'booked'").fetchone()[0] == 3
