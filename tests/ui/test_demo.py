"""``make demo``'s program (``python -m appliance.demo``) on a clean home: HQ, four nodes and
four real windows on Xvfb. Every window comes up (no ``~/.kivy`` race), a simulated citizen
takes tickets by touching the kiosk window, and a window that dies is reported loudly.

Ten starts in a row: ``python -m bench.bench_demo --runs 10`` (bench/README.md)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from bench.bench_demo import REPO, WINDOWS, run_once

pytestmark = [pytest.mark.ui, pytest.mark.slow]


TAKEN = re.compile(r"autopilot citizen took ([A-Z]\d{3,4}) by touch")


def kiosk_log(demo: Path) -> str:
    log = demo / "logs" / "ui-kiosk.log"
    return log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""


def test_the_demo_shows_every_window_and_the_kiosk_is_used_by_touch(tmp_path: Path) -> None:
    # Stopped with Ctrl-C once the autopilot took a ticket (about 8 s of touches and pauses);
    # the minute is only the cap for a slow machine.
    result = run_once(tmp_path, duration=60, extra=["--autopilot", "2", "--pace", "30"],
                      until=lambda demo: TAKEN.search(kiosk_log(demo)) is not None)
    assert result["all_windows"], result
    assert sorted(result["windows_up"]) == sorted(WINDOWS)
    assert not result["kivy_home_created"]  # the apps need no shared ~/.kivy at all
    log = kiosk_log(tmp_path / "demo")
    assert TAKEN.search(log), log[-3000:]
    # HQ knows the branch's staff by name (its console shows who serves where), not their PINs.
    with closing(sqlite3.connect(tmp_path / "demo" / "hq" / "data" / "hq.sqlite3")) as hq:
        assert hq.execute("SELECT id, name, pin_hash FROM staff ORDER BY id").fetchall() == [
            ("amina", "Amina Uwase", ""), ("jean", "Jean Habimana", ""), ("lucia", "Lucía Gómez", "")]


def test_a_window_that_dies_is_reported_loudly_and_the_demo_fails(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "KIVY_HOME", "KIVY_NO_CONFIG")}
    env["HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "appliance.demo", "--dir", str(tmp_path / "demo"),
                             "--duration", "60", "--no-hq", "--autopilot", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        display_pid = None
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            lines.append(line.rstrip())
            found = re.search(r"started ui-display \(pid (\d+)\)", line)
            if found:
                display_pid = int(found.group(1))
            if "SmartQ demo running" in line:
                assert display_pid is not None
                os.kill(display_pid, signal.SIGKILL)  # the display's window dies
            if "SmartQ demo stopped" in line or time.monotonic() > deadline:
                break
            if "SmartQ DEMO PROBLEM" in line:
                proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(lines)
    assert f"SmartQ DEMO PROBLEM: ui-display (pid {display_pid}) died with status -9" in text, text[-3000:]
    assert proc.returncode == 1
