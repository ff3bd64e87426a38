"""Helpers for branch-link tests: a real HQ (in this process or as `python -m hq`) on 127.0.0.1,
a sample branch registered there, device configs with an `[hq]` section."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.config import load_config
from appliance.sample import write_sample
from hq.app import create_app
from hq.enroll import hq_section, register_branch
from hq.settings import Settings
from tests.ports import free_port

ADMIN, PASSWORD, ORG = "root@hq.test", "correct horse battery", "demo-org"
FAST = {"interval_s": 0.3, "min_gap_s": 0.05, "backoff_min_s": 0.2, "backoff_max_s": 1.0, "timeout_s": 5.0}


def midday_timezone(now: float | None = None) -> str:
    """An Etc/GMT zone where it is about noon now, so today still has bookable slots."""
    hour = datetime.fromtimestamp(now or time.time(), timezone.utc).hour
    offset = max(-12, min(14, 12 - hour))
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def hq_settings(data_dir: Path, port: int = 0) -> dict[str, Any]:
    return dict(data_dir=str(data_dir), port=port, cookie_secure=False, argon2_memory_kib=64, argon2_iterations=1,
                argon2_lanes=1, scheduler_enabled=False, booking_rate_per_minute=0, login_rate_per_minute=0,
                bootstrap_admin_email=ADMIN, bootstrap_admin_password=PASSWORD, default_phone_region="CH")


async def start_hq_in_process(data_dir: Path) -> tuple[web.AppRunner, str, web.Application]:
    app = create_app(Settings(**hq_settings(data_dir)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", app


async def admin_token(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/api/v1/auth/tokens", json={"email": ADMIN, "password": PASSWORD}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]


async def enroll_sample(session: aiohttp.ClientSession, hq_url: str, folder: Path, *, tz: str,
                        link_url: str | None = None, devices: tuple[str, ...] = ("kiosk",),
                        extra: dict[str, Any] | None = None) -> str:
    """Write the sample branch into `folder`, register it at HQ, add `[hq]` to `devices`' configs.
    Returns the admin token."""
    write_sample(folder, timezone=tz, port_base=0)
    token = await admin_token(session, hq_url)
    async with session.post(f"{hq_url}/api/v1/orgs", json={"id": ORG, "name": "Demo"},
                            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status in (201, 409), await r.text()
    out = await register_branch(session, hq_url, token, ORG, load_config(folder / "kiosk.toml"),
                                hours=("00:00", "23:45"), weekdays=range(7))
    for device in devices:
        path = folder / f"{device}.toml"
        path.write_text(path.read_text() + "\n" + hq_section(link_url or hq_url, out["public_key_b64"],
                                                             **{"public_url": hq_url, **FAST, **(extra or {})}))
    return token


class HQProcess:
    """`python -m hq --config` on 127.0.0.1:port; stop() by PID (also restartable on the same port)."""

    def __init__(self, folder: Path, port: int | None = None, extra: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**hq_settings(folder / "data", self.port), **(extra or {})}
        lines = ["[hq]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        (folder / "hq.toml").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> HQProcess:
        log = (self.folder / "hq.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(self.folder / "hq.toml")],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"HQ exited: {(self.folder / 'hq.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("HQ did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Proxy:
    """socat forwarding 127.0.0.1:port -> target; cut() ends it (the branch's WAN is down)."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.target_port = target_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self.proc = subprocess.Popen(["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
                                      f"TCP:127.0.0.1:{self.target_port}"], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("socat did not listen")

    def cut(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.2, explain: Any = None) -> Any:
    """``explain()``, if given, says what the parts showed when the condition was not met."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s" + (f": {explain()}" if explain else ""))
        time.sleep(every)


async def await_for(predicate: Any, timeout: float = 30.0, every: float = 0.1) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)
