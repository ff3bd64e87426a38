"""Each app started where there is no screen stops at once with one line and status 1, instead
of running an invisible window for ever (SDL's offscreen fallback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(app: str, env_changes: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "KIVY_WINDOW"):
        env.pop(key, None)
    env.update(env_changes)
    # A node that is never there: the app must stop before it would even try it.
    extra = ["--counter", "c1"] if app == "counter_ui" else []
    return subprocess.run([sys.executable, "-m", app, "--node", "http://127.0.0.1:9", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def error_lines(stderr: str) -> list[str]:
    """stderr without Kivy's INFO log lines (the version banner comes before the window)."""
    return [line for line in stderr.splitlines() if line.strip() and " INFO " not in line]


@pytest.mark.parametrize("app,title", [("kiosk_ui", "SmartQ kiosk"), ("display_ui", "SmartQ display"),
                                       ("counter_ui", "SmartQ counter")])
def test_no_display_at_all_is_one_line_and_status_1(app: str, title: str) -> None:
    done = start(app, {})
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        f"{title}: no screen: DISPLAY and WAYLAND_DISPLAY are unset; start it inside the desktop "
        "session, or set SDL_VIDEODRIVER=kmsdrm on a console"]
    assert done.stderr.strip() == error_lines(done.stderr)[0]  # not even Kivy's banner: it stops first


def free_x_display() -> str:
    n = 150
    while Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
        n += 1
    return f":{n}"


@pytest.mark.parametrize("env,driver", [({"DISPLAY": "display"}, "x11"),
                                        ({"SDL_VIDEODRIVER": "kmsdrm"}, "kmsdrm")])
def test_a_screen_that_cannot_open_is_one_line_naming_the_driver(env: dict[str, str], driver: str) -> None:
    env = {k: free_x_display() if v == "display" else v for k, v in env.items()}
    done = start("kiosk_ui", env)
    assert done.returncode == 1
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"SmartQ kiosk: no screen: the {driver} video driver cannot open a window (")
