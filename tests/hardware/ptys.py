"""A real pty pair from socat, for keypad and LED sign tests (ended by PID, also on failure)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import serial


class SocatPair:
    """``socat pty,link=A pty,link=B``: bytes written on one end come out of the other."""

    def __init__(self, directory: Path, device_name: str = "device", host_name: str = "host"):
        if shutil.which("socat") is None:
            raise RuntimeError("socat not installed")
        self.device_path = directory / device_name  # the keypad / sign side
        self.host_path = directory / host_name      # the node side (the driver opens this)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SocatPair:
        self.proc = subprocess.Popen(
            ["socat", "-d", "-d",
             f"pty,raw,echo=0,link={self.device_path}",
             f"pty,raw,echo=0,link={self.host_path}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (self.device_path.exists() and self.host_path.exists()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("socat did not create its ptys")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        for link in (self.device_path, self.host_path):
            if os.path.islink(link):
                os.unlink(link)

    def open_device_raw(self) -> RawPort:
        """The device end opened without pyserial's input flush (keeps bytes sent earlier)."""
        return RawPort(os.open(self.device_path, os.O_RDWR | os.O_NOCTTY))

    def open_device(self, timeout: float = 0.2) -> serial.Serial:
        return serial.Serial(str(self.device_path), 9600, timeout=timeout)


class RawPort:
    """Minimal serial-like wrapper over a pty fd: read(n) with a timeout, in_waiting."""

    def __init__(self, fd: int, timeout: float = 0.2) -> None:
        self.fd, self.timeout = fd, timeout

    def read(self, size: int = 1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        return os.read(self.fd, size) if ready else b""

    @property
    def in_waiting(self) -> int:
        ready, _, _ = select.select([self.fd], [], [], 0)
        return 4096 if ready else 0

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> RawPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_available(port: serial.Serial) -> bytes:
    """Wait (up to the port timeout) for one byte, then take whatever else is there."""
    first = port.read(1)
    return first + port.read(port.in_waiting) if first else b""


def read_lines_until(port: serial.Serial, wanted: str, timeout: float = 10.0) -> list[str]:
    """Read CRLF lines from ``port`` until ``wanted`` arrives; returns all lines read."""
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += read_available(port)
        while b"\r\n" in buf:
            raw, buf = buf.split(b"\r\n", 1)
            lines.append(raw.decode("ascii", "replace"))
            if lines[-1] == wanted:
                return lines
    raise AssertionError(f"{wanted!r} not received; got {lines!r}")
