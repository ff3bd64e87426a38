"""Waiting-room display state: the newest call, recent calls, queues, crowd, clock, notices.

Fed only by the node's event stream (``apply_state`` once per (re)connect, ``apply_event``
for each event); it never polls. Each call is also handed to an injectable announcer. Texts
come from the gettext catalogs in ``locale/`` (en fr rw sw es), dates from Babel's CLDR data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from babel.core import UnknownLocaleError
from babel.dates import format_date
from kivy.properties import (
    BooleanProperty,
    ListProperty,
    NumericProperty,
    OptionProperty,
    StringProperty,
)

from appliance.client import StreamEvent
from ui_common.viewmodel import NodeViewModel

from .i18n import CATALOGS, SOURCE_LANGUAGE

logger = logging.getLogger(__name__)

CALL_EVENTS = ("ticket.called", "ticket.recalled")
RECENT_MAX = 6
#: Crowd levels as shown on the screen.
CROWD_TEXT = {"low": "Low", "medium": "Medium", "high": "High"}


class Announcer(Protocol):
    """Plays a call (chime + speech) on the display's speaker."""

    def announce(self, label: str, counter_name: str, language: str) -> None: ...


class SilentAnnouncer:
    """Remembers the calls it was asked to play (tests, machines without audio)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def announce(self, label: str, counter_name: str, language: str) -> None:
        self.calls.append((label, counter_name, language))


def crowd_level(waiting: int, open_counters: int) -> str:
    """low / medium / high from people waiting per open counter (none open and people
    waiting is high)."""
    if waiting <= 0:
        return "low"
    if open_counters <= 0:
        return "high"
    per = waiting / open_counters
    if per < 4:
        return "low"
    if per < 10:
        return "medium"
    return "high"


class DisplayViewModel(NodeViewModel):
    catalogs = CATALOGS
    newest_label = StringProperty("")
    newest_counter = StringProperty("")
    #: The newest call's citizen has reached the counter (no more flashing, "Being served").
    newest_serving = BooleanProperty(False)
    #: True for ``flash_s`` seconds after a call; the layout blinks the newest call meanwhile.
    flashing = BooleanProperty(False)
    #: [{label, counter_name, note}] newest first, excluding the newest call; ``note`` says
    #: whether the citizen is still awaited ("Please come") or already being served.
    recent = ListProperty([])
    #: [{id, letter, name, waiting, wait_text}]
    services = ListProperty([])
    crowd = OptionProperty("low", options=["low", "medium", "high"])
    crowd_text = StringProperty("")
    clock_text = StringProperty("")
    date_text = StringProperty("")
    notices = ListProperty([])
    ticker_text = StringProperty("")
    degraded = BooleanProperty(False)
    status_text = StringProperty("")
    branch_name = StringProperty("")
    #: Increments on every call shown; a bench or test can wait on it.
    calls_shown = NumericProperty(0)

    def __init__(
        self,
        *,
        announcer: Announcer | None = None,
        clock: Callable[[], float],
        flash_s: float = 8.0,
        language: str = "en",
        notices: list[str] | None = None,
        on_call_shown: Callable[[str], None] | None = None,
        cycle_languages: list[str] | None = None,
        cycle_s: float = 10.0,
        directions: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(language=language, **kwargs)
        #: Languages the screen takes in turn, ``cycle_s`` each (None: the branch's languages
        #: once /state names them; [] or one language: no cycling).
        self.cycle_languages = cycle_languages
        self.cycle_s = cycle_s
        self._cycle_at: float | None = None
        #: Counter id -> where it is ("→ left, 1st floor"), shown after its name.
        self.directions = dict(directions or {})
        #: Ticket label -> status, from the stream: tells "called" from "being served".
        self._status: dict[str, str] = {}
        self.announcer = announcer or SilentAnnouncer()
        self.clock = clock
        self.flash_s = flash_s
        self.on_call_shown = on_call_shown
        self._flash_until = 0.0
        self._services: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, dict[str, Any]] = {}
        self._calls: list[dict[str, str]] = []
        self._local_notices = list(notices or [])
        #: The branch's notices: the same in every language, and per language code.
        self._branch_notices: list[str] = []
        self._notices_by_language: dict[str, list[str]] = {}
        self.notices = list(self._local_notices)
        self._now: datetime | None = None
        self._connecting = True
        self._rebuild_ticker()
        self._update_status()

    # --- strings --------------------------------------------------------------------------

    def retranslate(self) -> None:
        self._compose_notices()
        self._rebuild_calls()
        self._rebuild_services()
        self._update_status()
        if self._now is not None:
            self.tick(self._now)

    # --- connection -----------------------------------------------------------------------

    def connection_changed(self) -> None:
        self._connecting = False
        self._update_status()

    def _update_status(self) -> None:
        # For staff only: a small note in a corner, never a banner that alarms the waiting room
        # (the branch is built to run without internet; nothing here concerns the public).
        if self._connecting:
            self.status_text = self.t("Connecting…")
        elif self.offline:
            self.status_text = self.t("Staff: this screen is not linked to its device; retrying")
        else:
            self.status_text = self.t("Staff: some devices do not answer") if self.degraded else ""

    # --- data -----------------------------------------------------------------------------

    def apply_state(self, state: dict[str, Any]) -> None:
        """A full picture, fetched once after each (re)connect. Plays no announcement."""
        self.branch_name = str((state.get("branch") or {}).get("name", ""))
        self._services = {s["id"]: dict(s) for s in state.get("services", [])}
        self._counters = {c["id"]: dict(c) for c in state.get("counters", [])}
        self._waiting = {t["id"]: t for t in state.get("waiting", []) if t.get("id")}
        self._calls = [
            {"label": str(c.get("label", "")), "counter": str(c.get("counter") or "")}
            for c in state.get("recent_calls", [])
        ][: RECENT_MAX + 1]
        if self.cycle_languages is None:
            self.cycle_languages = [str(x) for x in (state.get("branch") or {}).get("languages") or []]
        branch = state.get("branch") or {}
        self._branch_notices = [str(x) for x in branch.get("notices") or []]
        by_language = branch.get("notices_by_language") or {}
        self._notices_by_language = {str(k): [str(x) for x in v] for k, v in by_language.items()
                                     if isinstance(v, list)} if isinstance(by_language, dict) else {}
        self._compose_notices()
        self._set_peers(state.get("peers") or [])
        self.offline = False
        self._connecting = False
        self._update_status()
        self._rebuild_calls()
        self._rebuild_services()
        self._rebuild_ticker()

    def _set_peers(self, peers: Any) -> None:
        self.degraded = isinstance(peers, list) and any(
            isinstance(p, dict) and p.get("status") not in (None, "ok", "connected", "online")
            for p in peers
        )

    def apply_event(self, event: StreamEvent) -> None:
        """One committed event from the stream (or `peers`, when peer health changes)."""
        if event.type == "peers":
            self._set_peers(event.data.get("peers"))
            self._update_status()
            return
        ticket = event.data.get("ticket")
        counter = event.data.get("counter")
        if isinstance(counter, dict) and counter.get("id"):
            self._counters[counter["id"]] = {**self._counters.get(counter["id"], {}), **counter}
        if isinstance(ticket, dict) and ticket.get("id"):
            if ticket.get("status") == "waiting":
                self._waiting[ticket["id"]] = ticket
            else:
                self._waiting.pop(ticket["id"], None)
        if isinstance(ticket, dict) and ticket.get("label"):
            self._status[str(ticket["label"])] = str(ticket.get("status") or "")
            if any(c["label"] == ticket["label"] for c in self._calls):
                self._rebuild_calls()
        if event.type in CALL_EVENTS and isinstance(ticket, dict):
            payload = (event.data.get("event") or {}).get("payload") or {}
            counter_id = payload.get("counter") or ticket.get("counter") or ""
            self.show_call(
                str(ticket.get("label", "")),
                self._counter_name({"counter": counter_id}),
                str(ticket.get("language") or self.language),
                counter=str(counter_id),
            )
        self._rebuild_services()

    def _counter_name(self, call: dict[str, Any]) -> str:
        """A counter's name in the screen's current language (``names`` from configuration)."""
        cid = str(call.get("counter") or "")
        row = self._counters.get(cid)
        if row:
            return self.localized(row.get("names"), str(row.get("name") or cid))
        return str(call.get("counter_name") or cid)

    def _where(self, call: dict[str, str]) -> str:
        """The counter's name and, when configured, where to find it."""
        name = self._counter_name(call) if call.get("counter") else call.get("counter_name", "")
        hint = self.directions.get(call.get("counter", ""), "")
        return f"{name}  {hint}" if hint else name

    def show_call(self, label: str, counter_name: str, language: str, *, counter: str = "") -> None:
        """Put a call on top, flash it, announce it."""
        self._calls = [c for c in self._calls if c["label"] != label]
        self._calls.insert(0, {"label": label, "counter": counter, "counter_name": counter_name})
        self._status[label] = "called"
        del self._calls[RECENT_MAX + 1 :]
        self._flash_until = self.clock() + self.flash_s
        self.flashing = True
        self._rebuild_calls()
        self.calls_shown += 1
        try:
            self.announcer.announce(label, counter_name, language)
        except Exception:  # an audio failure must never stop the display
            logger.exception("announcer failed for %s", label)
        if self.on_call_shown is not None:
            self.on_call_shown(label)

    def _note(self, label: str) -> str:
        return self.t("Being served") if self._status.get(label) == "serving" else self.t("Please come")

    def _rebuild_calls(self) -> None:
        if self._calls:
            self.newest_label = self._calls[0]["label"]
            self.newest_counter = self._where(self._calls[0])
            self.newest_serving = self._status.get(self.newest_label) == "serving"
        else:
            self.newest_label = ""
            self.newest_counter = ""
            self.newest_serving = False
        self.recent = [{"label": c["label"], "counter_name": self._where(c), "note": self._note(c["label"]),
                        "serving": self._status.get(c["label"]) == "serving"} for c in self._calls[1:]]

    def _rebuild_services(self) -> None:
        rows = []
        total_waiting = 0
        open_counters = sum(1 for c in self._counters.values() if c.get("status") == "open")
        for sid, s in self._services.items():
            waiting = sum(1 for t in self._waiting.values() if t.get("service") == sid)
            total_waiting += waiting
            estimates = [
                t.get("estimated_wait_s") or 0
                for t in self._waiting.values()
                if t.get("service") == sid
            ]
            est = max(estimates) if estimates else 0
            if waiting == int(s.get("waiting", -1)) and s.get("estimated_wait_s") is not None:
                est = s["estimated_wait_s"]
            mins = max(0, math.ceil(est / 60))
            span = s.get("estimated_wait_range_s") if waiting == int(s.get("waiting", -1)) else None
            if not waiting:
                wait_text = self.t("no wait")
            elif isinstance(span, list) and len(span) == 2 and span[1] > 60:
                low = int(span[0]) // 60
                wait_text = self.t("~{lo}-{hi} min", lo=low, hi=max(math.ceil(span[1] / 60), low + 1))
            elif mins:
                wait_text = self.t("~{m} min", m=mins)
            else:
                wait_text = self.t("next")
            rows.append(
                {
                    "id": sid,
                    "letter": str(s.get("letter", "")),
                    "name": self.localized(s.get("names"), sid),
                    "waiting": waiting,
                    "waiting_text": self.t("{n} waiting", n=waiting),
                    "wait_text": wait_text,
                }
            )
        self.services = rows
        self.crowd = crowd_level(total_waiting, open_counters)
        self.crowd_text = self.t(CROWD_TEXT[self.crowd])

    def _compose_notices(self) -> None:
        """The ticker's lines in the current language: ``--notice`` lines, the branch's lines
        for every language, then its lines in this language (English where it has none)."""
        by_language = self._notices_by_language
        own = by_language.get(self.language)
        if own is None:
            own = by_language.get(SOURCE_LANGUAGE, [])
        notices = [*self._local_notices, *self._branch_notices, *own]
        if notices != list(self.notices):
            self.notices = notices
            self._rebuild_ticker()

    def _rebuild_ticker(self) -> None:
        self.ticker_text = "   •   ".join(self.notices)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        """Called every second with the branch-local time: clock text and flash expiry."""
        self._now = now
        self.clock_text = now.strftime("%H:%M")
        try:
            self.date_text = format_date(now, "EEE d MMM y", locale=self.language)
        except (UnknownLocaleError, ValueError):
            self.date_text = format_date(now, "EEE d MMM y", locale=SOURCE_LANGUAGE)
        if self.flashing and self.clock() >= self._flash_until:
            self.flashing = False
        self._cycle()

    def _cycle(self) -> None:
        """Next language of the cycle when its turn is over (never while a call flashes)."""
        langs = [lang for lang in (self.cycle_languages or []) if lang]
        if len(langs) < 2 or self.cycle_s <= 0 or self.flashing:
            return
        now = self.clock()
        if self._cycle_at is None:  # the first language gets its full turn
            self._cycle_at = now + self.cycle_s
        if now < self._cycle_at:
            return
        self._cycle_at = now + self.cycle_s
        i = langs.index(self.language) if self.language in langs else -1
        self.language = langs[(i + 1) % len(langs)]
