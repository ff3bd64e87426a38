"""Counter (staff) state and actions: login, counter status, the current ticket, the queue.

The stream keeps ``current``/``waiting`` fresh (``apply_state`` on (re)connect, then
``apply_event``); actions call the node and show its answer. A call lost to another counter
(the ``superseded`` lists) becomes a clear notice. Every text comes from the gettext
catalogs in ``locale/`` (en fr rw sw es); the node's own error messages are shown as sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    NumericProperty,
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
from ui_common.viewmodel import NodeViewModel

from .i18n import CATALOGS, LANGUAGES, SOURCE_LANGUAGE

logger = logging.getLogger(__name__)

#: Keyboard shortcuts: key name (as Kivy reports it) -> view-model method.
SHORTCUTS: dict[str, str] = {
    "n": "call_next",
    "f1": "call_next",
    "r": "recall",
    "s": "start",
    "d": "done",
    "x": "no_show",
    "u": "undo",
    "o": "open_counter",
    "p": "pause_counter",
    "c": "close_counter",
}

ACTIVE = ("called", "serving")

#: Action names as shown in messages ("Call next: Counter 1 is closed; open it first").
ACTIONS: dict[str, str] = {
    "login": "Log in",
    "logout": "Log out",
    "open": "Open",
    "pause": "Pause",
    "close": "Close",
    "call_next": "Call next",
    "call": "Call",
    "recall": "Recall",
    "start": "Start",
    "done": "Done",
    "no_show": "No-show",
    "transfer": "Transfer",
    "walk_in": "Walk-in",
    "undo": "Undo",
}
#: The node's error codes (appliance/errors.py and its callers) as the clerk reads them; the
#: node's own message (English, for logs and API users) shows only for a code not listed.
NODE_ERRORS: dict[str, str] = {
    "session_expired": "your session has ended",
    "unauthorized": "log in first",
    "forbidden": "this session is for another counter",
    "wrong_pin": "wrong PIN",
    "locked_out": "too many wrong PINs; wait a minute",
    "counter_not_open": "the counter is not open; open it first",
    "invalid_transition": "not possible for this ticket now",
    "no_current_ticket": "there is no current ticket",
    "not_waiting": "this ticket is no longer waiting",
    "not_your_ticket": "this ticket is at another counter",
    "superseded": "another counter called this ticket first",
    "unknown_ticket": "unknown ticket",
}
#: Counter and ticket states as shown on the screen.
STATES: dict[str, str] = {
    "open": "open",
    "paused": "paused",
    "closed": "closed",
    "called": "called",
    "serving": "serving",
}


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CounterViewModel(NodeViewModel):
    catalogs = CATALOGS
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
    #: Other counters the current ticket can be transferred to (they serve its service): [{id, name}].
    counters = ListProperty([])
    #: Services the current ticket can be transferred to (all but its own): [{id, name}].
    transfer_services = ListProperty([])
    busy = BooleanProperty(False)
    #: The current ticket's details: service, language, priority, booking, on one line.
    current_details = StringProperty("")
    #: The counter's name and status on the header, translated.
    header_text = StringProperty("")
    #: What each button can do now (a disabled button cannot be pressed).
    can_open = BooleanProperty(False)
    can_pause = BooleanProperty(False)
    can_close = BooleanProperty(False)
    can_call_next = BooleanProperty(False)
    can_recall = BooleanProperty(False)
    can_start = BooleanProperty(False)
    can_done = BooleanProperty(False)
    can_no_show = BooleanProperty(False)
    can_transfer = BooleanProperty(False)
    can_undo = BooleanProperty(False)
    #: An action waiting for its second press ("no_show", "call_next"), or "".
    confirming = StringProperty("")
    #: The Undo button's text, e.g. "Undo A012" (the ticket it would put back).
    undo_text = StringProperty("")
    #: Tickets this counter completed today.
    served_today = NumericProperty(0)

    def __init__(
        self,
        client: NodeClient,
        counter_id: str,
        *,
        now: Callable[[], datetime],
        login_required: bool = True,
        language: str = SOURCE_LANGUAGE,
        clock: Callable[[], float] = time.monotonic,
        guard_s: float = 3.0,
        confirm_s: float = 8.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(language=language, **kwargs)
        self.client = client
        self.clock = clock
        #: A second "Call next" within this many seconds of a call is ignored: the citizen
        #: just called is walking up and must not become a no-show by a double tap.
        self.guard_s = guard_s
        #: A confirmation (the second press) counts within this many seconds.
        self.confirm_s = confirm_s
        self._last_call_at: float | None = None
        self._confirm_until = 0.0
        #: (ticket id, label) Undo puts back in the queue at its place (requeue keeps arrival).
        self._undo: tuple[str, str] | None = None
        self.counter_id = counter_id
        self.counter_name = counter_id
        self.now = now
        self.login_required = login_required
        self.logged_in = not login_required
        self._services_served: list[str] = []
        self._service_rows: dict[str, dict[str, Any]] = {}
        self._counter_rows: dict[str, dict[str, Any]] = {}
        self._superseded_by: tuple[str, str] | None = None
        self._waiting: dict[str, dict[str, Any]] = {}
        self._seen_superseded: set[str] = set()
        self._ready = True
        self._rebuild_controls()

    def on_logged_in(self, *_: Any) -> None:
        if getattr(self, "_ready", False):
            self._rebuild_controls()

    on_offline = on_status = on_logged_in

    # --- strings --------------------------------------------------------------------------

    def retranslate(self) -> None:
        mine = self._counter_rows.get(self.counter_id)
        if mine:
            self.counter_name = self._counter_name(mine)
        self.tick()
        self._rebuild_waiting()
        self._rebuild_superseded_notice()
        self._rebuild_controls()

    def state_text(self, state: str) -> str:
        """A counter or ticket state in the current language."""
        return self.t(STATES[state]) if state in STATES else state

    def _what(self, action: str) -> str:
        return self.t(ACTIONS.get(action, action))

    # --- stream ---------------------------------------------------------------------------

    def apply_state(self, state: dict[str, Any]) -> None:
        self.offline = False
        self._service_rows = {s["id"]: s for s in state.get("services", [])}
        self._waiting = {t["id"]: t for t in state.get("waiting", []) if t.get("id")}
        for c in state.get("counters", []):
            if c.get("id"):
                self._counter_rows[c["id"]] = dict(c)
            if c.get("id") == self.counter_id:
                self._apply_counter(c)
        self._rebuild_waiting()

    def apply_event(self, event: StreamEvent) -> None:
        ticket = event.data.get("ticket")
        counter = event.data.get("counter")
        if isinstance(counter, dict) and counter.get("id"):
            self._counter_rows[counter["id"]] = {**self._counter_rows.get(counter["id"], {}), **counter}
        # The ticket before this counter's own view: a completion at this counter is counted
        # while its ticket is still the current one (the counter's view no longer has it).
        if isinstance(ticket, dict) and ticket.get("id"):
            self._apply_ticket(ticket)
        if isinstance(counter, dict) and counter.get("id") == self.counter_id:
            self._apply_counter(counter)
        self._rebuild_waiting()

    def _apply_counter(self, c: dict[str, Any]) -> None:
        self.counter_name = self._counter_name(c)
        self.status = str(c.get("status") or "closed")
        self._services_served = list(c.get("services") or [])
        if "served_today" in c:
            self.served_today = int(c.get("served_today") or 0)
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
        if (t.get("status") == "completed" and t.get("counter") == self.counter_id
                and self.current.get("id") == t["id"]):
            self.served_today += 1
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
        self._superseded_by = (label or ticket_id, by_counter)
        self._rebuild_superseded_notice()

    def _rebuild_superseded_notice(self) -> None:
        if self._superseded_by is None:
            return
        label, by = self._superseded_by
        row = self._counter_rows.get(by)
        name = self._counter_name(row) if row else (by or self.t("another counter"))
        self.superseded_notice = self.t("{label} was called at {counter} first. Call next.",
                                        label=label, counter=name)

    def dismiss_superseded(self) -> None:
        self._superseded_by = None
        self.superseded_notice = ""

    def _set_current(self, t: dict[str, Any]) -> None:
        self.current = dict(t)
        self.current_label = str(t.get("label", ""))
        self.current_status = str(t.get("status", ""))
        self.tick()
        self._rebuild_controls()

    def _rebuild_waiting(self) -> None:
        served = self._services_served
        rows = [t for t in self._waiting.values() if self._waits_here(t, served)]
        rows.sort(key=lambda t: (t.get("position") or 10**6, -(t.get("priority") or 0)))
        now = self.now()
        out = []
        for t in rows:
            issued = parse_time(t.get("issued_at"))
            out.append(
                {
                    "id": t["id"],
                    "label": str(t.get("label", "")),
                    "service": self._service_name(self._service_rows.get(str(t.get("service")))
                                                  or {"id": str(t.get("service", ""))}),
                    "priority": int(t.get("priority") or 0),
                    "waited": format_duration((now - issued).total_seconds()) if issued else "",
                }
            )
        self.waiting = out
        self.services = [
            {"id": sid, "name": self._service_name(s)} for sid, s in self._service_rows.items()
        ]
        self._rebuild_controls()

    def _counter_name(self, c: dict[str, Any]) -> str:
        """A counter's name in the screen's language (``names`` from configuration)."""
        return self.localized(c.get("names"), str(c.get("name") or c.get("id") or ""))

    def _rebuild_controls(self) -> None:
        """Buttons, transfer choices, header and ticket details from the current state."""
        cur = self.current
        status = self.current_status if cur else ""
        working = self.logged_in and not self.offline
        self.can_open = working and self.status != "open"
        self.can_pause = working and self.status == "open"
        self.can_close = working and self.status != "closed"
        self.can_call_next = working and self.status == "open"
        self.can_recall = working and status == "called"
        self.can_start = working and status == "called"
        self.can_done = working and status == "serving"
        self.can_no_show = working and status == "called"
        self.can_transfer = working and bool(cur)
        self.can_undo = working and self._undo is not None
        self.undo_text = (self.t("Undo {label}", label=self._undo[1])
                          if self._undo else self.t("Undo"))
        service = str(cur.get("service") or "")
        self.transfer_services = [
            {"id": sid, "name": self._service_name(s)} for sid, s in self._service_rows.items() if sid != service
        ]
        self.counters = [
            {"id": cid, "name": self._counter_name(c)} for cid, c in self._counter_rows.items()
            if cid != self.counter_id and service in (c.get("services") or [])
        ]
        self.header_text = self.t("{counter}: {status}", counter=self.counter_name,
                                  status=self.state_text(self.status))
        self.current_details = self._details(cur) if cur else ""

    def _details(self, t: dict[str, Any]) -> str:
        """Service, language, priority and booking of a ticket, as one line for the clerk."""
        parts = [self._service_name(self._service_rows.get(str(t.get("service")))
                                    or {"id": str(t.get("service", ""))})]
        lang = t.get("language")
        if lang:
            parts.append(LANGUAGES.get(str(lang), str(lang)))
        if t.get("priority"):
            parts.append(self.t("Priority"))
        if t.get("booking_code"):
            parts.append(self.t("Booking {code}", code=t["booking_code"]))
        return "  ·  ".join(parts)

    def _waits_here(self, t: dict[str, Any], served: list[str]) -> bool:
        """A waiting ticket shows here when it was transferred to this counter, or when it is
        for one of this counter's services and not kept for another counter."""
        reserved = t.get("counter")
        if reserved:
            return bool(reserved == self.counter_id)
        return not served or t.get("service") in served

    def _service_name(self, s: dict[str, Any]) -> str:
        return self.localized(s.get("names"), str(s.get("id", "")))

    def tick(self) -> None:
        """Every second: how long the current ticket waited (issue to call, or until now)."""
        t = self.current
        issued = parse_time(t.get("issued_at")) if t else None
        if issued is None:
            self.waited_text = ""
            return
        end = parse_time(t.get("called_at")) or self.now()
        self.waited_text = self.t("waited {time}", time=format_duration((end - issued).total_seconds()))

    # --- actions --------------------------------------------------------------------------

    def handle_key(self, key: str) -> bool:
        """A keyboard shortcut; True when it triggered an action."""
        name = SHORTCUTS.get(key.lower())
        if name is None or not self.logged_in:
            return False
        self.spawn(getattr(self, name)())
        return True

    async def _do(self, action: str, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run one node call, turning failures into ``error``/``offline``; None on failure."""
        if self.busy:
            return None
        self.busy = True
        self.error = ""
        what = self._what(action)
        try:
            return await call()
        except NodeUnavailable as err:
            self.set_connected(False, str(err))
            self.error = self.t("Cannot reach the node. Retrying by itself…")
        except Unauthorized as err:
            if action == "login":
                self.error = self.t("{what}: {message}", what=what, message=self._reason(err))
            else:
                self.error = self.t("{what}: not allowed ({message}). Log in again.",
                                    what=what, message=self._reason(err))
                if self.login_required:
                    self.logged_in = False
                    self.staff_name = ""
                    self.client.token = None
        except (Conflict, NodeRejected) as err:
            self.error = self.t("{what}: {message}", what=what, message=self._reason(err))
        finally:
            self.busy = False
        return None

    def _reason(self, err: NodeRejected) -> str:
        """The node's refusal in the screen's language (its code), else its own message."""
        return self.t(NODE_ERRORS[err.code]) if err.code in NODE_ERRORS else err.message

    async def login(self, pin: str) -> bool:
        self.login_error = ""

        async def go() -> Any:
            return await self.client.login(self.counter_id, pin)

        reply = await self._do("login", go)
        if reply is None:
            self.login_error = self.error or self.t("Login failed")
            self.error = ""
            return False
        self.staff_name = str((reply.get("staff") or {}).get("name", ""))
        self.logged_in = True
        return True

    async def logout(self) -> bool:
        """End the staff session at the node (POST /staff/logout) and go back to the PIN.

        The screen is locked whatever happens; if the node cannot be told, the session there
        ends by itself (``security.session_ttl_s``) and the error says so."""
        self.staff_name = ""
        self.logged_in = not self.login_required
        self.error = ""
        try:
            await self.client.logout()
        except NodeUnavailable as err:
            self.set_connected(False, str(err))
            self.login_error = self.t("Logged out here; the node could not be told.")
            return False
        except NodeRejected as err:
            logger.warning("logout refused: %s", err)
        self.notice = ""
        return True

    async def _status(self, action: str) -> bool:
        reply = await self._do(action, lambda: self.client.set_counter_status(
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

    def _confirmed(self, action: str) -> bool:
        """True on the second press of ``action`` within ``confirm_s``; the first press only
        arms it (``confirming``) and says what the second one will do."""
        now = self.clock()
        if self.confirming == action and now <= self._confirm_until:
            self.confirming = ""
            return True
        self.confirming = action
        self._confirm_until = now + self.confirm_s
        return False

    def _in_guard(self) -> bool:
        return self._last_call_at is not None and self.clock() - self._last_call_at < self.guard_s

    async def call_next(self) -> bool:
        """Call the next ticket. Within ``guard_s`` of the last call a press does nothing (a
        double tap must not turn the citizen walking up into a no-show); while the current
        ticket is still only called, the node would mark it a no-show, so that takes a
        second press to confirm."""
        if self._in_guard():
            self.notice = self.t("{label} was just called.", label=self.current_label or "")
            return False
        if (self.status == "open" and self.current_status == "called" and self.current
                and not self._confirmed("call_next")):
            self.notice = self.t(
                "{label} has not come. Press Call next again to mark a no-show and call the next ticket.",
                label=self.current_label)
            return False
        self.confirming = ""
        self.dismiss_superseded()
        self.notice = ""
        sentinel: dict[str, Any] = {}

        async def go() -> Any:
            reply = await self.client.call_next(self.counter_id)
            return sentinel if reply is None else reply

        self._last_call_at = self.clock()
        reply = await self._do("call_next", go)
        if reply is None:
            self._last_call_at = None
            return False
        if reply is sentinel:
            self._last_call_at = None
            self.notice = self.t("Nobody is waiting.")
            return False
        self._after(reply, undo=True)
        return True

    async def call_ticket(self, ticket_id: str) -> bool:
        self.dismiss_superseded()
        reply = await self._do("call", lambda: self.client.call_ticket(self.counter_id, ticket_id))
        if reply is None:
            return False
        self._last_call_at = self.clock()
        self._after(reply, undo=True)
        return True

    async def _ticket_action(self, what: str, action: str, body: dict[str, Any] | None = None, *,
                             undo: bool = False) -> bool:
        tid = self.current.get("id")
        if not tid:
            self.error = self.t("{what}: no current ticket", what=self._what(what))
            return False
        self.confirming = ""
        reply = await self._do(what, lambda: self.client.ticket_action(
            self.counter_id, tid, action, body))
        if reply is None:
            return False
        self._after(reply, undo=undo)
        return True

    async def recall(self) -> bool:
        return await self._ticket_action("recall", "recall")

    async def start(self) -> bool:
        return await self._ticket_action("start", "start")

    async def done(self) -> bool:
        return await self._ticket_action("done", "complete")

    async def no_show(self) -> bool:
        """Mark the called ticket a no-show: the first press asks, the second (within
        ``confirm_s``) does it; Undo brings the ticket back to its place."""
        if not self.current:
            self.error = self.t("{what}: no current ticket", what=self._what("no_show"))
            return False
        if not self._confirmed("no_show"):
            self.notice = self.t("Press No-show again to confirm that {label} did not come.",
                                 label=self.current_label)
            return False
        return await self._ticket_action("no_show", "no-show", undo=True)

    async def undo(self) -> bool:
        """Undo the last call or no-show: the ticket goes back to the queue at its own place
        (``requeue`` keeps its arrival time)."""
        if self._undo is None:
            return False
        tid, label = self._undo
        reply = await self._do("undo", lambda: self.client.ticket_action(self.counter_id, tid, "requeue"))
        if reply is None:
            return False
        self._undo = None
        self._last_call_at = None
        self._after(reply)
        self.notice = self.t("{label} is back in the queue at its place.", label=label)
        return True

    async def transfer(self, to_service: str | None = None, *, to_counter: str | None = None) -> bool:
        """Send the current ticket back to the queue of another service, or keep it waiting
        for one counter (``to_counter``: a colleague who handles this case)."""
        if (to_service is None) == (to_counter is None):
            raise ValueError("transfer needs exactly one of to_service / to_counter")
        body = {"to_service": to_service} if to_service else {"to_counter": to_counter}
        return await self._ticket_action("transfer", "transfer", body)

    async def transfer_to(self, key: str) -> bool:
        """A transfer choice from the screen: ``service:<id>`` or ``counter:<id>``."""
        kind, _, target = key.partition(":")
        if kind == "counter":
            return await self.transfer(to_counter=target)
        return await self.transfer(target)

    async def issue_walkin(self, service: str) -> str | None:
        """Issue a ticket for someone standing at the counter; returns its label."""
        reply = await self._do("walk_in", lambda: self.client.issue_ticket(service))
        if reply is None:
            return None
        self._apply_ticket(reply)
        self._rebuild_waiting()
        self.notice = self.t("Issued {label}", label=reply.get("label", ""))
        return str(reply.get("label", ""))

    def _after(self, ticket: dict[str, Any], *, undo: bool = False) -> None:
        """Take a ticket the node returned; ``undo``: it can be put back (a call, a no-show),
        otherwise the last action cannot be undone any more."""
        self.offline = False
        self._undo = (str(ticket["id"]), str(ticket.get("label", ""))) if undo and ticket.get("id") else None
        self._apply_ticket(ticket)
        self._rebuild_waiting()
