"""Token-bucket rate limits keyed by client address, kept in the database.

The buckets live in the ``rate_buckets`` table, so every HQ process (SO_REUSEPORT workers on
one host, or many hosts behind a load balancer on PostgreSQL) draws from the same bucket: a
client cannot multiply its allowance by the number of processes. Each check is one small
write transaction (it joins SQLite's group commit; on PostgreSQL it is SERIALIZABLE, so two
processes taking the last token at once are serialized and one is refused).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

STALE_S = 3600  # a bucket untouched this long is full again: its row is deleted
SWEEP_EVERY = 1000  # checks per process between sweeps of stale rows


class RateLimiter:
    def __init__(self, name: str, per_minute: int, burst: int, clock: Callable[[], float], db: Any) -> None:
        self.name = name
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute + burst) if per_minute else 0.0
        self.clock, self.db = clock, db
        self._checks = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, conn: Any, key: str, now: float) -> tuple[bool, float]:
        """Inside a write transaction: take one token of ``key``'s bucket if there is one."""
        row = conn.execute("SELECT tokens, at FROM rate_buckets WHERE name = ? AND key = ?", (self.name, key)).fetchone()
        tokens, last = (float(row[0]), float(row[1])) if row else (self.capacity, now)
        tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        conn.execute("INSERT INTO rate_buckets (name, key, tokens, at) VALUES (?, ?, ?, ?) ON CONFLICT (name, key)"
                     " DO UPDATE SET tokens = excluded.tokens, at = excluded.at", (self.name, key, tokens, now))
        return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate

    async def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until the next token) for one request from ``key``."""
        if not self.enabled:
            return True, 0.0
        now = float(self.clock())
        self._checks += 1
        sweep = self._checks % SWEEP_EVERY == 0

        def check(conn: Any) -> tuple[bool, float]:
            if sweep:
                conn.execute("DELETE FROM rate_buckets WHERE at < ?", (now - STALE_S,))
            return self.take(conn, key[:200], now)
        return await self.db.write(check)
