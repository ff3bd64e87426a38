"""Counter keypads on a serial line: the line protocol, its parser and a reconnecting reader.

Protocol (docs/hardware.md has the full table), ASCII, one command per line::

    <counter>:<KEY>[ <arg>]\\r\\n        e.g.  3:NEXT   3:TRANSFER B   3:LOGIN 4821
    <counter>:OK[ <text>]\\r\\n          e.g.  3:OK A042
    <counter>:ERR <reason>\\r\\n         e.g.  3:ERR no ticket waiting

Several keypads may share one RS-485 line; the counter prefix routes lines and replies.
Each parsed line becomes an immutable :class:`KeypadCommand` passed to ``handler(cmd)``,
which returns the reply text (``"OK A042"`` / ``"ERR reason"``). Garbage (binary noise,
invalid UTF-8, overlong lines) is logged and skipped; readable but invalid lines get an
``ERR`` reply so the person at the keypad sees something.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigReader
from .errors import HardwareConfigError, KeypadError
from .serial_link import SerialWorker

logger = logging.getLogger(__name__)

MAX_LINE = 64
MAX_REPLY = 32

# key -> (argument name or None, argument pattern)
KEYS: dict[str, tuple[str | None, re.Pattern[str] | None]] = {
    "NEXT": (None, None),
    "RECALL": (None, None),
    "START": (None, None),
    "DONE": (None, None),
    "NOSHOW": (None, None),
    "REQUEUE": (None, None),
    "TRANSFER": ("service", re.compile(r"[A-Za-z0-9_-]{1,32}")),
    "OPEN": (None, None),
    "PAUSE": (None, None),
    "CLOSE": (None, None),
    "LOGIN": ("pin", re.compile(r"[0-9]{4,8}")),
    "LOGOUT": (None, None),
    "PING": (None, None),
}
_REPLY = re.compile(r"(?:[A-Za-z0-9_-]{1,16}:)?(?:OK|ERR)(?: .*)?")
_LINE = re.compile(r"([A-Za-z0-9_-]{1,16}):([A-Za-z]{1,12})(?: (\S.*))?")


@dataclass(frozen=True)
class KeypadCommand:
    """One keypad key press (or key + argument), already validated."""

    counter: str
    key: str
    arg: str | None = None

    def __str__(self) -> str:  # never shows a PIN in logs
        shown = "****" if self.key == "LOGIN" else self.arg
        return f"{self.counter}:{self.key}" + (f" {shown}" if shown else "")


def parse_line(line: str) -> KeypadCommand:
    """Parse one line (without its terminator); raises KeypadError with a short reason."""
    m = _LINE.fullmatch(line.strip())
    if not m:
        raise KeypadError("bad line")
    counter, key, arg = m.group(1), m.group(2).upper(), m.group(3)
    if key not in KEYS:
        raise KeypadError(f"unknown key {key[:12]}")
    arg_name, pattern = KEYS[key]
    if arg_name is None:
        if arg is not None:
            raise KeypadError(f"{key} takes no argument")
        return KeypadCommand(counter, key)
    if arg is None or pattern is None or not pattern.fullmatch(arg.strip()):
        raise KeypadError(f"{key} needs a valid {arg_name}")
    return KeypadCommand(counter, key, arg.strip())


def format_reply(counter: str | None, text: str) -> bytes:
    """Reply line: printable ASCII (accents stripped), at most MAX_REPLY characters of text."""
    text = text.strip() or "OK"
    if not (text == "OK" or text.startswith("OK ") or text == "ERR" or text.startswith("ERR ")):
        text = "OK " + text
    ascii_text = "".join(c for c in unicodedata.normalize("NFKD", text)
                         if 32 <= ord(c) < 127)[:MAX_REPLY]
    prefix = f"{counter}:" if counter else ""
    return f"{prefix}{ascii_text}\r\n".encode("ascii")


Handler = Callable[[KeypadCommand], str]


class KeypadProtocol:
    """Turns received bytes into handler calls and reply bytes; no I/O of its own."""

    def __init__(self, handler: Handler, *, max_line: int = MAX_LINE) -> None:
        self.handler = handler
        self.max_line = max_line
        self._buf = bytearray()
        self._overlong = False
        self.lines_ok = 0
        self.lines_rejected = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Consume received bytes; returns the reply lines to write back."""
        replies: list[bytes] = []
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._overlong:
                    self._overlong = False
                    self.lines_rejected += 1
                    logger.warning("keypad: overlong line dropped")
                    replies.append(format_reply(None, "ERR line too long"))
                elif self._buf:
                    reply = self.handle_line(bytes(self._buf))
                    if reply is not None:
                        replies.append(reply)
                self._buf.clear()
                continue
            if self._overlong:
                continue
            self._buf.append(byte)
            if len(self._buf) > self.max_line:
                self._buf.clear()
                self._overlong = True
        return replies

    def handle_line(self, raw: bytes) -> bytes | None:
        """One complete line in, one reply line out (None: noise, nothing to answer)."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.lines_rejected += 1
            logger.warning("keypad: skipped %d bytes of invalid UTF-8", len(raw))
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in line) or not line.isascii():
            self.lines_rejected += 1
            logger.warning("keypad: skipped a line with control or non-ASCII characters: %r",
                           line[:MAX_LINE])
            return None
        if _REPLY.fullmatch(line.strip()):
            # our own reply coming back (RS-485 echo, loop://, another node on the line):
            # answering it would start an endless ERR ping-pong
            return None
        try:
            cmd = parse_line(line)
        except KeypadError as err:
            self.lines_rejected += 1
            logger.info("keypad: rejected %r: %s", line[:MAX_LINE], err)
            counter = line.split(":", 1)[0] if ":" in line else None
            if counter is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", counter):
                counter = None
            return format_reply(counter, f"ERR {err}")
        self.lines_ok += 1
        if cmd.key == "PING":
            return format_reply(cmd.counter, "OK PONG")
        try:
            reply = self.handler(cmd)
        except Exception:
            logger.exception("keypad handler failed for %s", cmd)
            reply = "ERR internal error"
        return format_reply(cmd.counter, reply if isinstance(reply, str) else "OK")


class KeypadReader(SerialWorker):
    """Reads a serial keypad line on its own thread, replies, and survives unplugging."""

    thread_prefix = "keypad"

    def __init__(self, url: str, handler: Handler, *, baudrate: int = 9600,
                 max_line: int = MAX_LINE, backoff_max: float = 5.0) -> None:
        super().__init__(url, baudrate=baudrate, backoff_max=backoff_max)
        self.protocol = KeypadProtocol(handler, max_line=max_line)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.link.ensure_open():
                    continue
                data = self.link.read(256)
                if not data:
                    continue
                for reply in self.protocol.feed(data):
                    self.link.write(reply)
            except Exception:  # the reader must outlive any surprise
                logger.exception("keypad reader %s: unexpected error", self.link.url)
                self.link.drop("unexpected error")
                self._stop.wait(0.5)
        self.link.close()

    def status(self) -> dict[str, Any]:
        st = self.link.status()
        st.update(kind="serial", lines_ok=self.protocol.lines_ok,
                  lines_rejected=self.protocol.lines_rejected)
        return st


class FakeKeypad:
    """A keypad without hardware: ``press("3:NEXT")`` runs the same parser and handler."""

    def __init__(self, handler: Handler) -> None:
        self.protocol = KeypadProtocol(handler)
        self.replies: list[str] = []

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def press(self, line: str) -> str:
        """Send one line; returns the reply line without its CRLF ('' for ignored noise)."""
        out = self.protocol.feed(line.encode("utf-8") + b"\r\n")
        reply = b"".join(out).decode("ascii").rstrip("\r\n")
        self.replies.append(reply)
        return reply

    def status(self) -> dict[str, Any]:
        return {"kind": "fake", "connected": True, "lines_ok": self.protocol.lines_ok,
                "lines_rejected": self.protocol.lines_rejected}


def asyncio_handler(loop: asyncio.AbstractEventLoop,
                    func: Callable[[KeypadCommand], Awaitable[str]],
                    timeout: float = 5.0) -> Handler:
    """Adapt an ``async def func(cmd) -> str`` running on ``loop`` into a keypad handler.

    The keypad thread waits at most ``timeout`` for the answer, then replies ``ERR timeout``.
    """

    def handler(cmd: KeypadCommand) -> str:
        future = asyncio.run_coroutine_threadsafe(func(cmd), loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            return "ERR timeout"

    return handler


def build_keypad_from_config(data: Mapping[str, Any],
                             handler: Handler) -> KeypadReader | FakeKeypad:
    """``{"backend": "serial", "url": "/dev/ttyUSB0", "baudrate": 9600}`` or
    ``{"backend": "fake"}``; returns an unstarted reader (call ``start()``)."""
    r = ConfigReader("hardware.keypad", data)
    backend = r.choice("backend", ("serial", "fake"), "serial")
    if backend == "fake":
        r.finish()
        return FakeKeypad(handler)
    url = r.str("url")
    if not url:
        raise HardwareConfigError("[hardware.keypad] url must not be empty")
    baudrate = r.int("baudrate", 9600, min=50)
    max_line = r.int("max_line", MAX_LINE, min=16, max=1024)
    backoff_max = r.float("backoff_max", 5.0, min=0.1)
    r.finish()
    return KeypadReader(url, handler, baudrate=baudrate, max_line=max_line,
                        backoff_max=backoff_max)
