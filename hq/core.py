"""The HQ service object shared by handlers and jobs: settings, database, key, clock, rng."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq.db import Database
from hq.settings import Settings


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""


class WallClock:
    def now(self) -> float:
        return time.time()


@dataclass
class HQ:
    settings: Settings
    db: Database
    key: Ed25519PrivateKey
    clock: Clock = field(default_factory=WallClock)
    rng: random.Random = field(default_factory=secrets.SystemRandom)
    notify_wakeup: asyncio.Event | None = None
    # Called with the ids of branches whose events were just ingested (live status pages).
    branch_listeners: list[Callable[[set[str]], None]] = field(default_factory=list)
    # Branch id -> unix s of the last authenticated link request this process answered.
    last_heard: dict[str, int] = field(default_factory=dict)
    # hq.metrics.HQMetrics once the app is set up (None in tools that only open the database).
    metrics: Any = None

    def branches_changed(self, branches: set[str]) -> None:
        for listener in list(self.branch_listeners):
            listener(branches)

    def now(self) -> int:
        return int(self.clock.now())

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def booking_written(self, action: str) -> None:
        """A booking was created, rescheduled or cancelled: count it (/metrics), wake the notifier."""
        if self.metrics is not None:
            self.metrics.bookings.labels(action).inc()
        self.wake_notifier()

    def wake_notifier(self) -> None:
        if self.notify_wakeup is not None:
            self.notify_wakeup.set()
