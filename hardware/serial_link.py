"""A serial port that reopens itself: the shared plumbing of the keypad and the LED sign.

Cheap USB-serial adapters get unplugged, and a pty from socat disappears when socat dies.
:class:`ReconnectingSerial` owns one pyserial port, opens it by path or pyserial URL
(``/dev/ttyUSB0``, ``socket://127.0.0.1:7000``, ``loop://``), and on any error closes it and
retries with exponential backoff until it is back, without a restart. Waits use an Event so
``stop()`` is prompt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import serial

logger = logging.getLogger(__name__)


class ReconnectingSerial:
    """Open/close/read/write with backoff; thread-safe for one reader and many writers."""

    def __init__(self, url: str, *, baudrate: int = 9600, read_timeout: float = 0.2,
                 write_timeout: float = 2.0, backoff_initial: float = 0.2,
                 backoff_max: float = 5.0, stop_event: threading.Event | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.url = url
        self.baudrate = baudrate
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_event = stop_event or threading.Event()
        self._now = now
        self._port: Any = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.connected = threading.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._backoff = backoff_initial
        self._on_connect: list[Callable[[], None]] = []

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the opening thread) each time the port (re)opens."""
        self._on_connect.append(callback)

    def ensure_open(self) -> bool:
        """Open the port if needed; on failure wait the backoff and return False."""
        if self._port is not None:
            return True
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                         timeout=self.read_timeout,
                                         write_timeout=self.write_timeout)
        except (serial.SerialException, OSError, ValueError) as err:
            self._note_error(f"cannot open {self.url}: {err}")
            self.stop_event.wait(self._backoff)
            self._backoff = min(self._backoff * 2, self.backoff_max)
            return False
        with self._lock:
            self._port = port
        if self.reconnects or self.last_error:
            logger.info("serial %s is back", self.url)
        self.reconnects += 1
        self._backoff = self.backoff_initial
        self.connected.set()
        for callback in self._on_connect:
            try:
                callback()
            except Exception:
                logger.exception("on_connect callback failed for %s", self.url)
        return True

    def read(self, size: int = 256) -> bytes:
        """Read what is there (up to ``read_timeout``); b"" on timeout or on a lost port."""
        port = self._port
        if port is None:
            return b""
        try:
            # read(1) returns as soon as a byte is there; read(size) would wait for the
            # timeout whenever fewer than size bytes arrive (every keypad line)
            data = port.read(1)
            if data:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(min(waiting, size))
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            # TypeError/AttributeError: pyserial racing a close() from another thread
            self.drop(f"read failed: {err}")
            return b""
        return data

    def write(self, data: bytes) -> bool:
        """Write all of ``data``; False (and the port is dropped) if that failed."""
        with self._write_lock:
            port = self._port
            if port is None:
                return False
            try:
                port.write(data)
                port.flush()
                return True
            except (serial.SerialException, OSError, TypeError, AttributeError) as err:
                self.drop(f"write failed: {err}")
                return False

    def drop(self, reason: str) -> None:
        """Close the port after an error; the next ensure_open() retries."""
        with self._lock:
            port, self._port = self._port, None
        if port is None:
            return
        self.connected.clear()
        self._note_error(reason)
        try:
            port.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        self.connected.clear()
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("serial %s: %s", self.url, message)
        self.last_error = message
        self.last_error_at = self._now()

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "connected": self.connected.is_set(),
            "opens": self.reconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


class SerialWorker:
    """One thread driving one :class:`ReconnectingSerial`; subclasses write ``_run``, which
    loops until ``self._stop`` is set. ``stop()`` is prompt and closes the port."""

    thread_prefix = "serial"

    def __init__(self, url: str, *, baudrate: int = 9600, backoff_max: float = 5.0) -> None:
        self._stop = threading.Event()
        self.link = ReconnectingSerial(url, baudrate=baudrate, backoff_max=backoff_max, stop_event=self._stop)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.thread_prefix} {self.link.url}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop promptly (within one read timeout) and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.link.close()

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
