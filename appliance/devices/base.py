"""What every device service shares: its node, its tasks, and the driver's thread start/stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from sync.envelope import Event

from appliance.branch import iso
from appliance.config import Config, ConfigError
from appliance.node import Node

logger = logging.getLogger(__name__)


class DeviceService:
    """One device kind wired to the node. Subclasses build their driver in `from_table` and
    may override `started`, `handle_events` and `view`."""

    kind: ClassVar[str] = ""

    def __init__(self, config: Config, driver: Any) -> None:
        self.config = config
        self.driver = driver
        self.node: Node | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    @classmethod
    def from_table(cls, config: Config, table: dict[str, Any]) -> DeviceService:
        raise NotImplementedError

    @classmethod
    def require_counters(cls, config: Config) -> None:
        if not config.device_counters:
            raise ConfigError(f"hardware.{cls.kind}: this device serves no counters; list them in device.counters")

    async def start(self, node: Node) -> None:
        self.node = node
        await asyncio.to_thread(self.driver.start)
        await self.started(node)

    async def started(self, node: Node) -> None:
        """After the driver started, on the loop."""

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.driver.stop)

    def view(self) -> Any:
        return self.driver.status()

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def follow_events(self, node: Node) -> None:
        """Feed each commit's events to `handle_events`, one batch at a time, in commit order
        (calls are shown and announced in the order they happened)."""
        queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._unsubscribe = node.on_events(queue.put_nowait)
        self.spawn(self._event_worker(queue), f"{self.kind} events")

    async def _event_worker(self, queue: asyncio.Queue[list[Event]]) -> None:
        while True:
            events = await queue.get()
            try:
                await self.handle_events(events)
            except Exception:
                logger.exception("%s could not handle %d events", self.kind, len(events))

    async def handle_events(self, events: list[Event]) -> None:
        """Events of one commit, local or replicated."""

    def now_iso(self) -> str | None:
        assert self.node is not None
        return iso(self.node.clock.wall_ms(), self.config.tz)
