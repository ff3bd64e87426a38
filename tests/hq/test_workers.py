"""Several HQ processes on one SQLite file: shared capacity, shared link nonces, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hq.main import LISTEN_BACKLOG
from hq.signing import public_key_hex
from sync.keys import load_or_create_key
from sync.protocol import sign_headers
from hq.web import HQ_KEY
from hqtest import api, connect_db, make_settings, start_server
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_a_link_replay_is_refused_by_another_hq_process_on_the_same_database(tmp_path, server, clock, session):
    # `server` is HQ #1; HQ #2 opens the same database as a second worker would.
    runner2, second = await start_server(make_settings(tmp_path, database=server.app[HQ_KEY].settings.database), clock)
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
def _stop(proc: subprocess.Popen, workers: Iterable[int]) -> None:
    """SIGTERM the supervisor; it must stop its workers: never leave one behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in workers:
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"worker {pid} outlived the supervisor")


async def test_two_worker_processes_never_overbook_and_stop_together(tmp_path):
    port = free_port()
    settings = make_settings(tmp_path)  # a fresh database on this test's backend
    database = settings.database if settings.database.startswith("postgresql") else "hq.sqlite3"
    (tmp_path / "hq.toml").write_text(
        f'port = {port}\nworkers = 2\ndata_dir = "{tmp_path}"\ndatabase = "{database}"\n'
        'booking_rate_per_minute = 0\nlog_level = "WARNING"\n'
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
        _stop(proc, workers)
    with connect_db(settings.replace(data_dir=str(tmp_path), database=database)) as c:
        assert c.execute("SELECT COUNT(*) FROM bookings WHERE status = 'booked'").fetchone()[0] == 3


def _workers(parent: int) -> list[int]:
    """The supervisor's server processes (spawned interpreters), not multiprocessing's resource tracker."""
    out = []
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and _alive(pid):
            out.append(pid)
    return sorted(out)


def _listening(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (state 0A in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for x in lines if x.split()[1] == local and x.split()[3] == "0A")


@pytest.mark.slow
async def test_a_killed_worker_is_replaced_while_the_other_keeps_serving_and_metrics_sum_all(tmp_path):
    port = free_port()
    (tmp_path / "hq.toml").write_text(
        f'port = {port}\nworkers = 2\ndata_dir = "{tmp_path}"\nlog_level = "WARNING"\n')
    log = (tmp_path / "hq.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(tmp_path / "hq.toml")], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    seen: set[int] = set()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
            async def get(path: str = "/healthz") -> int:
                async with s.get(url + path) as r:
                    await r.read()
                    return r.status

            for _ in range(300):
                try:
                    if await get() == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("HQ did not start: " + (tmp_path / "hq.log").read_text()[-2000:])
            for _ in range(300):  # both workers started and listening (one socket each, SO_REUSEPORT)
                if len(_workers(proc.pid)) == 2 and _listening(port) == 2:
                    break
                await asyncio.sleep(0.1)
            before = _workers(proc.pid)
            seen |= set(before)
            assert len(before) == 2, before
            answered = 1 + sum([await get() == 200 for _ in range(30)])

            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            for _ in range(100):  # the supervisor reaps it
                if not _alive(victim):
                    break
                await asyncio.sleep(0.02)
            # The survivor answers every new connection while the replacement starts.
            statuses = [await get() for _ in range(40)]
            assert statuses == [200] * 40
            answered += 40
            for _ in range(300):
                now = _workers(proc.pid)
                if len(now) == 2 and victim not in now and _listening(port) == 2:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"worker {victim} was not replaced: {_workers(proc.pid)}")
            seen |= set(now)
            assert set(now) - set(before), "a new worker process"
            assert proc.poll() is None, "the supervisor keeps running"
            assert "restarting it" in (tmp_path / "hq.log").read_text()
            answered += sum([await get() == 200 for _ in range(30)])

            # /metrics on whichever worker answers: the sum over the host's workers, the dead one included.
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 200
                text = await r.text()
            line = next(x for x in text.splitlines()
                        if x.startswith("smartq_http_requests_total{") and 'route="/healthz"' in x and 'status="200"' in x)
            assert float(line.rsplit(" ", 1)[1]) == answered, (line, answered)
    finally:
        _stop(proc, seen)
        log.close()
    assert proc.returncode == 0


@pytest.mark.slow
def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    """SIGKILL leaves no chance to stop the workers: each notices its parent is gone and stops
    (systemd's KillMode=control-group does the same for a unit; this covers a bare start)."""
    port = free_port()
    (tmp_path / "hq.toml").write_text(f'port = {port}\nworkers = 2\ndata_dir = "{tmp_path}"\nlog_level = "WARNING"\n')
    proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(tmp_path / "hq.toml")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        for _ in range(300):
            workers = _workers(proc.pid)
            if len(workers) == 2 and _listening(port) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, workers
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    leftover = [pid for pid in workers if _alive(pid)]
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "workers outlived their supervisor"
    assert _listening(port) == 0


@pytest.mark.slow
@pytest.mark.parametrize("setting, loop", [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_a_serving_process_runs_the_event_loop_its_setting_names_and_queues_bursts(tmp_path, setting, loop):
    """uvloop (the hq extra installs it) unless event_loop = "asyncio"; the answer is the same,
    and so is the listening socket's accept queue."""
    port = free_port()
    (tmp_path / "hq.toml").write_text(f'port = {port}\ndata_dir = "{tmp_path}"\nevent_loop = "{setting}"\n')
    with (tmp_path / "hq.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(tmp_path / "hq.toml")], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: hq\r\nConnection: close\r\n\r\n")
                        if c.recv(64).startswith(b"HTTP/1.1 200"):
                            break
                except OSError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("HQ did not start: " + (tmp_path / "hq.log").read_text()[-2000:])
            # The kernel's accept queue of the listening socket (ss: Send-Q of a LISTEN socket) is
            # HQ's, not aiohttp's 128: a burst of connections is queued, not dropped for a second.
            listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
            somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
            assert [line.split()[2] for line in listing.stdout.splitlines()] == [str(min(LISTEN_BACKLOG, somaxconn))]
        finally:
            _stop(proc, [])
    assert f"(event loop: {loop})" in (tmp_path / "hq.log").read_text()


def test_an_unknown_event_loop_is_refused(tmp_path):
    (tmp_path / "hq.toml").write_text('event_loop = "tokio"\n')
    done = subprocess.run([sys.executable, "-m", "hq", "--config", str(tmp_path / "hq.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "'event_loop' must be 'auto', 'uvloop' or 'asyncio'" in done.stderr, done.stderr
