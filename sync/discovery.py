"""mDNS discovery of the branch's devices (``_smartq._tcp.local.``) with python-zeroconf's asyncio API.

A `Discovery` announces this device (TXT: branch, role, id, pv, fp; never secrets), browses for
the others and keeps a `sync.peers.PeerTable` merged with the configured static peers (the
fallback when mDNS cannot cross VLANs). It knows nothing about the event log: the node reads
`peers()` and subscribes to changes.

Safety: with ``interfaces=None`` zeroconf binds every interface of the current network
namespace. That is right on a device and inside a test namespace, never on a developer machine.

Links coming and going (a cable replugged, a DHCP address change) are noticed by a small refresh
loop: it then rebinds zeroconf's sockets, re-announces us and restarts browsing, so a device
plugged in after boot is found in about a second instead of after the browser's back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ifaddr
from zeroconf import (
    BadTypeInNameException,
    DNSAddress,
    DNSOutgoing,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sync.peers import (
    InvalidPeerRecord,
    PeerInfo,
    PeerListener,
    PeerTable,
    StaticPeer,
    encode_txt,
    peer_from_txt,
)

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_smartq._tcp.local."
PROTOCOL_VERSION = 1

_LABEL_UNSAFE = re.compile(r"[^a-z0-9-]+")

# DNS wire constants (RFC 1035 / RFC 6762) for the address goodbye we send ourselves.
_FLAGS_RESPONSE_AUTHORITATIVE = 0x8000 | 0x0400
_TYPE_A = 1
_CLASS_IN_UNIQUE = 1 | 0x8000


class DiscoveryError(RuntimeError):
    """Discovery could not start (bad settings, sockets that cannot bind, a name clash)."""


@dataclass(frozen=True, slots=True)
class NetworkSnapshot:
    """What the refresh loop compares: our IPv4 addresses and the link state of their interfaces."""

    addresses: tuple[str, ...]
    links: tuple[tuple[str, str], ...]  # (interface name, operstate)


def _label(text: str, *, limit: int = 63) -> str:
    """A DNS-safe label (lower case letters, digits, dashes) of at most `limit` bytes."""
    label = _LABEL_UNSAFE.sub("-", text.lower()).strip("-") or "device"
    return label[:limit].rstrip("-")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _operstate(name: str) -> str:
    try:
        return Path("/sys/class/net", name, "operstate").read_text().strip()
    except OSError:
        return "unknown"


def network_snapshot(interfaces: Sequence[str] | None) -> NetworkSnapshot:
    """Our usable IPv4 addresses (blocking: reads interfaces; run it off the event loop).

    ``interfaces`` entries are IP addresses or interface names; None means every interface
    except loopback.
    """
    wanted = set(interfaces or ())
    addresses: list[str] = []
    links: list[tuple[str, str]] = []
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name
        ips = [ip.ip for ip in adapter.ips if ip.is_IPv4 and isinstance(ip.ip, str)]
        if interfaces is None:
            chosen = [ip for ip in ips if not ipaddress.ip_address(ip).is_loopback]
        elif name in wanted:
            chosen = ips
        else:
            chosen = [ip for ip in ips if ip in wanted]
        if chosen:
            addresses.extend(chosen)
            links.append((name, _operstate(name)))
    if interfaces is not None:  # explicit addresses not (yet) on any interface still count
        addresses.extend(a for a in interfaces if _is_ip(a) and a not in addresses)
    return NetworkSnapshot(tuple(sorted(set(addresses))), tuple(sorted(links)))


class Discovery:
    """Announce this device and keep a table of the branch's other devices.

    Construct, ``await start()``, read `peers()` / `subscribe()`, ``await stop()``.
    """

    def __init__(
        self,
        *,
        branch: str,
        device_id: str,
        role: str,
        port: int,
        fingerprint: str = "",
        static_peers: Iterable[str | StaticPeer] = (),
        protocol_version: int = PROTOCOL_VERSION,
        interfaces: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = 1.0,
        resolve_timeout: float = 3.0,
    ) -> None:
        if not 0 < port < 65536:
            raise DiscoveryError(f"port out of range: {port}")
        try:
            self._txt = encode_txt(
                branch=branch,
                device_id=device_id,
                role=role,
                protocol_version=protocol_version,
                fingerprint=fingerprint,
            )
            self._table = PeerTable(
                branch=branch, device_id=device_id, clock=clock, static_peers=static_peers
            )
        except (ValueError, InvalidPeerRecord) as err:
            raise DiscoveryError(str(err)) from err
        self.branch = branch
        self.device_id = device_id
        self.role = role
        self.port = port
        self.interfaces = list(interfaces) if interfaces is not None else None
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._resolve_timeout_ms = int(resolve_timeout * 1000)
        label = _label(f"{branch}-{device_id}")
        self._instance_name = f"{label}.{SERVICE_TYPE}"
        self._server = f"sq-{_label(device_id, limit=50)}.local."
        self._aiozc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._snapshot: NetworkSnapshot | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._refresh_task: asyncio.Task[None] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._aiozc is not None

    @property
    def service_name(self) -> str:
        """Our mDNS instance name (zeroconf may have suffixed it on a clash)."""
        return self._info.name if self._info is not None else self._instance_name

    @property
    def addresses(self) -> tuple[str, ...]:
        """The IPv4 addresses we currently announce."""
        return self._snapshot.addresses if self._snapshot is not None else ()

    def peers(self) -> list[PeerInfo]:
        """Other devices of our branch (mDNS and static merged), sorted by device id."""
        return self._table.peers()

    def peer(self, device_id: str) -> PeerInfo | None:
        return self._table.get(device_id)

    def subscribe(self, listener: PeerListener) -> Callable[[], None]:
        """Call ``listener(PeerChange)`` on every table change; returns the unsubscribe function.

        Listeners run on the event loop and must not block.
        """
        return self._table.subscribe(listener)

    async def start(self) -> None:
        """Bind zeroconf, start browsing, announce ourselves. Raises `DiscoveryError`."""
        if self._aiozc is not None:
            return
        self._snapshot = await asyncio.to_thread(network_snapshot, self.interfaces)
        try:
            self._aiozc = AsyncZeroconf(
                interfaces=self._zc_interfaces(), ip_version=IPVersion.V4Only
            )
        except OSError as err:
            raise DiscoveryError(f"cannot open mDNS sockets: {err}") from err
        try:
            self._start_browser()
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self._instance_name,
                port=self.port,
                properties=self._txt,
                server=self._server,
                parsed_addresses=list(self._snapshot.addresses),
            )
            announced = await self._aiozc.async_register_service(
                self._info, allow_name_change=True
            )
            self._track(asyncio.ensure_future(announced))
        except (BadTypeInNameException, NonUniqueNameException, OSError) as err:
            await self._close_zeroconf()
            raise DiscoveryError(f"cannot announce {self._instance_name}: {err}") from err
        except BaseException:
            await self._close_zeroconf()
            raise
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="discovery-refresh")
        logger.info(
            "discovery started as %s on %s", self.service_name, ", ".join(self.addresses) or "-"
        )

    async def stop(self) -> None:
        """Say goodbye, stop browsing, close sockets, cancel every task we started."""
        if self._aiozc is None:
            return
        tasks = [t for t in (self._refresh_task, *self._resolving.values(), *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refresh_task = None
        self._resolving.clear()
        self._tasks.clear()
        await self._close_zeroconf()
        self._table.clear_mdns()
        logger.info("discovery stopped")

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- zeroconf plumbing ------------------------------------------------------------------

    def _zc_interfaces(self) -> Any:
        if self.interfaces is None:
            return InterfaceChoice.All
        assert self._snapshot is not None
        return list(self._snapshot.addresses)

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    def _start_browser(self) -> None:
        assert self._aiozc is not None
        self._browser = AsyncServiceBrowser(
            self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_service_state_change]
        )

    async def _close_zeroconf(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        browser, self._browser = self._browser, None
        if aiozc is None:
            return
        try:
            if browser is not None:
                await browser.async_cancel()
            if self._info is not None:
                goodbye = await aiozc.async_unregister_service(self._info)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        await goodbye
        except Exception:  # shutting down: log and keep closing
            logger.exception("error while withdrawing the mDNS announcement")
        finally:
            await aiozc.async_close()

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Browser callback (on the loop): never blocks, never raises."""
        if name == self.service_name:
            return
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            self._table.remove_mdns(name)
            return
        if name in self._resolving:
            self._dirty.add(name)  # resolve again once the running request finishes
            return
        task = asyncio.create_task(self._resolve(name), name=f"discovery-resolve-{name}")
        self._resolving[name] = task
        task.add_done_callback(lambda t, n=name: self._resolve_done(n, t))

    def _resolve_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            logger.error("resolving %s failed", name, exc_info=task.exception())

    async def _resolve(self, name: str) -> None:
        while True:
            self._dirty.discard(name)
            aiozc = self._aiozc
            if aiozc is None:
                return
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(aiozc.zeroconf, self._resolve_timeout_ms):
                self._apply(name, info)
            else:
                logger.debug("no complete answer for %s", name)
            if name not in self._dirty:
                return

    def _apply(self, name: str, info: AsyncServiceInfo) -> None:
        try:
            peer = peer_from_txt(
                info.properties,
                addresses=info.parsed_addresses(IPVersion.V4Only),
                port=info.port,
                now=self._clock(),
            )
        except InvalidPeerRecord as err:
            logger.warning("ignoring service %s: %s", name, err)
            return
        self._table.upsert_mdns(name, peer)

    # -- refresh: address changes, link flaps, cache-flushed addresses -----------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self._refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep discovery alive whatever one round hit
                logger.exception("discovery refresh failed")

    async def _refresh_once(self) -> None:
        aiozc, info = self._aiozc, self._info
        if aiozc is None or info is None:
            return
        snapshot = await asyncio.to_thread(network_snapshot, self.interfaces)
        if snapshot != self._snapshot:
            logger.info("network changed: %s -> %s", self._snapshot, snapshot)
            self._snapshot = snapshot
            await aiozc.async_update_interfaces(
                interfaces=None if self.interfaces is None else list(snapshot.addresses)
            )
            gone = sorted(set(info.parsed_addresses(IPVersion.V4Only)) - set(snapshot.addresses))
            if gone:
                self._say_goodbye_to_addresses(aiozc.zeroconf, gone)
            info.addresses = list(snapshot.addresses)
            self._track(asyncio.ensure_future(await aiozc.async_update_service(info)))
            # A fresh browser asks at once instead of waiting out the old one's back-off.
            if self._browser is not None:
                await self._browser.async_cancel()
            self._start_browser()
        # Addresses replaced by a cache flush leave the old one valid for a second after the
        # Updated event; re-read known peers so the table converges to the current set.
        for name in self._table.mdns_names():
            known = AsyncServiceInfo(SERVICE_TYPE, name)
            if known.load_from_cache(aiozc.zeroconf):
                current = self._table.mdns_peer(name)
                addresses = tuple(known.parsed_addresses(IPVersion.V4Only))
                if current is not None and (
                    set(addresses) != set(current.addresses) or known.port != current.port
                ):
                    self._table.touch_mdns(name, addresses=addresses, port=known.port)

    def _say_goodbye_to_addresses(self, zc: Zeroconf, addresses: Sequence[str]) -> None:
        """Withdraw our old A records (TTL 0) so peers drop them in a second, not in 120 s.

        zeroconf's update only announces the new set, and a peer keeps an old address that it
        received less than a second before the new one (RFC 6762 §10.2 cache-flush rule).
        """
        out = DNSOutgoing(_FLAGS_RESPONSE_AUTHORITATIVE)
        for address in addresses:
            record = DNSAddress(
                self._server, _TYPE_A, _CLASS_IN_UNIQUE, 0, ipaddress.IPv4Address(address).packed
            )
            out.add_answer_at_time(record, 0)
        zc.async_send(out)
