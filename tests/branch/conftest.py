"""Fixtures for multi-process tests in network namespaces (see tests/branch/netns.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import Network, sweep_stale, unavailable_reason

REPO = Path(__file__).resolve().parents[2]


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def netns_available() -> Iterator[None]:
    """Skip (with the reason) unless this machine can make namespaces; sweep our stale ones.

    While namespace tests run, SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so fixture
    finalizers and the atexit backstop still remove namespaces and end processes.
    """
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    sweep_stale()
    installed = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if installed:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def lan(netns_available: None, tmp_path: Path) -> Iterator[Network]:
    """An empty branch LAN; add hosts with `lan.add_host(name)`. Always torn down, logs in tmp_path."""
    net = Network.create(tmp_path / "lan")
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def python_env() -> dict[str, str]:
    """Environment for Python processes in the namespaces: this checkout importable, no .pyc races."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
def python() -> str:
    return sys.executable
