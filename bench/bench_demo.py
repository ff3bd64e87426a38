"""``python -m bench.bench_demo [--runs 10] [--duration 6]``: ``make demo``'s program started
again and again on a clean home, every window alive each time.

Each run gets a fresh ``$HOME`` (no ``~/.kivy`` yet: the folder the apps once raced to
create) and a fresh demo folder, no ``$DISPLAY`` (the demo starts its own Xvfb), and runs
``python -m appliance.demo --duration S`` with HQ, four nodes and four windows. A run passes
when the demo exits 0 having printed "windows up: kiosk, display, c1, c2" (it prints that
only once each window logged its first frame, and exits 1, loudly, when one dies). Writes
bench/results/demo.json: per run the exit status, the windows up and the seconds to "running".
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

try:
    from bench.common import write
except ImportError:  # run as a script
    from common import write  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
WINDOWS = ["kiosk", "display", "c1", "c2"]


def run_once(workdir: Path, *, duration: float = 6.0, timeout: float = 240.0,
             extra: list[str] | None = None,
             until: Callable[[Path], bool] | None = None) -> dict[str, Any]:
    """Start the demo once with ``workdir/home`` as $HOME and ``workdir/demo`` as its folder.

    With ``until``, the demo is stopped (Ctrl-C, as a person would) as soon as
    ``until(workdir / "demo")`` holds once it is running; ``duration`` is then only the cap."""
    home = workdir / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "KIVY_HOME", "KIVY_NO_CONFIG", "WAYLAND_DISPLAY")}
    env["HOME"] = str(home)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.demo", "--dir", str(workdir / "demo"), "--duration", str(duration),
         "--screenshot-every", "2", *(extra or [])],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running_s = None
    lines: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if until is not None and until(workdir / "demo"):
                proc.send_signal(signal.SIGINT)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "SmartQ demo running" in line and running_s is None:
                running_s = round(time.monotonic() - started, 2)
                if until is not None:
                    watcher.start()
            if time.monotonic() - started > timeout:
                proc.kill()
                break
        proc.wait(30)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(lines)
    match = re.search(r"windows up: ([^.]*)\.", text)
    up = [w.strip() for w in match.group(1).split(",")] if match else []
    return {"status": proc.returncode, "windows_up": up, "running_s": running_s,
            "all_windows": sorted(up) == sorted(WINDOWS) and proc.returncode == 0,
            "kivy_home_created": (home / ".kivy").exists(),
            "problems": [line for line in lines if "DEMO PROBLEM" in line],
            "output_tail": lines[-15:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--duration", type=float, default=6.0, help="seconds each demo runs once up")
    args = p.parse_args(argv)
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="smartq-demo-") as tmp:
            result = run_once(Path(tmp), duration=args.duration)
        print(f"run {i + 1}/{args.runs}: status {result['status']}, windows up {result['windows_up']}, "
              f"running after {result['running_s']} s", flush=True)
        runs.append(result)
    ok = sum(r["all_windows"] for r in runs)
    write("demo", {"runs": args.runs, "all_windows_every_time": ok == args.runs, "runs_ok": ok,
                   "running_s": [r["running_s"] for r in runs],
                   "results": [{k: v for k, v in r.items() if k != "output_tail" or not r["all_windows"]}
                               for r in runs]})
    return 0 if ok == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
