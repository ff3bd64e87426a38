"""Kiosk state and actions, without widgets: what the citizen sees and can do at each step.

Screens: ``language`` -> ``service`` -> ``details`` (priority, phone) -> ``confirm``; or
``language``/``service`` -> ``booking`` -> ``confirm``. ``offline`` overlays any screen while
the node cannot be reached. Every string comes from the gettext catalogs in ``locale/``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import phonenumbers
from babel.core import UnknownLocaleError
from babel.dates import format_date
from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    NumericProperty,
    OptionProperty,
    StringProperty,
)

from appliance.client import NodeClient, NodeRejected, NodeUnavailable, NotFound
from appliance.config import service_icon
from ui_common.viewmodel import NodeViewModel

from .i18n import CATALOGS, LANGUAGES, SOURCE_LANGUAGE

logger = logging.getLogger(__name__)

SCREENS = ("language", "service", "details", "booking", "confirm")
PRIORITY_CLASS = 1  # "elderly, disabled, pregnant": the node's first priority class


class Speaker(Protocol):
    """Speaks a text aloud in a language (``hardware.guidance.Guide``: the announcer's engine)."""

    def say(self, text: str, language: str) -> None: ...

    def hush(self) -> None:
        """Drop what is still queued (the citizen moved on)."""


class SilentSpeaker:
    """A speaker that only remembers what it was asked to say (tests, machines without audio)."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def say(self, text: str, language: str) -> None:
        self.said.append((text, language))

    def hush(self) -> None:
        pass


def parse_iso(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def minutes(seconds: float | None) -> int:
    """Whole minutes, rounded up, of an estimate in seconds (None -> 0)."""
    return max(0, math.ceil((seconds or 0) / 60))


def minute_range(span: Any) -> tuple[int, int] | None:
    """[p10, p90] seconds of the learned estimate as whole minutes (low down, high up)."""
    if not isinstance(span, (list, tuple)) or len(span) != 2:
        return None
    low = max(0, int(span[0]) // 60)
    return low, max(math.ceil(span[1] / 60), low + 1)


def normalize_phone(text: str, region: str | None) -> str | None:
    """E.164 form of a phone number typed at the kiosk, or None when it is not valid."""
    text = text.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: What the kiosk tells the citizen about the paper ticket, by ``print_state``.
PRINT_MESSAGES: dict[str, str] = {
    "checking": "Printing your ticket…",
    "printed": "Please take your printed ticket.",
    "failed": "The printer is not working. Note your number or scan this code.",
    "unconfirmed": "If no ticket came out, note your number or scan this code.",
    "no_printer": "Note your number or scan this code.",
}
PRINT_STATES = ("", *PRINT_MESSAGES)
#: The same without a QR code (the node has no ``[hq] public_url``: no status page to link).
PRINT_MESSAGES_NO_QR: dict[str, str] = {
    "failed": "The printer is not working. Please note your number.",
    "unconfirmed": "If no ticket came out, please note your number.",
    "no_printer": "Please note your number.",
}


def print_state_of_reply(reply: dict[str, Any]) -> str:
    """First verdict from the 201's ``print`` field (docs/hardware.md).

    ``queued`` only means the spooler took the job: the printer may still refuse it, jam or
    run out of paper moments later, so it is "checking", not "printed". ``no_printer`` and
    ``failed`` (or anything this kiosk does not know) mean no paper will come out.
    """
    printed = reply.get("print")
    status = str(printed.get("status", "")).lower() if isinstance(printed, dict) else ""
    if status == "queued":
        return "checking"
    if status == "no_printer":
        return "no_printer"
    return "failed"


def print_outcome(hardware: dict[str, Any] | None, job: str | None) -> str | None:
    """What ``/state`` -> ``hardware.printer`` says about print job ``job``:
    "printed" once the printer took all of it, "failed" when it failed or the printer is in
    a fault (offline, jammed, out of paper, cover open), None while it is not known yet."""
    printer = (hardware or {}).get("printer")
    if not isinstance(printer, dict):
        return "failed"  # the printer went away from the node's configuration
    for key in ("last_job", "last_failed_job"):
        last = printer.get(key)
        if isinstance(last, dict) and job and last.get("job") == job:
            return "printed" if last.get("ok") else "failed"
    if printer.get("status") not in (None, "ok"):
        return "failed"
    return None


class KioskViewModel(NodeViewModel):
    """All kiosk state; the .kv layout binds to these properties and calls these methods."""

    catalogs = CATALOGS
    screen = OptionProperty("language", options=list(SCREENS))
    #: Rows for the service screen: {id, letter, name, icon, waiting_text, wait_text}.
    services = ListProperty([])
    selected_service = StringProperty("")
    selected_service_name = StringProperty("")
    priority = BooleanProperty(False)
    phone = StringProperty("")
    phone_error = StringProperty("")
    booking_code = StringProperty("")
    booking_error = StringProperty("")
    #: The ticket the node issued (TICKET shape); empty until confirmed.
    ticket = DictProperty({})
    ticket_label = StringProperty("")
    ticket_lines = ListProperty([])
    #: The paper ticket: "" (none yet), checking, printed, failed, unconfirmed, no_printer.
    print_state = OptionProperty("", options=list(PRINT_STATES))
    #: No paper can be counted on (failed, unconfirmed, no printer): the screen is the ticket.
    printer_failed = BooleanProperty(False)
    #: The number and its QR stay on screen until the printer confirmed the paper ticket.
    show_qr = BooleanProperty(False)
    print_message = StringProperty("")
    qr_payload = StringProperty("")
    offline = BooleanProperty(False)
    busy = BooleanProperty(False)
    error = StringProperty("")
    audio = BooleanProperty(False)
    #: The citizen asked for an SMS alert: a tap on a service then asks for the phone number.
    want_sms = BooleanProperty(False)
    #: The branch is closed now (its opening hours, from the node); ``closed_text`` says until when.
    closed = BooleanProperty(False)
    closed_text = StringProperty("")
    #: Large-text mode (a button on the first screen): every text 1.35 times larger.
    large_text = BooleanProperty(False)
    text_scale = NumericProperty(1.0)

    def __init__(
        self,
        client: NodeClient,
        *,
        speaker: Speaker | None = None,
        clock: Callable[[], float],
        idle_timeout_s: float = 45.0,
        confirm_timeout_s: float = 20.0,
        phone_region: str | None = "RW",
        language: str = SOURCE_LANGUAGE,
        print_watch_s: float = 8.0,
        print_poll_s: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(language=language, **kwargs)
        self.client = client
        self.speaker = speaker or SilentSpeaker()
        self.clock = clock
        self.idle_timeout_s = idle_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.phone_region = phone_region
        self.default_language = language
        self._state: dict[str, Any] = {}
        self._last_activity = clock()
        self.print_watch_s = print_watch_s
        self.print_poll_s = print_poll_s
        self._print_job: str | None = None
        self._print_watch: asyncio.Task[Any] | None = None

    # --- strings --------------------------------------------------------------------------

    def retranslate(self) -> None:
        self._rebuild_hours()
        self._rebuild_services()
        self._rebuild_ticket_lines()
        self._set_print_state(self.print_state)

    @property
    def languages(self) -> dict[str, str]:
        return LANGUAGES

    # --- node data ------------------------------------------------------------------------

    def apply_state(self, state: dict[str, Any]) -> None:
        """Take a fresh /state (on connect, on stream events, after issuing)."""
        self._state = state
        self.offline = False
        self._rebuild_hours()
        self._rebuild_services()
        if self.print_state == "checking":
            self._take_print_outcome(print_outcome(state.get("hardware"), self._print_job))

    def _service_name(self, service: dict[str, Any]) -> str:
        return self.localized(service.get("names"), str(service.get("name") or service.get("id", "")))

    def _rebuild_services(self) -> None:
        rows = []
        for s in self._state.get("services", []):
            if s.get("enabled") is False:
                continue  # withdrawn from this branch by HQ's catalogue: not offered
            wait = minutes(s.get("estimated_wait_s"))
            rows.append(
                {
                    "id": s["id"],
                    "letter": s.get("letter", ""),
                    "name": self._service_name(s),
                    "icon": service_icon(str(s["id"]), s.get("names"), s.get("icon")),
                    "waiting": int(s.get("waiting", 0)),
                    "waiting_text": self.t("Waiting: {n}", n=int(s.get("waiting", 0))),
                    "wait_text": self._wait_text(s, wait),
                    "open": not self._closed(s),
                }
            )
        self.services = rows
        if self.selected_service:
            for row in rows:
                if row["id"] == self.selected_service:
                    self.selected_service_name = row["name"]

    def _rebuild_hours(self) -> None:
        """"Closed. Opens at 08:00" (or "tomorrow", or the day) from the node's opening hours."""
        hours = (self._state.get("branch") or {}).get("hours") or {}
        self.closed = hours.get("open") is False
        if not self.closed:
            self.closed_text = ""
            return
        opens, now = parse_iso(hours.get("opens_at")), parse_iso(self._state.get("now"))
        if opens is None:
            self.closed_text = self.t("Closed.")
        elif now is not None and opens.date() == now.date():
            self.closed_text = self.t("Closed. Opens at {time}.", time=opens.strftime("%H:%M"))
        elif now is not None and (opens.date() - now.date()).days == 1:
            self.closed_text = self.t("Closed. Opens tomorrow at {time}.", time=opens.strftime("%H:%M"))
        else:
            try:
                day = format_date(opens, "EEEE", locale=self.language)
            except (UnknownLocaleError, ValueError):
                day = format_date(opens, "EEEE", locale=SOURCE_LANGUAGE)
            self.closed_text = self.t("Closed. Opens {day} at {time}.", day=day, time=opens.strftime("%H:%M"))

    @staticmethod
    def _closed(service: dict[str, Any]) -> bool:
        """No counter serving this service is open now (the node says ``open_counters``)."""
        return service.get("open_counters") == 0

    def _wait_text(self, service: dict[str, Any], minutes_: int) -> str:
        """An honest estimate: with no counter open, no promise of "no wait"."""
        if self.closed:
            return self.t("Closed")
        if self._closed(service):
            return self.t("No counter open now")
        span = minute_range(service.get("estimated_wait_range_s"))
        if span and span[1] > 1:
            return self.t("About {lo}-{hi} min", lo=span[0], hi=span[1])
        return self.t("About {m} min", m=minutes_) if minutes_ else self.t("No wait")

    def _rebuild_ticket_lines(self) -> None:
        t = self.ticket
        if not t:
            self.ticket_lines = []
            return
        lines = [self.t("Please wait to be called")]
        if t.get("people_ahead") is not None:
            lines.append(self.t("People ahead of you: {n}", n=t["people_ahead"]))
        service = next((s for s in self._state.get("services", []) if s.get("id") == t.get("service")), {})
        span = minute_range(t.get("estimated_wait_range_s"))
        if self._closed(service):
            lines.append(self.t("No counter is open for this service now."))
        elif span and span[1] > 1:
            lines.append(self.t("Estimated wait: {lo}-{hi} min", lo=span[0], hi=span[1]))
        elif t.get("estimated_wait_s") is not None:
            lines.append(self.t("Estimated wait: {m} min", m=minutes(t["estimated_wait_s"])))
        self.ticket_lines = lines

    # --- navigation -----------------------------------------------------------------------

    def touch(self) -> None:
        """Any touch on the screen: resets the idle timer."""
        self._last_activity = self.clock()

    def go(self, screen: str) -> None:
        self.touch()
        self.error = ""
        self.screen = screen
        self.speak_screen()

    def choose_language(self, language: str) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unsupported language {language!r}")
        self.language = language
        self.go("service")

    def choose_service(self, service_id: str) -> None:
        """Select a service and go to its details (the phone number for an SMS alert)."""
        if self._select(service_id):
            self.go("details")

    async def tap_service(self, service_id: str) -> bool:
        """A tap on a service: one tap to a ticket, unless the citizen asked for an SMS alert
        (then the phone number screen comes first). True when a ticket was issued."""
        if self.closed:
            self.error = self.closed_text
            return False
        if not self._select(service_id):
            return False
        if self.want_sms:
            self.go("details")
            return False
        return await self.issue()

    def _select(self, service_id: str) -> bool:
        for row in self.services:
            if row["id"] == service_id:
                self.selected_service = service_id
                self.selected_service_name = row["name"]
                return True
        self.error = self.t("Something went wrong. Please ask staff.")
        return False

    def set_sms(self, value: bool) -> None:
        self.touch()
        self.want_sms = bool(value)

    def toggle_large_text(self) -> None:
        self.touch()
        self.large_text = not self.large_text

    def on_large_text(self, _: Any, value: bool) -> None:
        self.text_scale = 1.35 if value else 1.0

    def press_key(self, field: str, key: str) -> None:
        """The on-screen pads: ``key`` is a character, or "back" to delete the last one.
        ``field``: "phone" (digits and +) or "booking" (the booking code's letters and digits)."""
        current = self.phone if field == "phone" else self.booking_code
        text = current[:-1] if key == "back" else current + key
        if field == "phone":
            self.set_phone(text)
        else:
            self.set_booking_code(text)

    def set_priority(self, value: bool) -> None:
        self.touch()
        self.priority = bool(value)

    def set_phone(self, text: str) -> None:
        self.touch()
        self.phone = text
        self.phone_error = ""

    def validate_phone(self) -> str | None | bool:
        """The E.164 number, None when left empty, False (and ``phone_error``) when bad."""
        if not self.phone.strip():
            return None
        normalized = normalize_phone(self.phone, self.phone_region)
        if normalized is None:
            self.phone_error = self.t("This phone number is not valid")
            return False
        return normalized

    def set_booking_code(self, text: str) -> None:
        self.touch()
        text = text.strip()
        # A scanned HQ booking QR is a signed token ("st1.…"): its case is part of the
        # signature. Only a typed short code is normalised to upper case.
        self.booking_code = text if text.startswith("st1.") else text.upper()
        self.booking_error = ""

    def toggle_audio(self) -> None:
        self.touch()
        self.audio = not self.audio
        self.speak_screen()

    def reset(self) -> None:
        """Back to the start for the next citizen; forgets everything the last one typed."""
        self.selected_service = ""
        self.selected_service_name = ""
        self.priority = False
        self.want_sms = False
        self.large_text = False
        self.phone = ""
        self.phone_error = ""
        self.booking_code = ""
        self.booking_error = ""
        self.ticket = {}
        self.ticket_label = ""
        self._stop_print_watch()
        self._print_job = None
        self._set_print_state("")
        self.error = ""
        self.language = self.default_language
        self.go("language")

    def check_idle(self) -> bool:
        """Called by a Clock interval: return to the start after a spell without touches."""
        if self.screen == "language":
            return False
        limit = self.confirm_timeout_s if self.screen == "confirm" else self.idle_timeout_s
        if self.clock() - self._last_activity >= limit:
            self.reset()
            return True
        return False

    # --- audio guidance -------------------------------------------------------------------

    def speech_for_screen(self) -> list[str]:
        """What audio guidance says on the current screen, in order."""
        if self.screen == "language":
            return [f"{name}" for name in LANGUAGES.values()]
        if self.screen == "service":
            out = [self.closed_text] if self.closed else []
            out += [self.t("Choose a service"),
                   self.t("Priority for elderly, disabled or pregnant people?"),
                   self.t("Yes") if self.priority else self.t("No")]
            for row in self.services:
                out.append(f"{row['name']}. {row['waiting_text']}. {row['wait_text']}")
            out.append(self.t("I have a booking"))
            return out
        if self.screen == "details":
            return [
                self.t("Service: {name}", name=self.selected_service_name),
                self.t("Priority: elderly, disabled or pregnant"),
                self.t("Phone for an SMS alert (optional)"),
                self.t("Take a ticket"),
            ]
        if self.screen == "booking":
            return [self.t("Type your booking code"), self.t("Check in")]
        out = [self.t("Your number"), self.ticket_label, *self.ticket_lines]
        if self.print_message:
            out.append(self.print_message)
        return out

    def speak_screen(self) -> None:
        if not self.audio:
            return
        self.speaker.hush()
        if self.screen == "language":
            # Each language's name in its own voice: a citizen hears the one they speak.
            for code, name in LANGUAGES.items():
                self.speaker.say(name, code)
            return
        for text in self.speech_for_screen():
            if text:
                self.speaker.say(text, self.language)

    # --- actions talking to the node ------------------------------------------------------

    def take_ticket(self) -> None:
        self.spawn(self.issue())

    def check_in(self) -> None:
        self.spawn(self.issue_booking())

    async def refresh(self) -> None:
        try:
            self.apply_state(await self.client.state())
        except NodeUnavailable as err:
            self.set_connected(False, str(err))

    async def issue(self) -> bool:
        """Issue a walk-in ticket for the selected service; True when one was issued."""
        self.touch()
        phone = self.validate_phone()
        if phone is False:
            return False
        return await self._issue(
            service=self.selected_service,
            priority=PRIORITY_CLASS if self.priority else 0,
            language=self.language,
            phone=phone or None,
        )

    async def issue_booking(self) -> bool:
        """Check in a booking by its code; True when the node issued its ticket."""
        self.touch()
        if not self.booking_code:
            self.booking_error = self.t("Unknown booking code")
            return False
        return await self._issue(booking_code=self.booking_code, language=self.language)

    async def _issue(self, **fields: Any) -> bool:
        if self.busy:
            return False
        self.busy = True
        self.error = ""
        try:
            reply = await self.client.issue_ticket(**fields)
        except NodeUnavailable as err:
            self.set_connected(False, str(err))
            self.error = self.t("Cannot reach the queue system. Please wait or ask staff.")
            return False
        except NotFound:
            if fields.get("booking_code"):
                self.booking_error = self.t("Unknown booking code")
            else:
                self.error = self.t("Something went wrong. Please ask staff.")
            return False
        except NodeRejected as err:
            logger.warning("kiosk: node refused the ticket: %s", err)
            if fields.get("booking_code"):
                self.booking_error = self.t("Unknown booking code")
            else:
                self.error = self.t("Something went wrong. Please ask staff.")
            return False
        finally:
            self.busy = False
        self.offline = False
        self.ticket = reply
        self.ticket_label = str(reply.get("label", ""))
        self._stop_print_watch()
        printed = reply.get("print")
        self._print_job = str(printed.get("job") or "") if isinstance(printed, dict) else None
        self._set_print_state(print_state_of_reply(reply))
        self._rebuild_ticket_lines()
        self.go("confirm")
        if self.print_state == "checking":
            self._print_watch = self.spawn(self.watch_print())
        return True

    # --- the paper ticket -----------------------------------------------------------------

    def _set_print_state(self, state: str) -> None:
        self.print_state = state
        self.printer_failed = state in ("failed", "unconfirmed", "no_printer")
        # The QR is the ticket's live status page at HQ (status_url), the same link as on
        # the paper; no status page configured, no QR (a bare ticket id helps no phone).
        link = str(self.ticket.get("status_url") or "")
        self.show_qr = bool(state) and state != "printed" and bool(link)
        self.qr_payload = link if self.show_qr else ""
        messages = PRINT_MESSAGES if link else {**PRINT_MESSAGES, **PRINT_MESSAGES_NO_QR}
        self.print_message = self.t(messages[state]) if state else ""

    def _take_print_outcome(self, outcome: str | None) -> bool:
        """Apply a verdict from /state while checking; True once the question is settled."""
        if self.print_state != "checking":
            return True
        if outcome is None:
            return False
        self._set_print_state(outcome)
        if self.audio and self.screen == "confirm":
            self.speaker.say(self.print_message, self.language)
        return True

    async def watch_print(self) -> str:
        """After a "queued" reply: read ``/state`` every ``print_poll_s`` for up to
        ``print_watch_s`` until the printer says how the job went. The stream carries no
        printer news, so this is the one bounded poll the kiosk makes. Without an answer in
        time (a slow jam, a node that went away) the ticket stays on screen: "unconfirmed"."""
        polls = max(1, math.ceil(self.print_watch_s / self.print_poll_s))
        for _ in range(polls):
            await asyncio.sleep(self.print_poll_s)
            if self.print_state != "checking":
                break
            try:
                state = await self.client.state()
            except NodeUnavailable as err:
                logger.info("kiosk: print outcome unknown, node unreachable: %s", err)
                break
            self.apply_state(state)
            if self.print_state != "checking":
                break
        if self.print_state == "checking":
            self._take_print_outcome("unconfirmed")
        return self.print_state

    def _stop_print_watch(self) -> None:
        if self._print_watch is not None and not self._print_watch.done():
            self._print_watch.cancel()
        self._print_watch = None
