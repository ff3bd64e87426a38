"""LED counter signs ("A042 -> 3") on a serial line: frame format, driver, fake.

Frame (ours; docs/hardware.md), ASCII::

    STX <counter> '|' <text> '|' <mode> ETX <bcc>
    0x02  "3"       |   "A042"  |  "B"    0x03  "5C"

``mode`` is ``B`` (blink a few times, then steady: a new call), ``S`` (steady) or ``C`` (clear;
text empty). ``text`` is at most 8 printable ASCII characters without ``|``. ``bcc`` is the XOR
of every byte between STX and ETX, as two upper-case hex digits. Signs on a shared RS-485
line pick the frames with their own counter id. A sign may answer ACK (0x06); it is ignored.
When the port comes back after an unplug, the driver re-sends every counter's current text.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config import ConfigReader
from .errors import HardwareConfigError
from .serial_link import SerialWorker

logger = logging.getLogger(__name__)

STX, ETX = 0x02, 0x03
MAX_TEXT = 8
_COUNTER = re.compile(r"[A-Za-z0-9_-]{1,16}")


@dataclass(frozen=True)
class LedFrame:
    """What one sign shows."""

    counter: str
    text: str
    mode: str  # "B" blink, "S" steady, "C" clear


def sign_text(text: str) -> str:
    """Printable ASCII, no '|', at most MAX_TEXT characters (accents stripped)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text)
                    if 32 <= ord(c) < 127 and c != "|")
    return plain[:MAX_TEXT]


def encode_frame(frame: LedFrame) -> bytes:
    if not _COUNTER.fullmatch(frame.counter):
        raise ValueError(f"bad counter id {frame.counter!r}")
    if frame.mode not in ("B", "S", "C"):
        raise ValueError(f"bad mode {frame.mode!r}")
    body = f"{frame.counter}|{sign_text(frame.text)}|{frame.mode}".encode("ascii")
    bcc = 0
    for b in body:
        bcc ^= b
    return bytes([STX]) + body + bytes([ETX]) + f"{bcc:02X}".encode("ascii")


def decode_frames(data: bytes) -> tuple[list[LedFrame], bytes]:
    """Frames found in ``data`` (bad ones skipped) and the unconsumed tail."""
    frames: list[LedFrame] = []
    while True:
        start = data.find(bytes([STX]))
        if start < 0:
            return frames, b""
        end = data.find(bytes([ETX]), start)
        if end < 0 or len(data) < end + 3:
            return frames, data[start:]
        body, bcc_text = data[start + 1:end], data[end + 1:end + 3]
        data = data[end + 3:]
        bcc = 0
        for b in body:
            bcc ^= b
        try:
            counter, text, mode = body.decode("ascii").split("|")
            ok = f"{bcc:02X}".encode() == bcc_text and mode in ("B", "S", "C")
        except (UnicodeDecodeError, ValueError):
            ok = False
        if ok:
            frames.append(LedFrame(counter, text, mode))
        else:
            logger.warning("led: skipped a corrupt frame %r", body[:40])


class LedSign(Protocol):
    """What the node calls; every method returns at once."""

    def show(self, counter: str, label: str, blink: bool = True) -> None: ...
    def clear(self, counter: str) -> None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def status(self) -> dict[str, Any]: ...


class _SignState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, LedFrame] = {}

    def remember(self, frame: LedFrame) -> None:
        with self.lock:
            if frame.mode == "C":
                self.current.pop(frame.counter, None)
            else:
                self.current[frame.counter] = frame


class SerialLedSign(SerialWorker):
    """Writes frames to a serial port from its own thread; re-sends state after a replug."""

    thread_prefix = "led"

    def __init__(self, url: str, *, baudrate: int = 9600, backoff_max: float = 5.0,
                 queue_size: int = 256) -> None:
        super().__init__(url, baudrate=baudrate, backoff_max=backoff_max)
        self.link.on_connect(self._resend_all)
        self._state = _SignState()
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=queue_size)
        self.frames_sent = 0

    def show(self, counter: str, label: str, blink: bool = True) -> None:
        self._put(LedFrame(counter, sign_text(label), "B" if blink else "S"))

    def clear(self, counter: str) -> None:
        self._put(LedFrame(counter, "", "C"))

    def current(self) -> dict[str, str]:
        with self._state.lock:
            return {c: f.text for c, f in self._state.current.items()}

    def _put(self, frame: LedFrame) -> None:
        data = encode_frame(frame)  # raises ValueError for a bad counter id
        self._state.remember(frame)
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            logger.warning("led sign %s: queue full, frame dropped", self.link.url)

    def _resend_all(self) -> None:
        # runs on the sign thread when the port (re)opens: show what every counter shows now
        with self._state.lock:
            frames = [LedFrame(f.counter, f.text, "S") for f in self._state.current.values()]
        for frame in frames:
            if self.link.write(encode_frame(frame)):
                self.frames_sent += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.link.ensure_open():
                    continue
                try:
                    data = self._queue.get_nowait()
                except queue.Empty:
                    self.link.read(64)  # ACKs are ignored; a read notices an unplugged port
                    continue
                if self.link.write(data):
                    self.frames_sent += 1
                # a failed write is not retried: _resend_all restores state on reconnect
            except Exception:
                logger.exception("led sign %s: unexpected error", self.link.url)
                self.link.drop("unexpected error")
                self._stop.wait(0.5)
        self.link.close()

    def status(self) -> dict[str, Any]:
        st = self.link.status()
        st.update(kind="serial", showing=self.current(), frames_sent=self.frames_sent)
        return st


class FakeLedSign:
    """Records what it was asked to show (tests, the demo without a sign)."""

    def __init__(self) -> None:
        self._state = _SignState()
        self.shown: list[LedFrame] = []

    def show(self, counter: str, label: str, blink: bool = True) -> None:
        frame = LedFrame(counter, sign_text(label), "B" if blink else "S")
        encode_frame(frame)
        self.shown.append(frame)
        self._state.remember(frame)

    def clear(self, counter: str) -> None:
        frame = LedFrame(counter, "", "C")
        encode_frame(frame)
        self.shown.append(frame)
        self._state.remember(frame)

    def current(self) -> dict[str, str]:
        with self._state.lock:
            return {c: f.text for c, f in self._state.current.items()}

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"kind": "fake", "connected": True, "showing": self.current()}


def build_led_sign_from_config(data: Mapping[str, Any]) -> SerialLedSign | FakeLedSign:
    """``{"backend": "serial", "url": "/dev/ttyUSB1", "baudrate": 9600}`` or
    ``{"backend": "fake"}``; returns an unstarted sign (call ``start()``)."""
    r = ConfigReader("hardware.led", data)
    backend = r.choice("backend", ("serial", "fake"), "serial")
    if backend == "fake":
        r.finish()
        return FakeLedSign()
    url = r.str("url")
    if not url:
        raise HardwareConfigError("[hardware.led] url must not be empty")
    baudrate = r.int("baudrate", 9600, min=50)
    backoff_max = r.float("backoff_max", 5.0, min=0.1)
    r.finish()
    return SerialLedSign(url, baudrate=baudrate, backoff_max=backoff_max)
