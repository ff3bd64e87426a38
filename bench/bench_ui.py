"""UI figures: counter call -> display widget showing it (p50/p99); cold start and RSS per app.

``python -m bench.bench_ui [--calls 200]`` writes bench/results/ui.json. Runs a real node and
real Kivy windows on a private Xvfb. Times come from CLOCK_MONOTONIC, which is one clock for
every process on the machine, so the parent's "call sent" and the display's "drawn" compare.

- call -> shown: the parent POSTs call-next to the node; the display app (own process,
  following the node's stream) reports the first window buffer flip after its view-model
  took the call, i.e. the frame that shows it.
- day20: the same call -> frame on a branch of 20 open counters with `--waiting` (2,000)
  tickets waiting, and the kiosk's tap on a service -> the frame of the confirmation screen
  with the new number (a real Kivy kiosk window, the tap simulated in its process).
- cold start: process spawn -> first frame drawn with the node's state applied.
- RSS: VmRSS of each app 3 s after that first frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import latency_summary, rss_mb, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APPS = ("kiosk", "display", "counter")


# --- child side: one app in its own window ----------------------------------------------------

def child(app_name: str, node: str) -> None:
    """Run one app; print READY <monotonic> after the first frame with state, and for the
    display SHOWN <label> <monotonic> after each call is on screen."""
    from kiosk_ui.__main__ import configure_kivy

    size = {"kiosk": "800x1280", "display": "1920x1080", "counter": "1280x800"}[app_name]
    configure_kivy(False, size, app_name)
    from kivy.clock import Clock

    def say(*words: object) -> None:
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()

    def after_frame(fn):  # noqa: ANN001, ANN202
        # Scheduled during frame N's callbacks -> runs in frame N+1's tick, after N was drawn.
        return lambda *_: Clock.schedule_once(lambda dt: fn(), 0)

    if app_name == "display":
        from display_ui.app import build, run

        holder: dict = {}

        from kivy.core.window import Window

        waiting_flip: list[str] = []

        def shown(label: str) -> None:
            waiting_flip.append(label)

        def on_flip(*_: object) -> None:
            # The first buffer flip after the view-model took the call: it is on screen.
            while waiting_flip:
                say("SHOWN", waiting_flip.pop(0), repr(time.monotonic()))

        Window.bind(on_flip=on_flip)

        app, client = build(node, on_call_shown=shown)
        holder["vm"] = app.vm
        ready = lambda: not app.vm.offline  # noqa: E731
    elif app_name == "kiosk":
        from kiosk_ui.app import build, run  # type: ignore[assignment]

        app, client = build(node)  # type: ignore[assignment]
        ready = lambda: bool(app.vm.services)  # noqa: E731
    else:
        from counter_ui.app import build, run  # type: ignore[assignment]

        app, client = build(node, "c1", login_required=False)  # type: ignore[assignment]
        ready = lambda: not app.vm.offline  # noqa: E731

    if app_name == "kiosk":
        from kivy.core.window import Window

        tapped: dict = {}

        def kiosk_flip(*_: object) -> None:
            # The first flip with the confirmation screen and the new number: the citizen sees it.
            vm = app.vm
            if tapped and vm.screen == "confirm" and vm.ticket_label and vm.ticket_label != tapped.get("before"):
                say("SHOWN", vm.ticket_label, repr(tapped.pop("t0")), repr(time.monotonic()))
                tapped.clear()

        Window.bind(on_flip=kiosk_flip)

        def tap(service: str) -> None:
            vm = app.vm
            vm.reset()
            vm.choose_language("en")
            vm.choose_service(service)
            tapped.update(before=vm.ticket_label, t0=time.monotonic())
            vm.take_ticket()  # what the "Take a ticket" button's on_release does

    async def report_ready() -> None:
        while not (app.root is not None and ready()):
            await asyncio.sleep(0.005)
        done = asyncio.Event()
        Clock.schedule_once(lambda dt: Clock.schedule_once(lambda dt2: done.set(), 0), 0)
        await done.wait()
        say("READY", repr(time.monotonic()))
        loop = asyncio.get_running_loop()
        while True:  # a line "TAP <service>" (the kiosk) or an empty line (stop)
            words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not words:
                break
            if words[0] == "TAP" and app_name == "kiosk":
                Clock.schedule_once(lambda dt, s=words[1]: tap(s), 0)
        app.stop()

    asyncio.run(run(app, client, report_ready()))


# --- parent side ------------------------------------------------------------------------------

def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    number = next(n for n in range(150, 250) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1920x1280x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        time.sleep(0.05)
    return proc, f":{number}"


def twenty_counters(config: Path) -> None:
    """The sample branch with 20 counters over its three services, no staff login."""
    text = config.read_text().replace("require_staff_login = true", "require_staff_login = false")
    services = ["general", "payments", "documents"]
    for i in range(4, 21):
        chosen = [services[i % 3], services[(i + 1) % 3]]
        text += f'\n[[counters]]\nid = "c{i}"\nname = "Counter {i}"\nservices = ["{chosen[0]}", "{chosen[1]}"]\n'
    config.write_text(text)


def start_node(folder: Path, *, counters20: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    subprocess.run([sys.executable, "-m", "appliance.cli", "init", str(folder)], check=True,
                   capture_output=True, cwd=REPO)
    if counters20:
        twenty_counters(folder / "kiosk.toml")
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "node", "--config",
                             str(folder / "kiosk.toml"), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=folder)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode()
        if line.startswith("SMARTQ_LISTENING"):
            return proc, line.split()[1]
    raise RuntimeError("node did not start")


def api(node: str, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict | None:
    req = urllib.request.Request(f"{node}/api/v1{path}", method=method,
                                 data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def spawn_app(name: str, node: str, display: str) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "DISPLAY": display, "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1",
           "KIVY_NO_FILELOG": "1", "KIVY_LOG_MODE": "PYTHON"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_ui", "--child", name, "--node", node],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=REPO, env=env)
    return proc, t0


def read_line(proc: subprocess.Popen[bytes], prefix: str) -> list[str]:
    assert proc.stdout is not None
    for raw in proc.stdout:
        words = raw.decode().split()
        if words and words[0] == prefix:
            return words
    raise RuntimeError(f"{prefix} never came")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            proc.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError, AssertionError):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def twenty_counter_day(folder: Path, display: str, calls: int, waiting: int,
                       procs: list[subprocess.Popen[bytes]]) -> dict:
    """On a 20-counter branch with `waiting` tickets: display call -> frame, and kiosk tap -> screen."""
    node_proc, node = start_node(folder, counters20=True)
    procs.append(node_proc)
    services = ["general", "payments", "documents"]
    for i in range(waiting):
        api(node, "POST", "/tickets", {"service": services[i % 3]})
    counters = [f"c{i}" for i in range(1, 21)]
    for c in counters:
        api(node, "POST", f"/counters/{c}/open")
    proc, _ = spawn_app("display", node, display)
    procs.append(proc)
    read_line(proc, "READY")
    call_latencies = []
    for i in range(calls):
        counter = counters[i % 20]
        t0 = time.monotonic()
        called = api(node, "POST", f"/counters/{counter}/call-next")
        assert called is not None
        words = read_line(proc, "SHOWN")
        assert words[1] == called["label"], (words, called["label"])
        call_latencies.append(float(words[2]) - t0)
        api(node, "POST", "/tickets", {"service": services[i % 3]})  # the line holds its length
    stop(proc)
    kiosk, _ = spawn_app("kiosk", node, display)
    procs.append(kiosk)
    read_line(kiosk, "READY")
    taps = []
    assert kiosk.stdin is not None
    for i in range(calls):
        kiosk.stdin.write(f"TAP {services[i % 3]}\n".encode())
        kiosk.stdin.flush()
        words = read_line(kiosk, "SHOWN")
        taps.append(float(words[3]) - float(words[2]))
    stop(kiosk)
    return {"counters": 20, "waiting": waiting, "call_to_display": latency_summary(call_latencies),
            "kiosk_tap_to_screen": latency_summary(taps)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=APPS)
    p.add_argument("--node")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--waiting", type=int, default=2000, help="tickets waiting on the 20-counter day")
    args = p.parse_args()
    if args.child:
        child(args.child, args.node)
        return 0

    xvfb, display = start_xvfb()
    procs: list[subprocess.Popen[bytes]] = [xvfb]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            node_proc, node = start_node(Path(tmp) / "branch")
            procs.append(node_proc)
            figures: dict = {"apps": {}}
            for name in APPS:
                starts, rss = [], []
                for _ in range(args.starts):
                    proc, t0 = spawn_app(name, node, display)
                    ready = float(read_line(proc, "READY")[1])
                    starts.append(ready - t0)
                    time.sleep(3)
                    rss.append(rss_mb(proc.pid))
                    stop(proc)
                figures["apps"][name] = {"cold_start": latency_summary(starts),
                                         "rss_mb": max(rss)}

            token = api(node, "POST", "/staff/login", {"counter": "c1", "pin": "1234"})["token"]  # type: ignore[index]
            api(node, "POST", "/counters/c1/open", token=token)
            proc, _ = spawn_app("display", node, display)
            procs.append(proc)
            read_line(proc, "READY")
            latencies = []
            for _ in range(args.calls):
                api(node, "POST", "/tickets", {"service": "general"})
                t0 = time.monotonic()
                called = api(node, "POST", "/counters/c1/call-next", token=token)
                assert called is not None
                words = read_line(proc, "SHOWN")
                assert words[1] == called["label"], (words, called["label"])
                latencies.append(float(words[2]) - t0)
                api(node, "POST", f"/counters/c1/tickets/{called['id']}/start", token=token)
                api(node, "POST", f"/counters/c1/tickets/{called['id']}/complete", token=token)
            figures["call_to_display"] = latency_summary(latencies)
            stop(proc)
            figures["day20"] = twenty_counter_day(Path(tmp) / "day20", display, args.calls, args.waiting, procs)
            figures["notes"] = ("one real node; display at 1920x1080 on Xvfb (Mesa llvmpipe, software "
                                "GL); latency = POST call-next sent -> first buffer flip after the display "
                                "view-model took the call; day20: a branch of 20 open counters and "
                                f"{args.waiting} waiting, kiosk tap = the Take-a-ticket action -> first flip "
                                "showing the confirmation with the new number")
            write("ui", figures)
    finally:
        for proc in reversed(procs):
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
