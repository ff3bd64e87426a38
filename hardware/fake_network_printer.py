"""A raw-TCP (port 9100) ESC/POS printer simulator for tests, the demo and the bench.

It accepts connections on 127.0.0.1, stores every byte received, and answers DLE EOT status
queries like an Epson-compatible printer. It can misbehave the ways real printers do:
``hang_after=N`` stops reading (and answering) after N bytes of a connection, as a printer that
jams mid-ticket; ``paper`` / ``cover_open`` change the status answers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class FakeNetworkPrinter:
    """A printer on 127.0.0.1:port run by a background thread; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9100, *,
                 fallback_to_ephemeral: bool = True, hang_after: int | None = None,
                 answer_status: bool = True) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self.fallback_to_ephemeral = fallback_to_ephemeral
        self.used_fallback = False
        self.hang_after = hang_after
        self.answer_status = answer_status
        self.paper = "ok"          # ok | low | out
        self.cover_open = False
        #: optional hook called on the connection's thread for every chunk received
        self.on_chunk: Callable[[int, bytes], None] | None = None
        self.connections: list[bytearray] = []
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeNetworkPrinter:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            if not self.fallback_to_ephemeral:
                sock.close()
                raise
            logger.warning("port %d busy; fake printer falls back to an ephemeral port",
                           self.requested_port)
            sock.bind((self.host, 0))
            self.used_fallback = True
        self.port = sock.getsockname()[1]
        sock.listen(16)
        sock.settimeout(0.1)
        self._sock = sock
        t = threading.Thread(target=self._accept_loop, name="fake-printer", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for client in list(self._clients):
            try:
                client.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2.0)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> FakeNetworkPrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what arrived ----------------------------------------------------------------------
    @property
    def received(self) -> bytes:
        with self._cond:
            return b"".join(bytes(c) for c in self.connections)

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(all bytes received)`` holds or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                data = b"".join(bytes(c) for c in self.connections)
                if predicate(data):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    # -- server ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._clients.append(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _status_byte(self, n: int) -> bytes:
        if n == 1:
            return b"\x12"
        if n == 2:
            return bytes([0x12 | (0x04 if self.cover_open else 0)
                          | (0x20 if self.paper == "out" else 0)])
        if n == 4:
            return bytes([0x12 | {"ok": 0, "low": 0x0C, "out": 0x60}[self.paper]])
        return b""

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        with self._cond:
            self.connections.append(buf)
            index = len(self.connections) - 1
        try:
            client.settimeout(0.1)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # stop() closed it before this thread got going
            return
        pending = b""
        with client:
            while not self._stop.is_set():
                if self.hang_after is not None and len(buf) >= self.hang_after:
                    self._stop.wait(0.1)  # jammed: keep the socket open, read nothing
                    continue
                try:
                    want = 4096 if self.hang_after is None else max(1, self.hang_after - len(buf))
                    chunk = client.recv(want)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self._cond:
                    buf.extend(chunk)
                    self._cond.notify_all()
                if self.on_chunk is not None:
                    self.on_chunk(index, chunk)
                if not self.answer_status:
                    continue
                data = pending + chunk
                pending = b""
                i = 0
                while True:
                    i = data.find(b"\x10\x04", i)
                    if i < 0:
                        break
                    if i + 2 >= len(data):
                        pending = data[i:]
                        break
                    reply = self._status_byte(data[i + 2])
                    if reply:
                        try:
                            client.sendall(reply)
                        except OSError:
                            return
                    i += 3
                if not pending and data.endswith(b"\x10"):
                    pending = b"\x10"
