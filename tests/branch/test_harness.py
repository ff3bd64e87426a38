"""The namespace harness itself: isolation, cut/partition/heal, and teardown that leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .netns import PREFIX, Host, Network, _ip, _pid_alive, sweep_stale


REACH = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def listen(lan: Network, host: Host, python: str, port: int = 9000) -> None:
    proc = lan.spawn(host, [python, "-m", "http.server", "--bind", host.ip, str(port)], name=f"http-{host.name}")
    deadline = time.monotonic() + 10
    while lan.run(host, [python, "-c", REACH, host.ip, str(port)], check=False).returncode != 0:
        assert proc.alive() and time.monotonic() < deadline, proc.stderr()
        time.sleep(0.1)


def reaches(lan: Network, src: Host, dst: Host, python: str, port: int = 9000) -> bool:
    return lan.run(src, [python, "-c", REACH, dst.ip, str(port)], check=False).returncode == 0


def namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}


@pytest.mark.netns
@pytest.mark.slow
def test_hosts_are_isolated_namespaces_with_their_own_addresses(lan, python) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    assert a.ns.startswith(lan.token) and lan.token.startswith(PREFIX)
    addresses = lan.run(a, ["ip", "-4", "-o", "addr", "show"]).stdout
    assert a.ip in addresses and b.ip not in addresses
    routes = lan.run(a, ["ip", "route", "show"]).stdout
    assert "224.0.0.0/4 dev eth0" in routes
    # This machine's own interfaces are not visible inside.
    links = lan.run(a, ["ip", "-o", "link", "show"]).stdout
    assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} == {"lo", "eth0"}


@pytest.mark.netns
@pytest.mark.slow
def test_cut_partition_and_heal_change_who_reaches_whom(lan, python) -> None:
    a, b, c, d = (lan.add_host(n) for n in "abcd")
    for host in (b, c, d):
        listen(lan, host, python)
    assert reaches(lan, a, b, python) and reaches(lan, a, c, python)

    lan.cut(b)
    assert not reaches(lan, a, b, python)
    assert reaches(lan, a, c, python)
    lan.reconnect(b)
    assert reaches(lan, a, b, python)

    lan.partition([a, b], [c, d])
    assert reaches(lan, a, b, python) and reaches(lan, c, d, python)
    assert not reaches(lan, a, c, python) and not reaches(lan, b, d, python)

    lan.heal()
    assert reaches(lan, a, d, python) and reaches(lan, b, c, python)


@pytest.mark.netns
@pytest.mark.slow
def test_close_ends_every_process_and_removes_every_namespace(netns_available, tmp_path: Path, python) -> None:
    net = Network.create(tmp_path / "lan")
    try:
        a = net.add_host("a")
        # A parent that ignores SIGTERM and a child of it: both are ours and both must go.
        proc = net.spawn(a, ["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], name="stubborn")
        deadline = time.monotonic() + 10
        while not proc.stdout().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(proc.stdout().split()[0])
        ours = {net.switch_ns, a.ns}
        assert ours <= namespaces()
    finally:
        net.close()
    assert not proc.alive()
    deadline = time.monotonic() + 5
    while _pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(child)
    assert not ours & namespaces()


@pytest.mark.netns
@pytest.mark.slow
def test_sweeper_removes_only_stale_namespaces_of_our_prefix(netns_available) -> None:
    # A pid that surely is not running: a child we started and reaped.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = f"{PREFIX}{dead_pid}xdead-sw"
    live = f"{PREFIX}{os.getpid()}xbeef-sw"
    foreign = f"zz{os.getpid()}-not-ours"
    for name in (stale, live, foreign):
        _ip("netns", "add", name)
    try:
        removed = sweep_stale()
        assert stale in removed
        remaining = namespaces()
        assert stale not in remaining and {live, foreign} <= remaining
    finally:
        for name in (stale, live, foreign):
            _ip("netns", "del", name, check=False)


def test_harness_reports_why_it_cannot_run_without_root_or_ip(monkeypatch) -> None:
    from . import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "root" in (netns.unavailable_reason() or "")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None)
    assert "not installed" in (netns.unavailable_reason() or "")
