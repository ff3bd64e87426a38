"""A branch's LAN on loopback, with links the test can cut: every device reaches every peer
through its own TCP relay (one per ordered pair), so cutting a device closes its relays both
ways, as a pulled cable would, while its node process runs on.

    links = LinkRelays({"kiosk": 18441, "display": 18442, ...})   # device -> its LAN port
    links.start()
    port = links.port("kiosk", "display")     # where kiosk's static peer "display" points
    links.cut("kiosk")                        # kiosk can reach nobody, nobody reaches kiosk
    links.heal()
    links.stop()

The relays move bytes only (the nodes' mutual TLS runs through them end to end).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from tests.ports import free_port


class LinkRelays:
    def __init__(self, lan_ports: dict[str, int]) -> None:
        self.lan_ports = dict(lan_ports)
        self.cut_off: set[str] = set()
        self._ports: dict[tuple[str, str], int] = {}
        self._open: dict[tuple[str, str], set[asyncio.StreamWriter]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-relays", daemon=True)
        self._servers: list[asyncio.base_events.Server] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen_all(), self._loop).result(30)

    def port(self, src: str, dst: str) -> int:
        return self._ports[(src, dst)]

    def cut(self, *devices: str) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(set(devices)), self._loop).result(30)

    def heal(self) -> None:
        self.cut_off = set()

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            for writers in self._open.values():
                for w in list(writers):
                    w.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- on the relay thread ------------------------------------------------------------------
    def _blocked(self, pair: tuple[str, str]) -> bool:
        return bool(set(pair) & self.cut_off)

    async def _listen_all(self) -> None:
        for src in self.lan_ports:
            for dst in self.lan_ports:
                if src != dst:
                    pair = (src, dst)
                    self._open[pair] = set()
                    server = await asyncio.start_server(
                        lambda r, w, pair=pair: self._relay(pair, r, w), "127.0.0.1", 0)
                    self._servers.append(server)
                    self._ports[pair] = server.sockets[0].getsockname()[1]

    async def _cut(self, devices: set[str]) -> None:
        self.cut_off = set(devices)
        for pair, writers in self._open.items():
            if self._blocked(pair):
                for w in list(writers):
                    w.close()

    async def _relay(self, pair: tuple[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._blocked(pair):
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.lan_ports[pair[1]])
        except OSError:
            writer.close()
            return
        ends = {writer, up_writer}
        self._open[pair] |= ends
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open[pair] -= ends
            for w in ends:
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def static_peers(links: LinkRelays, me: str, peers: Iterable[str]) -> list[str]:
    return [f"{p}@127.0.0.1:{links.port(me, p)}" for p in peers if p != me]
