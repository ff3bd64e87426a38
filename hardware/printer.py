"""The ticket printer: config, and a spooler that prints on its own thread.

The node calls :meth:`PrintSpooler.submit` (never blocks, returns a job id) from the event
loop; the spooler renders, connects with a timeout, reads the printer's status (DLE EOT),
writes with a timeout and reads the status again, then reports the outcome through
``on_result(job_id, ok, error)`` on the spooler thread. A printer that refuses, vanishes or
hangs mid-ticket costs one job's timeouts and shows up in :meth:`PrintSpooler.status`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .config import ConfigReader
from .errors import HardwareConfigError, PrinterQueueFull, PrinterUnavailable
from .printer_backends import (
    DummyConnection,
    DummyDevice,
    FileConnection,
    NetworkConnection,
    PrinterConnection,
    PrinterStatusBits,
    SerialConnection,
    UsbConnection,
    read_status,
)
from .ticket_layout import CODEPAGES, LayoutOptions, TicketPrint, render_ticket

logger = logging.getLogger(__name__)

BACKENDS = ("network", "usb", "serial", "file", "dummy")
STATES = ("ok", "paper_low", "paper_out", "cover_open", "offline", "error", "unknown")

_JOB_IDS = itertools.count(1)  # process-wide, so job ids from several spoolers never collide

ResultCallback = Callable[[str, bool, "str | None"], None]


@dataclass(frozen=True)
class PrinterConfig:
    """Parsed ``[hardware.printer]`` table; see docs/hardware.md for each key."""

    backend: str
    host: str = ""
    port: int = 9100
    devfile: str = ""
    baudrate: int = 9600
    dsrdtr: bool = True
    vendor_id: int = 0
    product_id: int = 0
    in_ep: int | None = None
    out_ep: int | None = None
    connect_timeout: float = 3.0
    write_timeout: float = 5.0
    status_timeout: float = 1.0
    status_query: bool = True
    poll_interval: float = 30.0
    queue_size: int = 64
    layout: LayoutOptions = LayoutOptions()
    logo_path: str | None = None

    @property
    def target(self) -> str:
        return {
            "network": f"{self.host}:{self.port}",
            "usb": f"usb:{self.vendor_id:04x}:{self.product_id:04x}",
            "serial": f"{self.devfile}@{self.baudrate}",
            "file": self.devfile,
            "dummy": "dummy",
        }[self.backend]


def parse_printer_config(data: Mapping[str, Any]) -> PrinterConfig:
    """Validate a printer config dict; raises :class:`HardwareConfigError` with the bad key."""
    r = ConfigReader("hardware.printer", data)
    backend = r.choice("backend", BACKENDS)
    kw: dict[str, Any] = {"backend": backend}
    if backend == "network":
        kw["host"] = r.str("host")
        kw["port"] = r.int("port", 9100, min=1, max=65535)
    elif backend == "usb":
        kw["vendor_id"] = r.int("vendor_id", min=0, max=0xFFFF)
        kw["product_id"] = r.int("product_id", min=0, max=0xFFFF)
        kw["in_ep"] = r.int("in_ep", None, min=0, max=0xFF)
        kw["out_ep"] = r.int("out_ep", None, min=0, max=0xFF)
    elif backend == "serial":
        kw["devfile"] = r.str("devfile")
        kw["baudrate"] = r.int("baudrate", 9600, min=50)
        kw["dsrdtr"] = r.bool("dsrdtr", True)
    elif backend == "file":
        kw["devfile"] = r.str("devfile")
    if backend in ("network", "usb", "serial") and not (kw.get("host", "x") and
                                                         kw.get("devfile", "x")):
        raise HardwareConfigError(f"[hardware.printer] backend {backend} needs a non-empty "
                                  f"{'host' if backend == 'network' else 'devfile'}")
    if backend == "file" and not kw["devfile"]:
        raise HardwareConfigError("[hardware.printer] backend file needs a non-empty devfile")
    kw["connect_timeout"] = r.float("connect_timeout", 3.0, min=0.05)
    kw["write_timeout"] = r.float("write_timeout", 5.0, min=0.05)
    kw["status_timeout"] = r.float("status_timeout", 1.0, min=0.05)
    kw["status_query"] = r.bool("status_query", backend != "file")
    if backend == "file" and kw["status_query"]:
        raise HardwareConfigError("[hardware.printer] status_query is not possible with backend file")
    kw["poll_interval"] = r.float("poll_interval", 30.0)
    kw["queue_size"] = r.int("queue_size", 64, min=1, max=10_000)
    kw["logo_path"] = r.str("logo_path", None)
    kw["layout"] = LayoutOptions(
        codepage=r.choice("codepage", sorted(CODEPAGES), "CP858"),
        width_chars=r.int("width_chars", 42, min=16, max=64),
        label_scale=r.int("label_scale", 4, min=1, max=8),
        qr_mode=r.choice("qr_mode", ("native", "image"), "native"),
        qr_size=r.int("qr_size", 6, min=1, max=16),
        cut=r.bool("cut", True),
        profile=r.str("profile", "default"),
    )
    r.finish()
    return PrinterConfig(**kw)


def make_connection_factory(cfg: PrinterConfig,
                            dummy: DummyDevice | None = None) -> Callable[[], PrinterConnection]:
    """A function returning a fresh, unopened connection for each job."""
    if cfg.backend == "network":
        return lambda: NetworkConnection(cfg.host, cfg.port, cfg.connect_timeout,
                                         cfg.write_timeout, cfg.status_timeout)
    if cfg.backend == "serial":
        return lambda: SerialConnection(cfg.devfile, cfg.baudrate, cfg.write_timeout,
                                        cfg.status_timeout, cfg.dsrdtr)
    if cfg.backend == "usb":
        return lambda: UsbConnection(cfg.vendor_id, cfg.product_id, cfg.in_ep, cfg.out_ep,
                                     cfg.write_timeout, cfg.status_timeout)
    if cfg.backend == "file":
        return lambda: FileConnection(cfg.devfile, cfg.write_timeout)
    device = dummy if dummy is not None else DummyDevice()
    return lambda: DummyConnection(device)


@dataclass
class _Job:
    id: str
    ticket: TicketPrint
    state: str = "queued"      # queued | printing | ok | failed
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ticket_id": self.ticket.ticket_id, "label": self.ticket.label,
                "state": self.state, "error": self.error, "copy": self.ticket.copy}


_STOP = object()


class PrintSpooler:
    """Prints tickets on one worker thread, with a bounded queue and per-step timeouts.

    Thread-safe: ``submit``, ``reprint``, ``status`` and ``job`` may be called from any thread
    (the asyncio loop included) and never wait on the printer.
    """

    def __init__(self, config: PrinterConfig, *,
                 connection_factory: Callable[[], PrinterConnection] | None = None,
                 on_result: ResultCallback | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 dummy: DummyDevice | None = None) -> None:
        self.config = config
        #: the fake printer when backend is "dummy" (tests, demo), else None
        self.dummy = dummy if dummy is not None or config.backend != "dummy" else DummyDevice()
        self._connect = connection_factory or make_connection_factory(config, self.dummy)
        self.on_result = on_result
        self._monotonic, self._now = monotonic, now
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._state = "unknown"
        self._message = "not checked yet"
        self._last_error_at: datetime | None = None
        self._last_ok_at: datetime | None = None
        self._updated_at: datetime | None = None
        self._printing_since: float | None = None
        self._ok = self._failed = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="print-spooler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the job in progress; still-queued jobs are reported as failed.

        Waits at most ``timeout`` (default: one job's worth of timeouts) for the thread.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker checks _stopping between jobs
        thread.join(self._job_budget() + 1.0 if timeout is None else timeout)
        if thread.is_alive():
            logger.warning("print spooler thread still busy after stop (stuck printer)")
        self._thread = None
        self._drain_failed("spooler stopped")

    # -- API for the node ------------------------------------------------------------------
    def submit(self, ticket: TicketPrint) -> str:
        """Queue ``ticket``; returns its job id at once. Raises PrinterQueueFull when full."""
        if ticket.logo_path is None and self.config.logo_path:
            ticket = replace(ticket, logo_path=self.config.logo_path)
        job = _Job(id=f"job-{next(_JOB_IDS):06d}", ticket=ticket)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > 500:
                self._jobs.popitem(last=False)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                job.state, job.error = "failed", "print queue full"
            raise PrinterQueueFull(f"print queue full ({self.config.queue_size} jobs)") from None
        return job.id

    def reprint(self, ticket: TicketPrint) -> str:
        """Print ``ticket`` again, marked as a copy; returns the new job id."""
        return self.submit(replace(ticket, copy=True))

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The state of a recent job (last 500), or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.as_dict() if job else None

    def status(self) -> dict[str, Any]:
        """Printer status for GET /api/v1/state's ``hardware.printer`` (JSON-ready)."""
        with self._lock:
            state, message = self._state, self._message
            since = self._printing_since
            if since is not None and self._monotonic() - since > self._job_budget() + 1.0:
                state = "error"
                message = f"print job stuck for {self._monotonic() - since:.0f} s"
            return {
                "state": state,
                "message": message,
                "backend": self.config.backend,
                "target": self.config.target,
                "status_supported": self.config.status_query,
                "last_error_at": _iso(self._last_error_at),
                "last_ok_at": _iso(self._last_ok_at),
                "updated_at": _iso(self._updated_at),
                "queue_depth": self._queue.qsize(),
                "printing": since is not None,
                "jobs_ok": self._ok,
                "jobs_failed": self._failed,
            }

    def check_now(self) -> None:
        """Ask the worker to poll the printer status soon (returns at once)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    # -- worker ----------------------------------------------------------------------------
    def _job_budget(self) -> float:
        c = self.config
        return c.connect_timeout + c.write_timeout * 2 + c.status_timeout * 6

    def _run(self) -> None:
        poll = self.config.poll_interval if self.config.poll_interval > 0 else None
        self._poll_status()
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=poll)
            except queue.Empty:
                self._poll_status()
                continue
            if item is _STOP:
                break
            if item is None:
                self._poll_status()
                continue
            try:
                self._print(item)
            except Exception:  # never let one job kill the spooler
                logger.exception("print job %s crashed", item.id)
                self._finish(item, False, "internal error")

    def _poll_status(self) -> None:
        if not self.config.status_query:
            return
        conn = self._connect()
        try:
            conn.open()
            bits = read_status(conn)
        except PrinterUnavailable as err:
            self._set_state("offline", str(err))
            return
        finally:
            conn.close()
        if bits is None:
            self._set_state("offline", "printer did not answer the status query")
        else:
            self._set_bits(bits)

    def _print(self, job: _Job) -> None:
        with self._lock:
            job.state = "printing"
            self._printing_since = self._monotonic()
        try:
            data = render_ticket(job.ticket, self.config.layout)
        except Exception as err:
            logger.exception("ticket %s could not be rendered", job.ticket.label)
            self._finish(job, False, f"render failed: {err}")
            return
        conn = self._connect()
        try:
            conn.open()
            if self.config.status_query:
                bits = read_status(conn)
                if bits is None:
                    raise PrinterUnavailable("printer did not answer the status query")
                self._set_bits(bits)
                if bits.state not in ("ok", "paper_low"):
                    self._finish(job, False, f"printer {bits.state.replace('_', ' ')}")
                    return
            conn.write(data)
            if self.config.status_query:
                bits = read_status(conn)
                if bits is None:
                    raise PrinterUnavailable("printer stopped answering during the ticket")
                self._set_bits(bits)
                if bits.state not in ("ok", "paper_low"):
                    self._finish(job, False, f"printer {bits.state.replace('_', ' ')} "
                                             "while printing")
                    return
            else:
                self._set_state("ok", "printed")
        except PrinterUnavailable as err:
            state = "offline" if "connect" in str(err) or "open" in str(err) else "error"
            self._set_state(state, str(err))
            self._finish(job, False, str(err))
            return
        finally:
            conn.close()
        self._finish(job, True, None)

    def _set_bits(self, bits: PrinterStatusBits) -> None:
        state = bits.state
        self._set_state(state, {"ok": "ready", "paper_low": "paper roll nearly empty",
                                "paper_out": "out of paper", "cover_open": "cover open",
                                "offline": "printer offline", "error": "printer error"}[state])

    def _set_state(self, state: str, message: str) -> None:
        now = self._now()
        with self._lock:
            if state != self._state:
                log = logger.info if state in ("ok", "paper_low") else logger.warning
                log("printer %s: %s (%s)", self.config.target, state, message)
            self._state, self._message, self._updated_at = state, message, now
            if state in ("ok", "paper_low"):
                self._last_ok_at = now
            else:
                self._last_error_at = now

    def _finish(self, job: _Job, ok: bool, error: str | None) -> None:
        with self._lock:
            job.state, job.error = ("ok", None) if ok else ("failed", error)
            self._printing_since = None
            if ok:
                self._ok += 1
            else:
                self._failed += 1
        if not ok:
            logger.warning("print job %s (%s) failed: %s", job.id, job.ticket.label, error)
        if self.on_result is not None:
            try:
                self.on_result(job.id, ok, error)
            except Exception:
                logger.exception("printer on_result callback failed")

    def _drain_failed(self, reason: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Job):
                self._finish(item, False, reason)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def build_printer_from_config(data: Mapping[str, Any], *,
                              on_result: ResultCallback | None = None) -> PrintSpooler:
    """Build an (unstarted) spooler from a ``[hardware.printer]`` dict; call ``start()``."""
    return PrintSpooler(parse_printer_config(data), on_result=on_result)
