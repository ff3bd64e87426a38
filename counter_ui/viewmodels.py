"""Counter (staff) state and actions: login, counter status, the current ticket, the queue.

The stream keeps ``current``/``waiting`` fresh (``apply_state`` on (re)connect, then
``apply_event``); actions call the node and show its answer. A call lost to another counter
(the ``superseded`` lists) becomes a clear notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from kivy.event import EventDispatcher
from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    StringProperty,
)

from appliance.client import (
    Conflict,
    NodeClient,
    NodeRejected,
    NodeUnavailable,
    StreamEvent,
    Unauthorized,
)

logger = logging.getLogger(__name__)

#: Keyboard shortcuts: key name (as Kivy reports it) -> view-model method.
SHORTCUTS: dict[str, str] = {
    "n": "call_next",
    "f1": "call_next",
    "r": "recall",
    "s": "start",
    "d": "done",
    "x": "no_show",
    "o": "open_counter",
    "p": "pause_counter",
    "c": "close_counter",
}

ACTIVE = ("called", "serving")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CounterViewModel(EventDispatcher):
    counter_id = StringProperty("")
    counter_name = StringProperty("")
    logged_in = BooleanProperty(False)
    staff_name = StringProperty("")
    login_error = StringProperty("")
    status = StringProperty("closed")
    #: The ticket at this counter (called or serving), TICKET shape, or {}.
    current = DictProperty({})
    current_label = StringProperty("")
    current_status = StringProperty("")
    waited_text = StringProperty("")
    #: Waiting tickets for this counter's services, in call order: {id, label, service, waited}.
    waiting = ListProperty([])
    services = ListProperty([])
    notice = StringProperty("")
    superseded_notice = StringProperty("")
    error = StringProperty("")
    offline = BooleanProperty(True)
    busy = BooleanProperty(False)

    def __init__(
        self,
        client: NodeClient,
        counter_id: str,
        *,
        now: Callable[[], datetime],
        login_required: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.counter_id = counter_id
        self.counter_name = counter_id
        self.now = now
        self.login_required = login_required
        self.logged_in = not login_required
        self._services_served: list[str] = []
        self._service_rows: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, dict[str, Any]] = {}
        self._seen_superseded: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- stream ---------------------------------------------------------------------------

    def set_connected(self, connected: bool, reason: str = "") -> None:
        self.offline = not connected
        if not connected:
            logger.info("counter offline: %s", reason)

    def apply_state(self, state: dict[str, Any]) -> None:
        self.offline = False
        self._service_rows = {s["id"]: s for s in state.get("services", [])}
        self._waiting = {t["id"]: t for t in state.get("waiting", []) if t.get("id")}
        for c in state.get("counters", []):
            if c.get("id") == self.counter_id:
                self._apply_counter(c)
        self._rebuild_waiting()

    def apply_event(self, event: StreamEvent) -> None:
        ticket = event.data.get("ticket")
        counter = event.data.get("counter")
        if isinstance(counter, dict) and counter.get("id") == self.counter_id:
            self._apply_counter(counter)
        if isinstance(ticket, dict) and ticket.get("id"):
            self._apply_ticket(ticket)
        self._rebuild_waiting()

    def _apply_counter(self, c: dict[str, Any]) -> None:
        self.counter_name = str(c.get("name") or self.counter_id)
        self.status = str(c.get("status") or "closed")
        self._services_served = list(c.get("services") or [])
        if "current" in c:
            self._set_current(c.get("current") or {})
        for lost in c.get("superseded") or []:
            self._superseded(str(lost.get("ticket", "")), str(lost.get("label", "")),
                             str(lost.get("by_counter", "")))

    def _apply_ticket(self, t: dict[str, Any]) -> None:
        if t.get("status") == "waiting":
            self._waiting[t["id"]] = t
        else:
            self._waiting.pop(t["id"], None)
        if self.counter_id in (t.get("superseded") or []):
            self._superseded(t["id"], str(t.get("label", "")), str(t.get("counter") or ""))
        if t.get("counter") == self.counter_id and t.get("status") in ACTIVE:
            self._set_current(t)
        elif self.current.get("id") == t["id"]:
            # Finished, requeued, transferred or won by another counter.
            self._set_current({})

    def _superseded(self, ticket_id: str, label: str, by_counter: str) -> None:
        if not ticket_id or ticket_id in self._seen_superseded:
            return
        self._seen_superseded.add(ticket_id)
        if self.current.get("id") == ticket_id:
            self._set_current({})
        self.superseded_notice = (
            f"{label or ticket_id} was called at {by_counter or 'another counter'} first. "
            "Call next."
        )

    def _set_current(self, t: dict[str, Any]) -> None:
        self.current = dict(t)
        self.current_label = str(t.get("label", ""))
        self.current_status = str(t.get("status", ""))
        self.tick()

    def _rebuild_waiting(self) -> None:
        served = self._services_served
        rows = [
            t for t in self._waiting.values() if not served or t.get("service") in served
        ]
        rows.sort(key=lambda t: (t.get("position") or 10**6, -(t.get("priority") or 0)))
        now = self.now()
        out = []
        for t in rows:
            issued = parse_time(t.get("issued_at"))
            out.append(
                {
                    "id": t["id"],
                    "label": str(t.get("label", "")),
                    "service": str(t.get("service", "")),
                    "priority": int(t.get("priority") or 0),
                    "waited": format_duration((now - issued).total_seconds()) if issued else "",
                }
            )
        self.waiting = out
        self.services = [
            {"id": sid, "name": str((s.get("names") or {}).get("en") or sid)}
            for sid, s in self._service_rows.items()
        ]

    def tick(self) -> None:
        """Every second: how long the current ticket waited (issue to call, or until now)."""
        t = self.current
        issued = parse_time(t.get("issued_at")) if t else None
        if issued is None:
            self.waited_text = ""
            return
        end = parse_time(t.get("called_at")) or self.now()
        self.waited_text = f"waited {format_duration((end - issued).total_seconds())}"

    # --- actions --------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def handle_key(self, key: str) -> bool:
        """A keyboard shortcut; True when it triggered an action."""
        name = SHORTCUTS.get(key.lower())
        if name is None or not self.logged_in:
            return False
        self.spawn(getattr(self, name)())
        return True

    async def _do(self, what: str, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run one node call, turning failures into ``error``/``offline``; None on failure."""
        if self.busy:
            return None
        self.busy = True
        self.error = ""
        try:
            return await call()
        except NodeUnavailable as err:
            self.set_connected(False, str(err))
            self.error = "Cannot reach the node. Retrying by itself…"
        except Unauthorized as err:
            self.error = f"{what}: not allowed ({err.message}). Log in again."
            if self.login_required:
                self.logged_in = False
        except Conflict as err:
            self.error = f"{what}: {err.message}"
        except NodeRejected as err:
            self.error = f"{what}: {err.message}"
        finally:
            self.busy = False
        return None

    async def login(self, pin: str) -> bool:
        self.login_error = ""

        async def go() -> Any:
            return await self.client.login(self.counter_id, pin)

        reply = await self._do("Login", go)
        if reply is None:
            self.login_error = self.error or "Login failed"
            self.error = ""
            return False
        self.staff_name = str((reply.get("staff") or {}).get("name", ""))
        self.logged_in = True
        return True

    def logout(self) -> None:
        self.client.token = None
        self.staff_name = ""
        self.logged_in = not self.login_required

    async def _status(self, action: str) -> bool:
        reply = await self._do(action.capitalize(), lambda: self.client.set_counter_status(
            self.counter_id, action))
        if reply is None:
            return False
        self._apply_counter(reply)
        self._rebuild_waiting()
        return True

    async def open_counter(self) -> bool:
        return await self._status("open")

    async def pause_counter(self) -> bool:
        return await self._status("pause")

    async def close_counter(self) -> bool:
        return await self._status("close")

    async def call_next(self) -> bool:
        self.superseded_notice = ""
        self.notice = ""
        sentinel: dict[str, Any] = {}

        async def go() -> Any:
            reply = await self.client.call_next(self.counter_id)
            return sentinel if reply is None else reply

        reply = await self._do("Call next", go)
        if reply is None:
            return False
        if reply is sentinel:
            self.notice = "Nobody is waiting."
            return False
        self._after(reply)
        return True

    async def call_ticket(self, ticket_id: str) -> bool:
        self.superseded_notice = ""
        reply = await self._do("Call", lambda: self.client.call_ticket(self.counter_id, ticket_id))
        if reply is None:
            return False
        self._after(reply)
        return True

    async def _ticket_action(self, what: str, action: str, body: dict[str, Any] | None = None) -> bool:
        tid = self.current.get("id")
        if not tid:
            self.error = f"{what}: no current ticket"
            return False
        reply = await self._do(what, lambda: self.client.ticket_action(
            self.counter_id, tid, action, body))
        if reply is None:
            return False
        self._after(reply)
        return True

    async def recall(self) -> bool:
        return await self._ticket_action("Recall", "recall")

    async def start(self) -> bool:
        return await self._ticket_action("Start", "start")

    async def done(self) -> bool:
        return await self._ticket_action("Done", "complete")

    async def no_show(self) -> bool:
        return await self._ticket_action("No-show", "no-show")

    async def transfer(self, to_service: str) -> bool:
        return await self._ticket_action("Transfer", "transfer", {"to_service": to_service})

    async def issue_walkin(self, service: str) -> str | None:
        """Issue a ticket for someone standing at the counter; returns its label."""
        reply = await self._do("Walk-in", lambda: self.client.issue_ticket(service))
        if reply is None:
            return None
        self._apply_ticket(reply)
        self._rebuild_waiting()
        self.notice = f"Issued {reply.get('label', '')}"
        return str(reply.get("label", ""))

    def _after(self, ticket: dict[str, Any]) -> None:
        self.offline = False
        self._apply_ticket(ticket)
        self._rebuild_waiting()
