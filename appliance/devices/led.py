"""The counter's LED sign: shows each of the device's counters' current ticket, blinking on a
call; any ticket event may change what a counter holds (a call elsewhere supersedes ours)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sync.envelope import Event

from appliance import events as ev
from appliance.config import Config
from appliance.devices.base import DeviceService
from appliance.errors import NotFound
from appliance.node import Node
from hardware.led_sign import build_led_sign_from_config

CALL_TYPES = (ev.TICKET_CALLED, ev.TICKET_RECALLED)
SIGN_QUIET = (ev.TICKET_ISSUED, ev.TICKET_CANCELLED)  # never change what a counter holds


class LedSignService(DeviceService):
    kind = "led"

    def __init__(self, config: Config, driver: Any) -> None:
        super().__init__(config, driver)
        self.shown: dict[str, str | None] = {}  # counter -> label on the sign

    @classmethod
    def from_table(cls, config: Config, table: dict[str, Any]) -> LedSignService:
        cls.require_counters(config)
        return cls(config, build_led_sign_from_config(table))

    async def started(self, node: Node) -> None:
        self.follow_events(node)
        await self.refresh(set(self.config.device_counters), set())

    async def handle_events(self, events: list[Event]) -> None:
        mine = set(self.config.device_counters)
        touched: set[str] = set()
        blink: set[str] = set()
        for event in events:
            if event.type in ev.TICKET_TYPES and event.type not in SIGN_QUIET:
                touched |= mine
            elif event.type in ev.COUNTER_TYPES:
                touched |= {event.payload.get("counter")} & mine
            if event.type in CALL_TYPES and event.payload.get("counter") in mine:
                blink.add(event.payload["counter"])
        if touched:
            await self.refresh(touched, blink)

    async def refresh(self, counters: set[str], blink: set[str]) -> None:
        node = self.node
        assert node is not None

        def read(conn: sqlite3.Connection) -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for c in sorted(counters):
                try:
                    current = node.branch.counter(conn, c)["current"]
                except NotFound:
                    continue
                out[c] = current["label"] if current is not None else None
            return out

        for counter, label in (await node.read(read)).items():
            changed = label != self.shown.get(counter, "")
            if label is None and changed:
                self.driver.clear(counter)
            elif label is not None and (changed or counter in blink):
                self.driver.show(counter, label, blink=True)
            self.shown[counter] = label
