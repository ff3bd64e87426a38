"""Connections to ESC/POS printers, one class per transport, all with bounded waits.

Each connection wraps a python-escpos printer class (``Network``, ``Serial``, ``Usb``,
``File``, ``Dummy``) and adds what a spooler needs that python-escpos leaves open: separate
connect / write / status-read timeouts, and a status query that returns ``None`` instead of
blocking when the printer never answers. Library errors become :class:`PrinterUnavailable`.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import PrinterUnavailable

logger = logging.getLogger(__name__)

# DLE EOT n: real-time status transmission (answered even while the printer is busy).
DLE_EOT_PRINTER = b"\x10\x04\x01"
DLE_EOT_OFFLINE_CAUSE = b"\x10\x04\x02"
DLE_EOT_PAPER = b"\x10\x04\x04"


@dataclass(frozen=True)
class PrinterStatusBits:
    """The decoded answer to the three DLE EOT queries."""

    online: bool = True
    cover_open: bool = False
    paper_low: bool = False
    paper_out: bool = False
    error: bool = False

    @property
    def state(self) -> str:
        if self.paper_out:
            return "paper_out"
        if self.cover_open:
            return "cover_open"
        if self.error:
            return "error"
        if not self.online:
            return "offline"
        if self.paper_low:
            return "paper_low"
        return "ok"


def decode_status(printer: int, offline_cause: int, paper: int) -> PrinterStatusBits:
    """Decode DLE EOT 1, 2 and 4 answer bytes (Epson ESC/POS bit layout)."""
    return PrinterStatusBits(
        online=not (printer & 0x08),
        cover_open=bool(offline_cause & 0x04),
        error=bool(offline_cause & 0x40),
        paper_low=bool(paper & 0x0C),
        paper_out=bool(paper & 0x60) or bool(offline_cause & 0x20),
    )


class PrinterConnection(Protocol):
    """One open link to a printer, used for one job (or one status poll) and closed."""

    supports_status: bool

    def open(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def query(self, command: bytes) -> bytes | None: ...
    def close(self) -> None: ...


class NetworkConnection:
    """Raw TCP (port 9100, "JetDirect") through ``escpos.printer.Network``."""

    supports_status = True

    def __init__(self, host: str, port: int, connect_timeout: float, write_timeout: float,
                 status_timeout: float) -> None:
        from escpos.printer import Network

        self._printer = Network(host=host, port=port, timeout=connect_timeout)
        self.host, self.port = host, port
        self.write_timeout, self.status_timeout = write_timeout, status_timeout

    def open(self) -> None:
        from escpos.exceptions import DeviceNotFoundError

        try:
            self._printer.open()
        except DeviceNotFoundError as err:
            raise PrinterUnavailable(f"cannot connect to {self.host}:{self.port}: "
                                     f"{str(err).splitlines()[-1]}") from err
        sock = self._sock
        sock.settimeout(self.write_timeout)
        # status queries are 3-byte writes waiting for 1-byte answers: without NODELAY, Nagle
        # plus delayed ACK add ~40 ms per round trip
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def _sock(self) -> socket.socket:
        sock = self._printer._device
        if not sock:
            raise PrinterUnavailable("not connected")
        return sock  # type: ignore[return-value]

    def write(self, data: bytes) -> None:
        # since Python 3.5 the socket timeout bounds the whole sendall, not each chunk
        try:
            self._sock.settimeout(self.write_timeout)
            self._printer._raw(data)
        except socket.timeout as err:
            raise PrinterUnavailable(
                f"write timed out after {self.write_timeout:g} s (printer stopped taking data)"
            ) from err
        except OSError as err:
            raise PrinterUnavailable(f"write failed: {err}") from err

    def query(self, command: bytes) -> bytes | None:
        try:
            sock = self._sock
            sock.settimeout(self.write_timeout)
            sock.sendall(command)
            sock.settimeout(self.status_timeout)
            reply = sock.recv(1)
        except socket.timeout:
            return None
        except OSError as err:
            raise PrinterUnavailable(f"status query failed: {err}") from err
        if not reply:
            raise PrinterUnavailable("printer closed the connection")
        return reply

    def close(self) -> None:
        try:
            self._printer.close()
        except OSError:
            pass


class SerialConnection:
    """RS-232 / USB-serial printer through ``escpos.printer.Serial`` (pyserial)."""

    supports_status = True

    def __init__(self, devfile: str, baudrate: int, write_timeout: float,
                 status_timeout: float, dsrdtr: bool) -> None:
        from escpos.printer import Serial

        self._printer = Serial(devfile=devfile, baudrate=baudrate, timeout=status_timeout,
                               dsrdtr=dsrdtr)
        self.devfile, self.write_timeout = devfile, write_timeout

    def open(self) -> None:
        from escpos.exceptions import DeviceNotFoundError

        try:
            self._printer.open()
        except DeviceNotFoundError as err:
            raise PrinterUnavailable(f"cannot open {self.devfile}: "
                                     f"{str(err).splitlines()[-1]}") from err
        self._printer.device.write_timeout = self.write_timeout

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._printer._raw(data)
            self._printer.device.flush()
        except serial.SerialTimeoutException as err:
            raise PrinterUnavailable(f"write timed out after {self.write_timeout:g} s") from err
        except (serial.SerialException, OSError) as err:
            raise PrinterUnavailable(f"write failed: {err}") from err

    def query(self, command: bytes) -> bytes | None:
        import serial

        try:
            self._printer.device.reset_input_buffer()
            self._printer._raw(command)
            reply = self._printer.device.read(1)  # bounded by status_timeout
        except serial.SerialTimeoutException:
            return None
        except (serial.SerialException, OSError) as err:
            raise PrinterUnavailable(f"status query failed: {err}") from err
        return reply or None

    def close(self) -> None:
        try:
            self._printer.close()
        except Exception:  # pyserial raises various errors on a vanished device
            pass


class UsbConnection:
    """USB printer-class device through ``escpos.printer.Usb`` (pyusb + libusb)."""

    supports_status = True

    def __init__(self, vendor_id: int, product_id: int, in_ep: int | None, out_ep: int | None,
                 write_timeout: float, status_timeout: float) -> None:
        from escpos.printer import Usb

        kwargs: dict[str, Any] = {"timeout": int(write_timeout * 1000)}
        if in_ep is not None:
            kwargs["in_ep"] = in_ep
        if out_ep is not None:
            kwargs["out_ep"] = out_ep
        self._printer = Usb(vendor_id, product_id, **kwargs)
        self._ids = f"{vendor_id:04x}:{product_id:04x}"
        self.status_timeout_ms = int(status_timeout * 1000)

    def open(self) -> None:
        try:
            self._printer.open()
        except Exception as err:  # DeviceNotFoundError, USBError, missing pyusb/libusb
            raise PrinterUnavailable(f"USB printer {self._ids} not available: {err}") from err

    def write(self, data: bytes) -> None:
        try:
            self._printer._raw(data)
        except Exception as err:  # usb.core.USBTimeoutError / USBError
            raise PrinterUnavailable(f"USB write failed: {err}") from err

    def query(self, command: bytes) -> bytes | None:
        try:
            self._printer._raw(command)
            data = self._printer.device.read(self._printer.in_ep, 16, self.status_timeout_ms)
        except Exception as err:
            if "timeout" in str(err).lower():
                return None
            raise PrinterUnavailable(f"USB status query failed: {err}") from err
        return bytes(data[:1]) or None

    def close(self) -> None:
        try:
            self._printer.close()
        except Exception:
            pass


class FileConnection:
    """A character device such as ``/dev/usb/lp0`` (or any file), written without blocking.

    python-escpos's ``File`` writes with a blocking ``write()``; a jammed usblp device would then
    hang the spooler forever, so this writes through a non-blocking descriptor with a deadline.
    """

    supports_status = False

    def __init__(self, devfile: str, write_timeout: float) -> None:
        self.devfile, self.write_timeout = devfile, write_timeout
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self._fd = os.open(self.devfile, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND
                               | getattr(os, "O_NOCTTY", 0))
        except OSError as err:
            raise PrinterUnavailable(f"cannot open {self.devfile}: {err.strerror}") from err

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise PrinterUnavailable("not open")
        deadline = time.monotonic() + self.write_timeout
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PrinterUnavailable(f"write timed out after {self.write_timeout:g} s")
            _, ready, _ = select.select([], [self._fd], [], left)
            if not ready:
                continue
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                continue
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    continue
                raise PrinterUnavailable(f"write to {self.devfile} failed: {err.strerror}") from err

    def query(self, command: bytes) -> bytes | None:
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class DummyDevice:
    """The fake printer behind the ``dummy`` backend: collects every job's bytes.

    Its status bits can be changed at run time (tests, the demo's "paper out" button), and
    ``fail_with`` makes the next connections fail as an unplugged printer would.
    """

    jobs: list[bytes] = field(default_factory=list)
    status: PrinterStatusBits = field(default_factory=PrinterStatusBits)
    fail_with: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def output(self) -> bytes:
        with self.lock:
            return b"".join(self.jobs)


class DummyConnection:
    """Connection to a :class:`DummyDevice`, through ``escpos.printer.Dummy``."""

    supports_status = True

    def __init__(self, device: DummyDevice) -> None:
        from escpos.printer import Dummy

        self.device = device
        self._printer = Dummy()

    def open(self) -> None:
        if self.device.fail_with:
            raise PrinterUnavailable(self.device.fail_with)
        self._printer.clear()

    def write(self, data: bytes) -> None:
        self._printer._raw(data)

    def query(self, command: bytes) -> bytes | None:
        st = self.device.status
        if command == DLE_EOT_PRINTER:
            return bytes([0x12 | (0 if st.online else 0x08)])
        if command == DLE_EOT_OFFLINE_CAUSE:
            return bytes([0x12 | (0x04 if st.cover_open else 0) | (0x40 if st.error else 0)
                          | (0x20 if st.paper_out else 0)])
        if command == DLE_EOT_PAPER:
            return bytes([0x12 | (0x0C if st.paper_low else 0) | (0x60 if st.paper_out else 0)])
        return None

    def close(self) -> None:
        data = self._printer.output
        if data:
            with self.device.lock:
                self.device.jobs.append(data)
        self._printer.clear()


def read_status(conn: PrinterConnection) -> PrinterStatusBits | None:
    """Ask DLE EOT 1, 2, 4; ``None`` when the printer does not answer within its timeout."""
    answers = []
    for command in (DLE_EOT_PRINTER, DLE_EOT_OFFLINE_CAUSE, DLE_EOT_PAPER):
        reply = conn.query(command)
        if reply is None:
            return None
        answers.append(reply[0])
    return decode_status(*answers)
