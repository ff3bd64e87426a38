"""Loopback ports for servers a test starts in another process (a node, HQ, PostgreSQL, a relay).

The child binds the port some time after the test chose it. A port from the kernel's own
choice (bind to port 0, then close) lies in the ephemeral range (32768-60999 on Debian), from
which the kernel also takes the local port of every outgoing connection made meanwhile, by any
process: one of them can take it first, and the child then fails with "address already in
use". These ports come from below that range instead, where only listeners bind, are checked
free by binding them, and are never handed out twice by one test process.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000  # below the ephemeral range; above the well-known and the demo's 84xx
_given: set[int] = set()
_rng = random.SystemRandom()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    """A loopback port nothing listens on now: ``preferred`` if it is free, else one from
    LOW-HIGH that this process has not handed out before."""
    if preferred is not None and preferred not in _given and _bindable(preferred):
        _given.add(preferred)
        return preferred
    for _ in range(1000):
        port = _rng.randrange(LOW, HIGH)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {LOW}-{HIGH}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports."""
    return [free_port() for _ in range(n)]
