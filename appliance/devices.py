"""The node's hardware service: the `[hardware]` section wires hardware/ drivers to the queue.

- printer (a kiosk): every issued ticket becomes a `TicketPrint` on the spooler's queue; the
  reply says "queued" or "failed", never waits for paper; job outcomes show in
  GET /api/v1/state -> hardware.printer.
- keypad (a counter): keypad lines become Branch commands through the node's writer.
- led (a counter): the sign shows each of the device's counters' current ticket.
- announcer (a display): every call and recall, local or replicated, is announced.

Every driver does its blocking I/O on its own thread; this module only moves work between
those threads and the node's event loop (docs/hardware.md, "Wiring in the node").
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sync.envelope import Event

from appliance import events as ev
from appliance.branch import iso
from appliance.config import Config, ConfigError
from appliance.errors import Conflict, DomainError, NotFound
from appliance.node import Node
from hardware.announcer import Announcer, build_announcer_from_config
from hardware.errors import HardwareConfigError, HardwareError, PrinterError
from hardware.keypad import FakeKeypad, KeypadCommand, KeypadReader, asyncio_handler, build_keypad_from_config
from hardware.led_sign import FakeLedSign, SerialLedSign, build_led_sign_from_config
from hardware.printer import PrintSpooler, build_printer_from_config
from hardware.speech import RULES
from hardware.ticket_layout import TicketPrint

logger = logging.getLogger(__name__)

SECTIONS = ("printer", "keypad", "led", "announcer")
# Printer states in which a new ticket is refused at once (the kiosk shows it on screen).
PRINTER_FAULTS = ("offline", "error", "paper_out", "cover_open")
KEYPAD_TIMEOUT_S = 5.0
RECHECK_S = 2.0  # while the printer is faulty, ask it for its status this often
# Short keypad texts for domain error codes (a keypad shows about 32 characters).
KEYPAD_REASONS = {
    "counter_not_open": "counter not open", "not_your_ticket": "not your ticket", "superseded": "taken elsewhere",
    "unknown_service": "unknown service", "unknown_counter": "unknown counter", "wrong_pin": "wrong PIN",
    "locked_out": "locked out, wait", "session_expired": "login again", "unauthorized": "login first",
    "forbidden": "not this counter", "bad_request": "bad request",
}
ACTIONS = {"RECALL": "recall", "START": "start", "DONE": "complete", "NOSHOW": "no-show", "REQUEUE": "requeue"}
STATUSES = {"OPEN": "open", "PAUSE": "pause", "CLOSE": "close"}
CALL_TYPES = (ev.TICKET_CALLED, ev.TICKET_RECALLED)
SIGN_QUIET = (ev.TICKET_ISSUED, ev.TICKET_CANCELLED)  # never change what a counter holds


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key}: expected a table")
    return dict(value)


class HardwareService:
    """The `hardware` NodeService; build it with `from_config(config)`."""

    name = "hardware"

    def __init__(self, config: Config, *, printer: dict[str, Any] | None = None, keypad: dict[str, Any] | None = None,
                 led: dict[str, Any] | None = None, announcer: dict[str, Any] | None = None) -> None:
        """Each argument is that driver's `[hardware.X]` table; None: no such device. Raises ConfigError."""
        self.config = config
        self.node: Node | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._events: asyncio.Queue[list[Event]] | None = None
        self.footer: dict[str, str] = {}
        self.stale_after_ms = 120_000
        self.announce_languages = False
        try:
            self.spooler = self._build_printer(printer) if printer is not None else None
            self.keypad = self._build_keypad(keypad) if keypad is not None else None
            self.sign = self._build_led(led) if led is not None else None
            self.announcer = self._build_announcer(announcer) if announcer is not None else None
        except HardwareConfigError as err:
            raise ConfigError(str(err)) from err
        # printer
        self._jobs: dict[str, dict[str, Any]] = {}  # job id -> {ticket, label, copy}
        self.last_job: dict[str, Any] | None = None
        self.last_failed_job: dict[str, Any] | None = None
        # keypad: one staff session per counter of this device
        self._sessions: dict[str, tuple[str, str]] = {}  # counter -> (token, staff id)
        self._last_ticket: dict[str, str] = {}  # counter -> ticket last acted on (REQUEUE after NOSHOW)
        self._key_handler: Callable[[KeypadCommand], str] | None = None
        # led: what each counter shows
        self._shown: dict[str, str | None] = {}
        # announcer: what was queued, newest last
        self.announced: deque[dict[str, Any]] = deque(maxlen=20)

    # -- building (config errors surface at start-up) ---------------------------------------
    def _build_printer(self, table: dict[str, Any]) -> PrintSpooler:
        table = dict(table)
        if "status_url" in table:
            # A template of the ticket id let anyone guess other tickets' pages; the QR is now
            # the ticket's own unguessable status_url.
            raise ConfigError("hardware.printer.status_url is no longer used: the printed QR is the ticket's "
                              "status_url; set [hq] public_url = \"https://hq.example.org\" instead "
                              "(docs/configuration.md)")
        footer = table.pop("footer", "")
        if isinstance(footer, str):
            footer = {"": footer}
        if not isinstance(footer, Mapping) or not all(isinstance(v, str) for v in footer.values()):
            raise ConfigError("hardware.printer.footer: expected a string or a table of language = text")
        self.footer = dict(footer)
        return build_printer_from_config(table, on_result=self._on_print_result)

    def _build_keypad(self, table: dict[str, Any]) -> KeypadReader | FakeKeypad:
        if not self.config.device_counters:
            raise ConfigError("hardware.keypad: this device serves no counters; list them in device.counters")
        return build_keypad_from_config(table, self._keypad_line)

    def _build_led(self, table: dict[str, Any]) -> SerialLedSign | FakeLedSign:
        if not self.config.device_counters:
            raise ConfigError("hardware.led: this device serves no counters; list them in device.counters")
        return build_led_sign_from_config(table)

    def _build_announcer(self, table: dict[str, Any]) -> Announcer:
        table = dict(table)
        stale = table.pop("stale_after_s", 120)
        if isinstance(stale, bool) or not isinstance(stale, (int, float)) or stale <= 0:
            raise ConfigError("hardware.announcer.stale_after_s: expected a number of seconds > 0")
        self.stale_after_ms = int(stale * 1000)
        self.announce_languages = "languages" in table  # else the branch's languages, read at each call
        return build_announcer_from_config(table)

    # -- life cycle --------------------------------------------------------------------------
    async def start(self, node: Node) -> None:
        self.node = node
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._key_handler = asyncio_handler(self._loop, self._on_key, timeout=KEYPAD_TIMEOUT_S)
        drivers = [d for d in (self.spooler, self.sign, self.announcer, self.keypad) if d is not None]
        await asyncio.to_thread(lambda: [d.start() for d in drivers])
        if self.sign is not None or self.announcer is not None:
            self._unsubscribe = node.on_events(self._events.put_nowait)
            self._spawn(self._event_worker(), "hardware events")
        if self.sign is not None:
            await self._refresh_sign(set(self.config.device_counters), set())
        if self.spooler is not None and self.spooler.config.status_query:
            self._spawn(self._recheck_printer(), "printer recheck")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        drivers = [d for d in (self.keypad, self.sign, self.announcer, self.spooler) if d is not None]
        # PrintSpooler.stop waits for the job in progress (seconds with a jammed printer).
        await asyncio.to_thread(lambda: [d.stop() for d in drivers])

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def view(self) -> dict[str, Any]:
        return {
            "printer": self._printer_view() if self.spooler is not None else None,
            "keypad": {**self.keypad.status(), "logged_in": {c: s for c, (_, s) in self._sessions.items()}}
            if self.keypad is not None else None,
            "led": self.sign.status() if self.sign is not None else None,
            "announcer": self._announcer_view() if self.announcer is not None else None,
        }

    # -- printer -----------------------------------------------------------------------------
    def _printer_view(self) -> dict[str, Any]:
        assert self.spooler is not None
        status = self.spooler.status()
        # `status` is the one word a kiosk needs: "ok" while tickets come out, else the fault
        status["status"] = "ok" if status["state"] in ("ok", "paper_low", "unknown") else status["state"]
        status["last_job"] = self.last_job
        status["last_failed_job"] = self.last_failed_job
        return status

    async def on_ticket_issued(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Queue the ticket's printout; {"status": "queued", "job"} or {"status": "failed", "message"}."""
        if self.spooler is None:
            return {"status": "no_printer"}
        status = self.spooler.status()
        if self.spooler.config.status_query and status["state"] in PRINTER_FAULTS:
            # Known faulty: refuse now so the kiosk shows the number on screen, instead of a
            # ticket coming out later for nobody. The recheck task notices the printer's return.
            self.spooler.check_now()
            message = f"printer {status['state'].replace('_', ' ')}: {status['message']}"
            self._remember_failure(None, ticket, False, message)
            return {"status": "failed", "message": message}
        return await self._submit(ticket, copy=False)

    async def reprint(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Print a ticket again marked COPY; always tried (staff ask when the printer is back)."""
        if self.spooler is None:
            return {"status": "no_printer"}
        return await self._submit(ticket, copy=True)

    async def _submit(self, ticket: dict[str, Any], *, copy: bool) -> dict[str, Any]:
        assert self.spooler is not None and self.node is not None
        try:
            printout = await self._ticket_print(ticket)
        except Exception as err:  # a printout must never fail the issue itself
            logger.exception("ticket %s: could not build its printout", ticket.get("label"))
            return {"status": "failed", "message": f"could not lay out the ticket: {err}"}
        try:
            job = self.spooler.reprint(printout) if copy else self.spooler.submit(printout)
        except PrinterError as err:
            self._remember_failure(None, ticket, copy, str(err))
            return {"status": "failed", "message": str(err)}
        self._jobs[job] = {"ticket": ticket["id"], "label": ticket["label"], "copy": copy}
        while len(self._jobs) > 200:
            self._jobs.pop(next(iter(self._jobs)))
        return {"status": "queued", "job": job}

    async def _ticket_print(self, ticket: dict[str, Any]) -> TicketPrint:
        node = self.node
        assert node is not None
        model = await node.read(node.branch.model)
        language = ticket.get("language") or model.languages[0]
        service = model.services.get(ticket["service"])
        service_name = service.name(language) if service is not None else ticket["service"]
        issued = datetime.fromisoformat(ticket["issued_at"]) if ticket.get("issued_at") else datetime.now(model.tz)
        # The live status page ([hq] public_url); without it, a checked-in booking's code.
        qr: str | None = ticket.get("status_url") or ticket.get("booking_code")
        footer = self.footer.get(language, self.footer.get("", ""))
        return TicketPrint(branch_name=model.name, label=ticket["label"], service_name=service_name,
                           issued_at=issued, people_ahead=ticket.get("people_ahead"),
                           estimated_wait_s=ticket.get("estimated_wait_s"), qr_payload=qr, language=language,
                           footer=footer, ticket_id=ticket["id"])

    def _on_print_result(self, job_id: str, ok: bool, error: str | None) -> None:
        """Spooler thread: hop to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._print_result, job_id, ok, error)

    def _print_result(self, job_id: str, ok: bool, error: str | None) -> None:
        info = self._jobs.pop(job_id, {"ticket": None, "label": None, "copy": False})
        self.last_job = {"job": job_id, **info, "ok": ok, "error": error, "at": self._now()}
        if not ok:
            self.last_failed_job = dict(self.last_job)

    def _remember_failure(self, job_id: str | None, ticket: dict[str, Any], copy: bool, error: str) -> None:
        self.last_job = {"job": job_id, "ticket": ticket["id"], "label": ticket["label"], "copy": copy, "ok": False,
                         "error": error, "at": self._now()}
        self.last_failed_job = dict(self.last_job)

    async def _recheck_printer(self) -> None:
        assert self.spooler is not None
        while True:
            await asyncio.sleep(RECHECK_S)
            status = self.spooler.status()
            if status["state"] in PRINTER_FAULTS and not status["printing"] and not status["queue_depth"]:
                self.spooler.check_now()

    def _now(self) -> str | None:
        assert self.node is not None
        return iso(self.node.clock.wall_ms(), self.config.tz)

    # -- keypad ------------------------------------------------------------------------------
    def _keypad_line(self, cmd: KeypadCommand) -> str:
        """Keypad thread: run the command on the node's loop, wait for its reply."""
        handler = self._key_handler
        return handler(cmd) if handler is not None else "ERR not ready"

    async def _on_key(self, cmd: KeypadCommand) -> str:
        try:
            return await self._key(cmd)
        except DomainError as err:
            return "ERR " + KEYPAD_REASONS.get(err.code, err.message.split(";")[0])
        except Exception:
            logger.exception("keypad command %s failed", cmd)
            return "ERR internal error"

    async def _key(self, cmd: KeypadCommand) -> str:
        node = self.node
        assert node is not None
        counter, key = cmd.counter, cmd.key
        if counter not in self.config.device_counters:
            return "ERR not this counter"
        if key == "LOGIN":
            assert cmd.arg is not None
            session = await asyncio.to_thread(node.staff.login, counter, cmd.arg)
            old = self._sessions.pop(counter, None)
            if old is not None:
                node.staff.logout(old[0])
            self._sessions[counter] = (session.token, session.staff_id)
            logger.info("keypad: %s logged in at %s", session.staff_id, counter)
            return f"OK {session.staff_name}"
        if key == "LOGOUT":
            old = self._sessions.pop(counter, None)
            if old is not None:
                node.staff.logout(old[0])
            return "OK"
        staff = self._staff(counter)
        if key == "NEXT":
            ticket = await node.write(lambda conn: node.branch.call_next(conn, counter))
            if ticket is None:
                return "EMPTY"
            self._last_ticket[counter] = ticket["id"]
            return f"OK {ticket['label']}"
        if key in STATUSES:
            await node.write(lambda conn: node.branch.set_counter(conn, counter, STATUSES[key], staff))
            return "OK"
        if key in ACTIONS or key == "TRANSFER":
            action = ACTIONS.get(key, "transfer")
            last = self._last_ticket.get(counter)

            def act(conn: sqlite3.Connection) -> dict[str, Any]:
                current = node.branch.counter(conn, counter)["current"]
                ticket_id = current["id"] if current is not None else None
                if ticket_id is None and action == "requeue" and last is not None:
                    ticket_id = last  # REQUEUE right after NOSHOW: the citizen turned up late
                if ticket_id is None:
                    raise Conflict("no current ticket", code="no_current_ticket")
                body = {"to_service": self._service_of(conn, cmd.arg or "")} if action == "transfer" else {}
                return node.branch.act(conn, counter, ticket_id, action, body)

            ticket = await node.write(act)
            self._last_ticket[counter] = ticket["id"]
            return f"OK {ticket['label']}"
        return "ERR unknown key"

    def _staff(self, counter: str) -> str | None:
        """The staff id acting at `counter`; DomainError when a login is required and missing."""
        node = self.node
        assert node is not None
        held = self._sessions.get(counter)
        if held is None:
            if node.staff.required:
                raise DomainError("login first", code="unauthorized")
            return None
        try:
            node.staff.check(held[0], counter)
        except DomainError:
            self._sessions.pop(counter, None)
            raise
        return held[1]

    def _service_of(self, conn: sqlite3.Connection, arg: str) -> str:
        """A service id, or a service letter (a keypad may only have letters: TRANSFER B)."""
        assert self.node is not None
        model = self.node.branch.model(conn)
        if arg in model.services:
            return arg
        for service in model.services.values():
            if service.letter == arg.upper():
                return service.id
        raise NotFound(f"unknown service {arg!r}", code="unknown_service")

    # -- events: LED sign and announcer --------------------------------------------------------
    async def _event_worker(self) -> None:
        """One batch at a time, in commit order, so calls are shown and announced in order."""
        assert self._events is not None
        while True:
            events = await self._events.get()
            try:
                await self._on_events(events)
            except Exception:
                logger.exception("hardware could not handle %d events", len(events))

    async def _on_events(self, events: list[Event]) -> None:
        mine = set(self.config.device_counters)
        touched: set[str] = set()
        blink: set[str] = set()
        calls: list[Event] = []
        for event in events:
            if event.type not in ev.TICKET_TYPES and event.type not in ev.COUNTER_TYPES:
                continue
            counter = event.payload.get("counter")
            if event.type in CALL_TYPES:
                calls.append(event)
            if self.sign is not None and event.type not in SIGN_QUIET:
                # any ticket event may change what a counter holds (a call elsewhere supersedes ours)
                touched |= mine if event.type in ev.TICKET_TYPES else ({counter} & mine)
                if event.type in CALL_TYPES and counter in mine:
                    blink.add(counter)
        if self.sign is not None and touched:
            await self._refresh_sign(touched, blink)
        if self.announcer is not None and calls:
            await self._announce(calls)

    async def _refresh_sign(self, counters: set[str], blink: set[str]) -> None:
        node = self.node
        assert node is not None and self.sign is not None

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
            changed = label != self._shown.get(counter, "")
            if label is None and changed:
                self.sign.clear(counter)
            elif label is not None and (changed or counter in blink):
                self.sign.show(counter, label, blink=True)
            self._shown[counter] = label

    async def _announce(self, calls: list[Event]) -> None:
        node = self.node
        assert node is not None and self.announcer is not None
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
            languages = None if self.announce_languages else [x for x in model.languages if x in RULES] or None
            queued = self.announcer.announce(ticket["label"], spoken, languages=languages)
            self.announced.append({"ticket": ticket["id"], "label": ticket["label"], "counter": counter,
                                   "said_counter": spoken, "type": event.type, "queued": queued,
                                   "at": iso(now, model.tz)})

    def _announcer_view(self) -> dict[str, Any]:
        assert self.announcer is not None
        view = self.announcer.status()
        if not self.announce_languages:
            view["languages"] = "branch"  # the branch's languages, read at each call
        view["announced"] = list(self.announced)
        played = getattr(self.announcer.sink, "played", None)
        if played is not None:  # the wav and silent sinks remember what they played
            view["played"] = [c.text if c.kind == "speech" else "<chime>" for c in list(played)[-60:]]
        return view


def counter_number(name: str) -> str:
    """What is said after "counter": the number in "Counter 3" ("3"), else the whole name."""
    match = re.search(r"(\d+)\s*$", name)
    return match[1] if match else name


def from_config(config: Config) -> HardwareService | None:
    """The hardware service for `[hardware]`, or None when it names no device."""
    raw = config.raw.get("hardware")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("hardware: expected a table")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"hardware: unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
    tables = {name: _table(raw, name, "hardware") for name in SECTIONS if name in raw}
    if not tables:
        return None
    try:
        return HardwareService(config, **tables)
    except HardwareError as err:
        raise ConfigError(str(err)) from err
