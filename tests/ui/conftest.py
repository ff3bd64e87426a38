"""Fixtures for the UI tests: Kivy without a window or config, real ``smartq node`` processes.

The view-models and the client are tested against the real node (``python -m appliance.cli
node``) on 127.0.0.1: every error state they handle (400, 401, 404, 409, a printer that
refuses or jams, a node that is gone) is one the real node produces. A module shares one node
where its tests do not need a fresh one; the sample branch is written once per session and
copied (key generation and PIN hashing are the slow part).
"""

from __future__ import annotations

import os

# Must be set before anything imports kivy: no argv parsing, no ~/.kivy config, plain logging.
os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONFIG", "1")
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
os.environ.setdefault("KIVY_NO_FILELOG", "1")

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.client import NodeClient
from appliance.sample import lan_section, write_sample
from tests.appliance.procs import NodeProcess
from tests.ports import free_port, free_ports


def set_hardware(config: Path, tables: str) -> None:
    """Replace the device's ``[hardware...]`` tables with ``tables`` ("" for no hardware)."""
    kept, skipping = [], False
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            skipping = line.startswith("[hardware")
        if not skipping:
            kept.append(line)
    config.write_text("\n".join(kept) + "\n" + tables, encoding="utf-8")


def network_printer(port: int) -> str:
    """A kiosk printer at 127.0.0.1:port with short timeouts (a test waits for its faults)."""
    return f"""
[hardware.printer]
backend = "network"
host = "127.0.0.1"
port = {port}
connect_timeout = 1.0
write_timeout = 1.0
status_timeout = 0.5
poll_interval = 0
"""


def set_security(config: Path, line: str) -> None:
    """Add one key to the sample's [security] table, e.g. ``session_ttl_s = 1``."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[security]\n", f"[security]\n{line}\n", 1), encoding="utf-8")


@pytest.fixture(scope="session")
def ui_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sample branch per session (``smartq init``), copied for every node."""
    path = tmp_path_factory.mktemp("ui-sample") / "branch"
    write_sample(path)
    return path


PUBLIC_URL = "https://hq.example.org"


def with_public_url(config: Path) -> None:
    """``[hq] public_url``: each ticket gets its status page link (status_url), the kiosk's QR."""
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[hq]\npublic_url = "{PUBLIC_URL}"\n')


class NodeOnPort(NodeProcess):
    """A node on a given port (to restart a stopped node where its clients expect it)."""

    def __init__(self, config: Path, port: int, *, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "node", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
        )
        self.url = self._wait_ready()
        self.host, self.port = "127.0.0.1", port
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]


class Nodes:
    """Starts real nodes from copies of the sample branch; stops every one it started."""

    def __init__(self, template: Path, root: Path) -> None:
        self.template = template
        self.root = root
        self.started: list[NodeProcess] = []

    def start(self, device: str = "kiosk", edit: Callable[[Path], Any] | None = None) -> NodeProcess:
        dest = self.root / f"branch{len(self.started)}"
        shutil.copytree(self.template, dest)
        config = dest / f"{device}.toml"
        if edit is not None:
            edit(config)
        node = NodeProcess(config, log_path=dest / "node.log")
        self.started.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.started:
            node.stop()


@pytest.fixture
def nodes(ui_sample: Path, tmp_path: Path) -> Iterator[Nodes]:
    """Fresh nodes for one test (a known empty queue, a special printer or security)."""
    n = Nodes(ui_sample, tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


@pytest.fixture(scope="module")
def shared_node(ui_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One kiosk node (dummy printer: every ticket prints) shared by a module's tests.
    Tests using it must not depend on what earlier tests left in the queue."""
    n = Nodes(ui_sample, tmp_path_factory.mktemp("shared-node"))
    try:
        yield n.start("kiosk", edit=with_public_url)
    finally:
        n.stop_all()


@pytest.fixture
async def client(shared_node: NodeProcess) -> AsyncIterator[NodeClient]:
    c = NodeClient(shared_node.url, timeout=5.0)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def dead_client() -> AsyncIterator[NodeClient]:
    """A client of a port nobody listens on."""
    c = NodeClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        yield c
    finally:
        await c.close()


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``pred`` on the loop until it is truthy (no timing assertion: a generous limit)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > end:
            raise TimeoutError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


async def staff_client(url: str, counter: str, pin: str) -> NodeClient:
    """A client logged in at ``counter`` (for setting up a scene with another staff member)."""
    c = NodeClient(url, timeout=5.0)
    await c.login(counter, pin)
    return c


def set_lan(config: Path, table: str) -> None:
    """Replace the device's ``[lan]`` table with ``table``."""
    kept, skipping = [], False
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            skipping = line == "[lan]"
        if not skipping:
            kept.append(line)
    config.write_text("\n".join(kept) + "\n" + table, encoding="utf-8")


class Branch:
    """Real nodes of one replicating branch on 127.0.0.1 (the ``lan_loopback`` sample's [lan],
    on free ports): each device's peers are the other devices of this branch only."""

    def __init__(self, template: Path, root: Path, devices: list[str], *, lan_extra: str = "") -> None:
        self.dir = root / "branch"
        shutil.copytree(template, self.dir)
        ports = dict(zip(devices, free_ports(len(devices)), strict=True))
        for device in devices:
            peers = {d: p for d, p in ports.items() if d != device}
            set_lan(self.dir / f"{device}.toml",
                    lan_section(device, ports[device], loopback=True, peers=peers).lstrip("\n") + lan_extra)
        self.nodes: dict[str, NodeProcess] = {}
        self._stopped: set[str] = set()

    def start(self, device: str, *, port: int = 0) -> NodeProcess:
        """Start (or restart, on API ``port`` if given) ``device``'s node on its data."""
        config, log = self.dir / f"{device}.toml", self.dir / f"{device}.log"
        node = NodeOnPort(config, port, log_path=log) if port else NodeProcess(config, log_path=log)
        self.nodes[device] = node
        return node

    def pause(self, device: str) -> None:
        """SIGSTOP the node: its sockets stay open but nothing answers (a hung device)."""
        os.killpg(self.nodes[device].proc.pid, signal.SIGSTOP)
        self._stopped.add(device)

    def resume(self, device: str) -> None:
        os.killpg(self.nodes[device].proc.pid, signal.SIGCONT)
        self._stopped.discard(device)

    def stop_all(self) -> None:
        for device, node in self.nodes.items():
            if device in self._stopped and node.proc.poll() is None:
                os.killpg(node.proc.pid, signal.SIGCONT)
            node.stop()


@pytest.fixture
def branch(ui_sample: Path, tmp_path: Path) -> Iterator[Callable[..., Branch]]:
    """Makes a replicating branch of the given devices; every node it started is stopped."""
    made: list[Branch] = []

    def make(*devices: str, lan_extra: str = "") -> Branch:
        b = Branch(ui_sample, tmp_path, list(devices), lan_extra=lan_extra)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.stop_all()


def peer_status(state: dict[str, Any]) -> dict[str, str]:
    """``{peer id: status}`` from a ``GET /api/v1/state`` answer."""
    return {p["id"]: p["status"] for p in state.get("peers", [])}


async def wait_for_async(fetch: Callable[[], Any], pred: Callable[[Any], Any], timeout: float = 20.0,
                         what: str = "") -> Any:
    """Await ``fetch()`` until ``pred`` holds for its answer (a generous limit, no timing claim)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await fetch()
        if pred(value):
            return value
        if loop.time() > end:
            raise TimeoutError(f"timed out waiting for {what or pred}; last: {value!r}")
        await asyncio.sleep(0.1)
