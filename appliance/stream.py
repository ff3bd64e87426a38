"""Server-sent events: every committed event, with the state of what it changed."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sync.envelope import Event

from appliance import events as ev
from appliance.branch import Branch
from appliance.errors import NotFound


def render_events(branch: Branch, conn: sqlite3.Connection, events: list[Event]) -> list[tuple[Event, str]]:
    """One SSE message per event: `id: origin:seq`, `event: <type>`, data JSON with the
    event (without its signature) and the ticket, counter and service line it changed."""
    out = []
    for event in events:
        data: dict[str, Any] = {"event": event.unsigned(), "ticket": None, "counter": None, "service": None}
        try:
            if event.type in ev.TICKET_TYPES and isinstance(event.payload.get("ticket"), str):
                data["ticket"] = branch.ticket(conn, event.payload["ticket"])
                data["service"] = branch.service_summary(conn, data["ticket"]["service"])
            counter = event.payload.get("counter")
            if isinstance(counter, str) and (event.type in ev.COUNTER_TYPES or event.type in ev.TICKET_TYPES):
                data["counter"] = branch.counter(conn, counter)
        except NotFound:
            pass
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        out.append((event, f"id: {event.origin}:{event.seq}\nevent: {event.type}\ndata: {body}\n\n"))
    return out
