"""Token-bucket rate limits keyed by client address (in memory, per HQ process)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute + burst) if per_minute else 0.0
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until the next token) for one request from ``key``."""
        if not self.enabled:
            return True, 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate
