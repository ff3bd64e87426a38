"""``make demo`` / ``python -m appliance.demo``: a whole branch alive on this machine.

Writes a sample branch (``smartq init``) into ./demo, starts HQ (``python -m hq``, port 8400)
with that branch, its devices and services registered (``--no-hq`` leaves it out), starts one
node per device (kiosk, display, two counters) on 127.0.0.1, each linked to HQ, opens each UI in its own window, and keeps it busy with
simulated citizens (tickets at a random pace) and simulated staff (call, start, complete).
Without $DISPLAY it starts its own Xvfb and saves screenshots of each window into a folder it
names on stdout. A simulated citizen also uses the real kiosk window by touches now and then
(``kiosk_ui --autopilot``), so the screenshots show every screen of the kiosk's flow.

The demo watches what it started: it says "SmartQ demo running" only once every window has
shown its first frame, and says loudly (stderr, with the end of that program's log) when a
window or a node dies; it then exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.client import NodeClient, NodeError

#: What each UI logs once its window drew its first frame (ui_common.app.WINDOW_UP; not
#: imported: appliance must not import the UI packages).
WINDOW_UP = "SmartQ window up"

logger = logging.getLogger(__name__)

# (device, role, port, counter ids this device's UI shows, staff PIN for its counter)
DEVICES = [
    ("kiosk", "kiosk", 8401, [], None),
    ("display", "display", 8402, [], None),
    ("counter-1", "counter", 8403, ["c1"], "1234"),
    ("counter-2", "counter", 8404, ["c2"], "2345"),
]
LANGUAGES = ["en", "fr", "rw", "sw", "es"]
HQ_PORT = 8400
HQ_ADMIN = ("demo@smartq.test", "demo-password-123")
HQ_TOML = f"""# SmartQ HQ for the demo (docs/hq.md lists every setting).
[hq]
host = "127.0.0.1"
port = {HQ_PORT}
data_dir = "data"
cookie_secure = false
bootstrap_admin_email = "{HQ_ADMIN[0]}"
bootstrap_admin_password = "{HQ_ADMIN[1]}"
booking_rate_per_minute = 0
"""

#: Called with the running demo once the branch is up; HQ plugs in here when it exists.
HQ_HOOK: Callable[["Demo"], Awaitable[None]] | None = None


@dataclass
class Demo:
    folder: Path
    rng: random.Random
    pace_s: float = 6.0
    single_node: str = "auto"
    screenshot_every: float = 10.0
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    screenshots: Path | None = None
    display_env: dict[str, str] = field(default_factory=dict)
    with_hq: bool = True
    hq_url: str | None = None
    autopilot_s: float = 25.0
    #: Programs that died or never came up, each with a one-line reason.
    problems: list[str] = field(default_factory=list)
    stopping: bool = False

    # --- processes ------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.folder / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        logger.info("started %s (pid %d)", name, proc.pid)
        return proc

    def log_tail(self, name: str, lines: int = 8) -> str:
        path = self.folder / "logs" / f"{name}.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def loud(self, problem: str, name: str) -> None:
        """A problem nobody must miss: on stderr, framed, with the end of that log."""
        self.problems.append(problem)
        bar = "!" * 78
        print(f"\n{bar}\nSmartQ DEMO PROBLEM: {problem}\n  log: {self.folder / 'logs' / (name + '.log')}\n"
              f"{self.log_tail(name)}\n{bar}\n", file=sys.stderr, flush=True)

    async def wait_windows(self, timeout: float = 120.0) -> list[str]:
        """Wait until every UI logged that its window is up; a UI that exits first, or
        stays silent past ``timeout``, is reported loudly. Returns the windows up."""
        pending = {name: proc for name, proc in self.procs if name.startswith("ui-")}
        up: list[str] = []
        deadline = time.monotonic() + timeout
        while pending:
            for name, proc in list(pending.items()):
                log = self.folder / "logs" / f"{name}.log"
                if log.exists() and WINDOW_UP in log.read_text(encoding="utf-8", errors="replace"):
                    up.append(name)
                    del pending[name]
                elif proc.poll() is not None:
                    self.loud(f"window {name} (pid {proc.pid}) exited with status {proc.returncode} "
                              "before showing", name)
                    del pending[name]
            if pending and time.monotonic() > deadline:
                for name, proc in pending.items():
                    self.loud(f"window {name} (pid {proc.pid}) did not show within {timeout:g} s", name)
                break
            await asyncio.sleep(0.2)
        return up

    async def watch(self) -> None:
        """Every second: has anything the demo started died? Say so loudly, once each."""
        told: set[int] = set()
        while True:
            await asyncio.sleep(1.0)
            for name, proc in self.procs:
                if proc.poll() is not None and proc.pid not in told and not self.stopping:
                    told.add(proc.pid)
                    self.loud(f"{name} (pid {proc.pid}) died with status {proc.returncode}", name)

    def stop_all(self) -> None:
        self.stopping = True
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not stop; killing it", name, proc.pid)
                proc.kill()
                proc.wait()
        self.procs.clear()

    # --- set-up -----------------------------------------------------------------------------

    def init_branch(self) -> None:
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        if not (self.folder / "kiosk.toml").exists():
            subprocess.run([sys.executable, "-m", "appliance.cli", "init", "--lan-loopback", str(self.folder)],
                           check=True, stdout=subprocess.DEVNULL)

    async def start_hq(self) -> None:
        """HQ in its own process, the demo branch registered there (``python -m hq.enroll``, a
        process boundary: appliance does not import hq), `[hq]` in every device config."""
        import aiohttp

        folder = self.folder / "hq"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "hq.toml"
        config.write_text(HQ_TOML, encoding="utf-8")
        self.spawn("hq", [sys.executable, "-m", "hq", "--config", str(config)])
        self.hq_url = url = f"http://127.0.0.1:{HQ_PORT}"
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("HQ did not come up; see demo/logs/hq.log")
                await asyncio.sleep(0.2)
            async with session.post(f"{url}/api/v1/auth/tokens", json={"email": HQ_ADMIN[0], "password": HQ_ADMIN[1]}) as r:
                token = (await r.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{url}/api/v1/orgs", json={"id": "demo", "name": "SmartQ demo"}, headers=auth) as r:
                if r.status not in (201, 409):
                    raise SystemExit(f"HQ refused the demo organization: {await r.text()}")
        enrolled = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "hq.enroll", "--hq", url, "--token", token, "--org", "demo",
                             "--hours", "00:00-23:45", "--days", "0-6", str(self.folder / "kiosk.toml")],
            capture_output=True, text=True)
        if enrolled.returncode != 0:
            raise SystemExit(f"could not register the demo branch at HQ: {enrolled.stderr.strip()}")
        await self.name_staff_at_hq(url, auth)
        # public_url: each ticket's QR and status_url open its live page on this HQ.
        section = enrolled.stdout.strip() + f'\npublic_url = "{url}"\ninterval_s = 2.0\n'
        for device, *_ in DEVICES:
            path = self.folder / f"{device}.toml"
            text = path.read_text(encoding="utf-8")
            if "\n[hq]" not in text:
                path.write_text(text.rstrip() + "\n\n" + section, encoding="utf-8")
        print(f"HQ running: {url} (admin {HQ_ADMIN[0]} / {HQ_ADMIN[1]})", flush=True)

    async def name_staff_at_hq(self, url: str, auth: dict[str, str]) -> None:
        """The branch's staff by name at HQ (its console shows who serves where), without
        their PINs: the counters keep checking those from their own config. Only staff HQ
        does not know yet: one that HQ manages keeps its name and PIN."""
        import aiohttp

        from appliance.config import load_config

        config = load_config(self.folder / "kiosk.toml")
        base = f"{url}/api/v1/branches/{config.branch_id}/staff"
        async with aiohttp.ClientSession(headers=auth) as session:
            async with session.get(base) as r:
                if r.status != 200:  # not knowing whom HQ manages, change nobody
                    logger.warning("HQ did not list the branch's staff: %s", await r.text())
                    return
                known = {s["id"] for s in (await r.json())["staff"]}
            for member in config.staff:
                if member.id in known:
                    continue
                async with session.put(f"{base}/{member.id}", json={"name": member.name}) as r:
                    if r.status != 200:
                        logger.warning("HQ did not take staff %s: %s", member.id, await r.text())

    async def start_nodes(self) -> None:
        for device, _, port, _, _ in DEVICES:
            self.spawn(f"node-{device}", [sys.executable, "-m", "appliance.cli", "node",
                                          "--config", str(self.folder / f"{device}.toml")])
            self.urls[device] = f"http://127.0.0.1:{port}"
        for device, url in self.urls.items():
            await wait_healthy(url, 30)

    async def replicating(self) -> bool:
        """Do the nodes see each other? (Replication is another team's work in progress.)"""
        async with NodeClient(self.urls["kiosk"]) as client:
            for _ in range(10):
                try:
                    if (await client.state()).get("peers"):
                        return True
                except NodeError:
                    pass
                await asyncio.sleep(0.5)
        return False

    def start_display_server(self) -> None:
        if os.environ.get("DISPLAY"):
            return
        if shutil.which("Xvfb") is None:
            raise SystemExit("no $DISPLAY and no Xvfb: install xvfb or run inside a desktop session")
        number = next(n for n in range(70, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                      and not Path(f"/tmp/.X{n}-lock").exists())
        self.spawn("xvfb", ["Xvfb", f":{number}", "-screen", "0", "1920x1280x24", "-nolisten", "tcp"])
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if time.monotonic() > deadline:
                raise SystemExit("Xvfb did not start")
            time.sleep(0.05)
        self.display_env = {"DISPLAY": f":{number}"}
        self.screenshots = self.folder / "screenshots" / time.strftime("%Y%m%d-%H%M%S")
        self.screenshots.mkdir(parents=True, exist_ok=True)
        print(f"no $DISPLAY: windows run on Xvfb :{number}; screenshots every "
              f"{self.screenshot_every:g} s in {self.screenshots}", flush=True)

    def ui_url(self, device: str, shared: bool) -> str:
        return self.urls["kiosk"] if shared else self.urls[device]

    def start_uis(self, shared: bool) -> None:
        shots = (["--screenshot-dir", str(self.screenshots), "--screenshot-every",
                  str(self.screenshot_every)] if self.screenshots else [])
        env = {**self.display_env, "KIVY_NO_ARGS": "1", "KIVY_NO_FILELOG": "1"}
        py = [sys.executable, "-m"]
        pilot = ["--autopilot", str(self.autopilot_s)] if self.autopilot_s > 0 else []
        self.spawn("ui-kiosk", [*py, "kiosk_ui", "--node", self.ui_url("kiosk", shared),
                                "--size", "600x960", *pilot, *shots], env)
        self.spawn("ui-display", [*py, "display_ui", "--node", self.ui_url("display", shared),
                                  # The ticker shows the branch's notices in each language; an
                                  # arrow reads the same in every language, a word would not.
                                  "--size", "1280x720", "--direction", "c1=←", "--direction", "c2=→", *shots], env)
        for device, _, _, counters, pin in DEVICES:
            for counter in counters:
                self.spawn(f"ui-{counter}", [*py, "counter_ui", "--node", self.ui_url(device, shared),
                                             "--counter", counter, "--pin", str(pin),
                                             "--size", "1100x700", *shots], env)

    # --- simulation -------------------------------------------------------------------------

    async def citizens(self, url: str) -> None:
        """Tickets at a random (Poisson) pace, random service, language and priority."""
        async with NodeClient(url) as client:
            services: list[str] = []
            while True:
                try:
                    if not services:
                        services = [s["id"] for s in (await client.state())["services"]]
                    t = await client.issue_ticket(
                        self.rng.choice(services),
                        priority=1 if self.rng.random() < 0.1 else 0,
                        language=self.rng.choice(LANGUAGES))
                    logger.info("citizen took %s", t.get("label"))
                except NodeError as err:
                    logger.warning("citizen: %s", err)
                await asyncio.sleep(self.rng.expovariate(1 / self.pace_s))

    async def staff(self, url: str, counter: str, pin: str) -> None:
        """One staff member: open the counter, then call, start and complete, forever."""
        async with NodeClient(url) as client:
            while True:
                try:
                    await client.login(counter, pin)
                    await client.set_counter_status(counter, "open")
                    while True:
                        t = await client.call_next(counter)
                        if t is None:
                            await asyncio.sleep(3)
                            continue
                        await asyncio.sleep(self.rng.uniform(2, 5))
                        await client.ticket_action(counter, t["id"], "start")
                        await asyncio.sleep(self.rng.uniform(6, 14))
                        await client.ticket_action(counter, t["id"], "complete")
                        await asyncio.sleep(self.rng.uniform(1, 3))
                except NodeError as err:
                    logger.warning("staff at %s: %s", counter, err)
                    await asyncio.sleep(3)

    async def run(self, with_ui: bool, duration: float | None) -> None:
        self.init_branch()
        if self.with_hq:
            await self.start_hq()
        await self.start_nodes()
        shared = self.single_node == "yes" or (
            self.single_node == "auto" and not await self.replicating())
        if shared:
            logger.warning("the nodes do not replicate to each other yet: every UI and simulator "
                           "uses the kiosk's node (%s)", self.urls["kiosk"])
        windows: list[str] = []
        if with_ui:
            self.start_display_server()
            self.start_uis(shared)
            windows = await self.wait_windows()
            if self.problems:
                raise DemoFailed("; ".join(self.problems))
        tasks = [asyncio.create_task(self.citizens(self.ui_url("kiosk", shared))),
                 asyncio.create_task(self.watch())]
        for device, _, _, counters, pin in DEVICES:
            for counter in counters:
                tasks.append(asyncio.create_task(self.staff(self.ui_url(device, shared), counter, str(pin))))
        hook = HQ_HOOK
        if hook is None and self.hq_url is not None:
            hook = online_citizens
        if hook is not None:
            tasks.append(asyncio.create_task(hook(self)))
        print("SmartQ demo running: " + ", ".join(f"{d} {u}" for d, u in self.urls.items())
              + (f"; windows up: {', '.join(w.removeprefix('ui-') for w in windows)}" if windows else "")
              + ". Ctrl-C stops it.", flush=True)
        try:
            if duration:
                await asyncio.sleep(duration)
            else:
                await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class DemoFailed(Exception):
    """A window or a node of the demo did not come up."""


async def online_citizens(demo: Demo) -> None:
    """Every minute or so a citizen books today's next slot at HQ; the booking travels down
    the link and, a little later, the citizen checks in at the kiosk with the QR token."""
    import aiohttp

    assert demo.hq_url is not None
    async with aiohttp.ClientSession() as session, NodeClient(demo.urls["kiosk"]) as kiosk:
        while True:
            await asyncio.sleep(demo.rng.uniform(30, 90))
            try:
                branch = (await kiosk.state())["branch"]
                from datetime import datetime
                from zoneinfo import ZoneInfo
                today = datetime.now(ZoneInfo(branch["timezone"])).date().isoformat()
                async with session.get(f"{demo.hq_url}/api/v1/public/branches/{branch['id']}/availability",
                                       params={"service": "general", "date": today}) as r:
                    slots = [s for s in (await r.json()).get("slots", []) if s["available"]]
                if not slots:
                    continue
                async with session.post(f"{demo.hq_url}/api/v1/public/bookings", json={
                        "branch": branch["id"], "service": "general", "start": slots[0]["start"],
                        "email": "citizen@example.org"}) as r:
                    booking = await r.json()
                if "token" not in booking:
                    logger.warning("online citizen: %s", booking)
                    continue
                logger.info("online citizen booked %s at %s", booking["code"], booking["start"])
                await asyncio.sleep(demo.rng.uniform(5, 20))
                t = await kiosk.issue_ticket(None, booking_code=booking["token"])
                logger.info("online citizen %s checked in as %s", booking["code"], t.get("label"))
            except (NodeError, aiohttp.ClientError, KeyError, ValueError) as err:
                logger.warning("online citizen: %s", err)


async def wait_healthy(url: str, timeout: float) -> None:
    async with NodeClient(url, timeout=1) as client:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await client.request("GET", "/state")
                return
            except NodeError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"node at {url} did not come up; see demo/logs/")
                await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.demo", description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("demo"), help="demo folder (gitignored)")
    p.add_argument("--no-ui", action="store_true", help="nodes and simulators only")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--pace", type=float, default=6.0, help="mean seconds between citizens")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--single-node", choices=("auto", "yes", "no"), default="auto",
                   help="point every UI at the kiosk's node (auto: when nodes do not replicate)")
    p.add_argument("--screenshot-every", type=float, default=10.0)
    p.add_argument("--no-hq", action="store_true", help="the branch alone, without HQ")
    p.add_argument("--autopilot", type=float, default=25.0, metavar="S",
                   help="a simulated citizen takes a ticket by touching the kiosk window about every "
                        "S seconds (0: never)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo = Demo(args.dir.resolve(), random.Random(args.seed), pace_s=args.pace,
                single_node=args.single_node, screenshot_every=args.screenshot_every, with_hq=not args.no_hq,
                autopilot_s=args.autopilot)

    loop = asyncio.new_event_loop()
    main_task = loop.create_task(demo.run(not args.no_ui, args.duration))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        loop.run_until_complete(main_task)
    except (asyncio.CancelledError, KeyboardInterrupt):
        pass
    except DemoFailed:
        pass  # already said loudly
    finally:
        demo.stop_all()
        loop.close()
    if demo.problems:
        print(f"SmartQ demo stopped with {len(demo.problems)} problem(s): " + "; ".join(demo.problems),
              file=sys.stderr, flush=True)
        return 1
    print("SmartQ demo stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
