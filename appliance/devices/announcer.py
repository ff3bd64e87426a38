"""The display's announcer: every call and recall, local or replicated, is said aloud, unless
it is stale (a partition healing brings calls made long ago) or lost to another counter."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections import deque
from typing import Any

from sync.envelope import Event

from appliance import events as ev
from appliance.branch import iso
from appliance.config import Config, ConfigError
from appliance.devices.base import DeviceService
from appliance.errors import NotFound
from appliance.node import Node
from hardware.announcer import build_announcer_from_config
from hardware.speech import RULES

logger = logging.getLogger(__name__)

CALL_TYPES = (ev.TICKET_CALLED, ev.TICKET_RECALLED)


def counter_number(name: str) -> str:
    """What is said after "counter": the number in "Counter 3" ("3"), else the whole name."""
    match = re.search(r"(\d+)\s*$", name)
    return match[1] if match else name


def parse_stale_after_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError("hardware.announcer.stale_after_s: expected a number of seconds > 0")
    return int(value * 1000)


class AnnouncerService(DeviceService):
    kind = "announcer"

    def __init__(self, config: Config, driver: Any, *, stale_after_ms: int, own_languages: bool) -> None:
        super().__init__(config, driver)
        self.stale_after_ms = stale_after_ms
        self.own_languages = own_languages  # else the branch's languages, read at each call
        self.announced: deque[dict[str, Any]] = deque(maxlen=20)  # what was queued, newest last

    @classmethod
    def from_table(cls, config: Config, table: dict[str, Any]) -> AnnouncerService:
        table = dict(table)
        stale = parse_stale_after_ms(table.pop("stale_after_s", 120))
        return cls(config, build_announcer_from_config(table), stale_after_ms=stale,
                   own_languages="languages" in table)

    async def started(self, node: Node) -> None:
        self.follow_events(node)

    async def handle_events(self, events: list[Event]) -> None:
        calls = [e for e in events if e.type in CALL_TYPES]
        if calls:
            await self.announce(calls)

    async def announce(self, calls: list[Event]) -> None:
        node = self.node
        assert node is not None
        now = node.clock.wall_ms()

        def read(conn: sqlite3.Connection) -> tuple[Any, list[tuple[Event, dict[str, Any]]]]:
            model = node.branch.model(conn)
            found = []
            for event in calls:
                try:
                    found.append((event, node.branch.ticket(conn, event.payload["ticket"], model=model)))
                except (NotFound, KeyError):
                    continue
            return model, found

        model, found = await node.read(read)
        for event, ticket in found:
            counter = event.payload.get("counter")
            age_ms = now - (event.hlc >> 16)
            if age_ms > self.stale_after_ms:
                logger.info("not announcing %s -> %s: the call is %d s old", ticket["label"], counter, age_ms // 1000)
                continue
            if ticket["counter"] != counter:
                continue  # this call lost to another counter's (superseded)
            c = model.counters.get(counter)
            spoken = counter_number(c.name if c is not None else str(counter))
            languages = None if self.own_languages else [x for x in model.languages if x in RULES] or None
            queued = self.driver.announce(ticket["label"], spoken, languages=languages)
            self.announced.append({"ticket": ticket["id"], "label": ticket["label"], "counter": counter,
                                   "said_counter": spoken, "type": event.type, "queued": queued,
                                   "at": iso(now, model.tz)})

    def view(self) -> dict[str, Any]:
        view = self.driver.status()
        if not self.own_languages:
            view["languages"] = "branch"  # the branch's languages, read at each call
        view["announced"] = list(self.announced)
        played = getattr(self.driver.sink, "played", None)
        if played is not None:  # the wav and silent sinks remember what they played
            view["played"] = [c.text if c.kind == "speech" else "<chime>" for c in list(played)[-60:]]
        return view
