"""Hybrid logical clock: 48-bit unix milliseconds + 16-bit counter in one 64-bit integer.

The clock never goes backwards: it is seeded from max(persisted value, wall clock), every
issued timestamp is larger than the previous one, and timestamps observed from peers push it
forward so that causally later events always sort later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MAX_HLC = (1 << 63) - 1  # a signed 64-bit column holds it (sync.envelope.MAX_HLC)


def wall_ms() -> int:
    """The default physical clock: unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def pack(ms: int, counter: int = 0) -> int:
    return (ms << COUNTER_BITS) | (counter & COUNTER_MASK)


def physical_ms(hlc: int) -> int:
    """The wall-clock part of a timestamp, in unix milliseconds."""
    return hlc >> COUNTER_BITS


def tick(previous: int, now_ms: int) -> int:
    """The next timestamp after `previous` at wall time `now_ms`: strictly greater than
    `previous`, and at least `now_ms`'s (what every device's clock and HQ's outbox issue)."""
    candidate = max(previous + 1, pack(now_ms))
    if candidate > MAX_HLC:  # pragma: no cover - year 6429
        raise OverflowError("hybrid logical clock overflow")
    return candidate


class HybridLogicalClock:
    """Thread-safe HLC. `clock` returns unix milliseconds and is injected for tests."""

    def __init__(self, seed: int = 0, clock: Callable[[], int] = wall_ms) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = max(seed, pack(clock()))

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A new timestamp, strictly greater than every one issued or observed before."""
        with self._lock:
            candidate = tick(self._last, self._clock())
            self._last = candidate
            return candidate

    def observe(self, remote: int) -> None:
        """Take a peer's timestamp into account so that our next one sorts after it."""
        with self._lock:
            if remote > self._last:
                self._last = remote

    def wall_ms(self) -> int:
        """The injected physical clock, for rules that need the current time."""
        return self._clock()
