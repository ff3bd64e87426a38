"""A branch LAN in network namespaces, for multi-process tests (needs root and `ip netns`).

Layout per `Network`: one "switch" namespace holding bridge ``br0`` and N host namespaces,
each joined to the bridge by a veth pair (``eth0`` in the host, ``p<i>`` on the switch).
Hosts get 10.77.<k>.<i>/24, ``lo`` up and a ``224.0.0.0/4`` route so mDNS works. Nothing is
created in the machine's own namespace: veth pairs are made inside the switch namespace and
their host end is moved straight into the host namespace, so test traffic (multicast included)
never reaches a real interface.

Every name starts with a per-run token ``sqt<pid>x<hex>-`` so parallel runs never collide;
`sweep_stale()` removes only namespaces of that prefix whose creating process is gone.

    net = Network.create(workdir)
    a, b = net.add_host("a"), net.add_host("b")
    proc = net.spawn(a, [sys.executable, "-m", "x"], env={...})   # -> Proc (logs in workdir)
    net.cut(b); net.reconnect(b)          # link down/up on b's switch port
    net.partition([a], [b])               # groups on separate bridges; net.heal() rejoins all
    net.close()                           # ends every process (by pid/process group), removes namespaces
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

PREFIX = "sqt"
_TOKEN_RE = re.compile(rf"^{PREFIX}(\d+)x[0-9a-f]+-")
_LIVE: set[Network] = set()

T = TypeVar("T")


class NetnsUnavailable(RuntimeError):
    """This machine cannot run the namespace harness (not root, no `ip netns`, no veth/bridge)."""


def _ip(*args: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why the harness cannot run here, or None when it can (probes with a throwaway namespace)."""
    if os.geteuid() != 0:
        return "network namespace tests need root (run with sudo)"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    probe = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}-probe"
    try:
        result = _ip("netns", "add", probe, check=False)
        if result.returncode != 0:
            return f"`ip netns add` failed: {result.stderr.strip()}"
        for kind in (["br0", "type", "bridge"], ["v0", "type", "veth", "peer", "name", "v1"]):
            result = _ip("-n", probe, "link", "add", *kind, check=False)
            if result.returncode != 0:
                return f"cannot create {kind[2]} links in a namespace: {result.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _pids_in(ns: str) -> list[int]:
    result = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns: str) -> None:
    """SIGKILL what is still inside one of *our* namespaces (only our tests put processes there)."""
    for pid in _pids_in(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sweep_stale() -> list[str]:
    """Delete namespaces of our prefix left by runs whose process is gone. Returns their names."""
    result = _ip("netns", "list", check=False)
    removed = []
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _TOKEN_RE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _kill_ns_processes(name)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    if removed:
        logger.warning("removed stale test namespaces: %s", removed)
    return removed


@dataclass
class Host:
    """One device's namespace. `ip` is its current address on the branch LAN."""

    name: str
    ns: str
    ip: str
    port_name: str  # its veth end on the switch
    ifname: str = "eth0"


@dataclass
class Proc:
    """A process started in a namespace; stdout/stderr go to files under the network's workdir."""

    name: str
    host: Host
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def json_lines(self) -> list[Any]:
        """Every complete stdout line that parses as JSON (others are skipped)."""
        out = []
        for line in self.stdout().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_for(
        self, predicate: Callable[[list[Any]], T | None], timeout: float, what: str = "condition"
    ) -> T:
        """Poll `predicate(json_lines)` until it returns something truthy; fail with logs after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.json_lines())
            if value:
                return value
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {what}\n{self.stderr()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: timed out after {timeout}s waiting for {what}\n"
                    f"stdout tail:\n{self.stdout()[-2000:]}\nstderr tail:\n{self.stderr()[-4000:]}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after `timeout`. Idempotent."""
        if self._closed:
            return self.popen.returncode
        self._closed = True
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:  # leader gone: its group may still hold children
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.popen.returncode


class Network:
    """One isolated branch LAN. Use `Network.create`, always `close()` (the fixture does)."""

    _subnet_counter = 0

    def __init__(self, token: str, subnet: int, workdir: Path) -> None:
        self.token = token
        self.subnet = subnet
        self.workdir = workdir
        self.switch_ns = f"{token}-sw"
        self.hosts: dict[str, Host] = {}
        self.procs: list[Proc] = []
        self._bridges = ["br0"]
        self._closed = False

    @classmethod
    def create(cls, workdir: Path) -> Network:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        token = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        cls._subnet_counter += 1
        subnet = (os.getpid() + cls._subnet_counter) % 250 + 1
        workdir.mkdir(parents=True, exist_ok=True)
        net = cls(token, subnet, workdir)
        _LIVE.add(net)
        try:
            _ip("netns", "add", net.switch_ns)
            net._sw("link", "set", "lo", "up")
            net._add_bridge("br0")
        except BaseException:
            net.close()
            raise
        return net

    # -- topology ---------------------------------------------------------------------------

    def _sw(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _ip("-n", self.switch_ns, *args, check=check)

    def _add_bridge(self, name: str) -> None:
        self._sw("link", "add", name, "type", "bridge")
        # Never let IGMP snooping decide whether mDNS flows; a dumb switch floods it.
        self._sw("link", "set", name, "type", "bridge", "mcast_snooping", "0", check=False)
        self._sw("link", "set", name, "up")

    def address(self, index: int) -> str:
        return f"10.77.{self.subnet}.{index}"

    def add_host(self, name: str) -> Host:
        """Create a host namespace joined to the bridge, addressed 10.77.<k>.<n>/24."""
        if name in self.hosts or not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise ValueError(f"bad or duplicate host name {name!r} (1-8 of [a-z0-9])")
        index = len(self.hosts) + 1
        host = Host(name=name, ns=f"{self.token}-{name}", ip=self.address(index), port_name=f"p{index}")
        _ip("netns", "add", host.ns)
        self.hosts[name] = host
        _ip("-n", host.ns, "link", "set", "lo", "up")
        self._sw("link", "add", host.port_name, "type", "veth", "peer", "name", host.ifname, "netns", host.ns)
        self._sw("link", "set", host.port_name, "master", "br0")
        self._sw("link", "set", host.port_name, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", host.ifname)
        _ip("-n", host.ns, "link", "set", host.ifname, "up")
        _ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", host.ifname)
        return host

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def cut(self, *hosts: Host) -> None:
        """Unplug hosts: their switch port goes down (the host sees NO-CARRIER)."""
        for host in hosts:
            self._sw("link", "set", host.port_name, "down")

    def reconnect(self, *hosts: Host) -> None:
        """Plug hosts back in."""
        for host in hosts:
            self._sw("link", "set", host.port_name, "up")

    def partition(self, *groups: Iterable[Host]) -> None:
        """Split the LAN: each group gets its own bridge; hosts in no group stay on br0."""
        for index, group in enumerate(groups, start=1):
            bridge = f"br{index}"
            if bridge not in self._bridges:
                self._add_bridge(bridge)
                self._bridges.append(bridge)
            for host in group:
                self._sw("link", "set", host.port_name, "master", bridge)

    def heal(self) -> None:
        """Undo `partition` and `cut`: every port on br0 and up."""
        for host in self.hosts.values():
            self._sw("link", "set", host.port_name, "master", "br0")
            self._sw("link", "set", host.port_name, "up")

    def readdress(self, host: Host, index: int) -> str:
        """Give a host a new address on the LAN (a new DHCP lease); returns it."""
        new_ip = self.address(index)
        # Delete first: removing a primary address also removes secondaries of its subnet.
        _ip("-n", host.ns, "addr", "del", f"{host.ip}/24", "dev", host.ifname)
        _ip("-n", host.ns, "addr", "add", f"{new_ip}/24", "dev", host.ifname)
        _ip("-n", host.ns, "route", "replace", "224.0.0.0/4", "dev", host.ifname)
        host.ip = new_ip
        return new_ip

    # -- processes --------------------------------------------------------------------------

    def run(
        self, host: Host, argv: Sequence[str], *, timeout: float = 30, check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command in a host namespace and wait for it."""
        result = subprocess.run(
            ["ip", "netns", "exec", host.ns, *argv], capture_output=True, text=True,
            timeout=timeout, check=False, env=self._env(env),
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{argv} in {host.name} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def spawn(
        self, host: Host, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        name: str | None = None, cwd: Path | None = None,
    ) -> Proc:
        """Start a long-running process in a host namespace, in its own process group."""
        if self._closed:
            raise RuntimeError("network is closed")
        label = name or f"{host.name}-{Path(argv[0]).name}-{len(self.procs)}"
        out, err = self.workdir / f"{label}.out", self.workdir / f"{label}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *argv],  # ip execs argv: same pid
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                env=self._env(env), cwd=cwd, start_new_session=True,
            )
        proc = Proc(label, host, popen, out, err)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra or {})
        return env

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        """End every process we started (by process group), then remove every namespace."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:
                logger.exception("stopping %s failed", proc.name)
        for ns in [*(h.ns for h in self.hosts.values()), self.switch_ns]:
            _kill_ns_processes(ns)
            _ip("netns", "del", ns, check=False)
        _LIVE.discard(self)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_leftovers() -> None:
    """Backstop for interrupted runs: whatever a fixture did not close is closed at exit."""
    for net in list(_LIVE):
        net.close()
