"""The `[lan]` node service ("peers"): replication with the branch's other devices.

It runs, beside the node's store: the `/sync/v1` listener on the LAN (its own aiohttp
runner, separate from the 127.0.0.1 local API), mDNS discovery announcing that listener
(or only the static peer list), and the `Replicator` that pushes this device's events and
pulls the rest. Only roster devices may push or pull (signed requests); discovered peers
whose fingerprint does not match their roster key, or of other branches, are ignored.
Every key of `[lan]` is in SETTINGS and documented in docs/replication.md.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sync.discovery import Discovery, DiscoveryError
from sync.peers import InvalidPeerRecord, PeerChange, PeerInfo, PeerTable
from sync.replication import Replicator, SyncSettings, create_sync_app

from appliance.config import Config, ConfigError
from appliance.node import Node

logger = logging.getLogger(__name__)

# (key, default, help): the whole [lan] section; docs/replication.md must name every key.
SETTINGS: list[tuple[str, Any, str]] = [
    ("listen", "0.0.0.0:8441", "host:port of the /sync/v1 listener on the branch LAN (port 0: any free port)."),
    ("mdns", True, "Announce and find peers by mDNS (_smartq._tcp); false: static_peers only."),
    ("interfaces", None, "Interface names or IPv4 addresses mDNS uses; unset: every interface of the device."),
    ("static_peers", [], "Peers to use without mDNS: \"HOST:PORT\" or \"DEVICE_ID@HOST:PORT\"."),
    ("anti_entropy_s", 1.0, "Seconds between pull rounds with a reachable peer."),
    ("retry_min_s", 0.2, "First retry delay after a peer failed; doubles per failure."),
    ("retry_max_s", 0.5, "Longest retry delay for an unreachable peer."),
    ("connect_timeout_s", 1.0, "TCP connect timeout to a peer."),
    ("request_timeout_s", 5.0, "Whole-request timeout to a peer."),
    ("pull_batch", 2000, "Events asked for per pull request."),
    ("push_batch", 500, "Events sent per push request."),
    ("max_push_events", 5000, "Most events a peer may push in one request."),
    ("max_body_bytes", 16 * 1024 * 1024, "Largest /sync/v1 request body accepted."),
    ("discovery_refresh_s", 1.0, "How often discovery checks links and addresses (s)."),
    ("tls", True, "Mutual TLS pinned to the org CA on the listener and to peers (needs the device certificate); "
                  "false: plain HTTP, for development only."),
]
DEFAULTS = {name: default for name, default, _ in SETTINGS}


@dataclass(frozen=True)
class LanSettings:
    listen_host: str = "0.0.0.0"
    listen_port: int = 8441
    mdns: bool = True
    interfaces: tuple[str, ...] | None = None
    static_peers: tuple[str, ...] = ()
    discovery_refresh_s: float = 1.0
    tls: bool = True
    sync: SyncSettings = field(default_factory=SyncSettings)


def parse_lan(raw: Any) -> LanSettings:
    """The [lan] table as settings; ConfigError names the key and what is wrong."""
    if not isinstance(raw, dict):
        raise ConfigError("[lan] must be a table")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"lan: unknown settings {unknown} (known: {', '.join(DEFAULTS)})")
    values = {**DEFAULTS, **raw}

    def number(name: str, kind: type, minimum: float) -> Any:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise ConfigError(f"lan.{name}: expected a number, got {value!r}")
        if value < minimum:
            raise ConfigError(f"lan.{name}: must be at least {minimum}")
        return kind(value)

    listen = values["listen"]
    host, sep, port = str(listen).rpartition(":")
    if not isinstance(listen, str) or not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"lan.listen: expected host:port, got {listen!r}")
    for flag in ("mdns", "tls"):
        if not isinstance(values[flag], bool):
            raise ConfigError(f"lan.{flag}: expected true or false")
    interfaces = values["interfaces"]
    if interfaces is not None and (not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces)):
        raise ConfigError("lan.interfaces: expected a list of interface names or addresses")
    static = values["static_peers"]
    if not isinstance(static, list) or not all(isinstance(s, str) for s in static):
        raise ConfigError("lan.static_peers: expected a list of \"HOST:PORT\" or \"ID@HOST:PORT\"")
    sync = SyncSettings(
        anti_entropy_s=number("anti_entropy_s", float, 0.05), retry_min_s=number("retry_min_s", float, 0.01),
        retry_max_s=number("retry_max_s", float, 0.01), connect_timeout_s=number("connect_timeout_s", float, 0.05),
        request_timeout_s=number("request_timeout_s", float, 0.1), pull_batch=number("pull_batch", int, 1),
        push_batch=number("push_batch", int, 1), max_push_events=number("max_push_events", int, 1),
        max_body_bytes=number("max_body_bytes", int, 1024),
    )
    return LanSettings(
        listen_host=host.strip("[]") or "0.0.0.0", listen_port=int(port), mdns=values["mdns"],
        interfaces=tuple(interfaces) if interfaces is not None else None, static_peers=tuple(static),
        discovery_refresh_s=number("discovery_refresh_s", float, 0.05), tls=values["tls"], sync=sync,
    )


def from_config(config: Config) -> LanService | None:
    """Called by appliance.services when the config has a [lan] section."""
    return LanService(parse_lan(config.raw.get("lan", {})))


class LanService:
    """The node's "peers" service: LAN listener + discovery + replicator."""

    name = "peers"

    def __init__(self, settings: LanSettings, *, server_ssl: ssl.SSLContext | None = None,
                 client_ssl: ssl.SSLContext | None = None, clock: Callable[[], float] = time.time) -> None:
        """`server_ssl`/`client_ssl` override the contexts; by default (`tls = true`) they are
        the node's mutual-TLS contexts pinned to the org CA (appliance.tls)."""
        self.settings = settings
        self._server_ssl, self._client_ssl = server_ssl, client_ssl
        self._clock = clock
        self.replicator: Replicator | None = None
        self.discovery: Discovery | None = None
        self._table: PeerTable | None = None
        self._runner: web.AppRunner | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.port: int | None = None

    async def start(self, node: Node) -> None:
        config = node.config
        s = self.settings
        peer_check = None
        fp = node.fingerprint
        if s.tls:
            if node.tls is None:
                raise ConfigError(f"lan.tls: no device certificate in {node.data_dir} (enroll the device with "
                                  "`smartq enroll`, or set lan.tls = false for plain-HTTP development)")
            self._server_ssl = self._server_ssl or node.tls.server
            self._client_ssl = self._client_ssl or node.tls.client
            tls = node.tls
            peer_check = lambda der, device: tls.check_peer(der, device)  # noqa: E731
            fp = node.tls.fingerprint
        self.replicator = Replicator(node, device_id=config.device_id, branch=config.branch_id, key=node.key,
                                     keyring=node.keyring, settings=s.sync, clock=self._clock, ssl=self._client_ssl,
                                     peer_check=peer_check)
        app = create_sync_app(node, device_id=config.device_id, role=config.role, branch=config.branch_id,
                              key=node.key, keyring=node.keyring, settings=s.sync,
                              on_request=self.replicator.heard_from, peer_check=peer_check)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.listen_host, s.listen_port, ssl_context=self._server_ssl)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise ConfigError(f"lan.listen: cannot listen on {s.listen_host}:{s.listen_port}: {err.strerror}") from err
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else s.listen_port
        await self.replicator.start()
        self._unsubscribe.append(node.on_events(self.replicator.on_committed))
        self._unsubscribe.append(node.on_events(self._on_roster))
        try:
            if s.mdns:
                self.discovery = Discovery(
                    branch=config.branch_id, device_id=config.device_id, role=config.role, port=self.port,
                    fingerprint=fp, static_peers=s.static_peers,
                    interfaces=list(s.interfaces) if s.interfaces is not None else None,
                    clock=self._clock, refresh_interval=s.discovery_refresh_s,
                )
                self._unsubscribe.append(self.discovery.subscribe(self._on_change))
                await self.discovery.start()
                peers = self.discovery.peers()
            else:
                self._table = PeerTable(branch=config.branch_id, device_id=config.device_id, clock=self._clock,
                                        static_peers=s.static_peers)
                peers = self._table.peers()
        except (DiscoveryError, InvalidPeerRecord) as err:
            await self.stop()
            raise ConfigError(f"lan: {err}") from err
        for peer in peers:
            self.replicator.upsert(peer)
        logger.info("LAN replication on %s:%d (%s, mdns %s, %d static peer(s))", s.listen_host, self.port,
                    "mutual TLS" if self._server_ssl is not None else "plain HTTP", "on" if s.mdns else "off",
                    len(s.static_peers))

    def _on_roster(self, events: list[Any]) -> None:
        """HQ's roster may name devices we ignored so far: look at every known peer again."""
        if self.replicator is not None and any(e.type == "config.roster" for e in events):
            for peer in self.peers():
                if self.replicator.peer(peer.device_id) is None:
                    self.replicator.upsert(peer)

    def _on_change(self, change: PeerChange) -> None:
        assert self.replicator is not None
        if change.kind == "removed":
            self.replicator.remove(change.peer.device_id)
        else:
            self.replicator.upsert(change.peer)

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        if self.replicator is not None:
            await self.replicator.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def view(self) -> list[dict[str, Any]]:
        return self.replicator.view() if self.replicator is not None else []

    def peers(self) -> list[PeerInfo]:
        if self.discovery is not None:
            return self.discovery.peers()
        return self._table.peers() if self._table is not None else []


__all__ = ["DEFAULTS", "SETTINGS", "LanService", "LanSettings", "from_config", "parse_lan"]
