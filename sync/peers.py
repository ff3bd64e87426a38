"""The branch peer table: who else is on the LAN, as immutable `PeerInfo` values.

Raw mDNS TXT records and static ``host:port`` config entries are turned into `PeerInfo` here,
at the boundary, and merged into one table keyed by device id. This module does no network
I/O (so it is tested without sockets); `sync.discovery` feeds it from zeroconf.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

logger = logging.getLogger(__name__)

Source = Literal["mdns", "static"]
ChangeKind = Literal["added", "updated", "removed"]

#: TXT keys we announce and read (DESIGN §2). Never put secrets here: TXT records are public.
TXT_BRANCH = "branch"
TXT_ROLE = "role"
TXT_DEVICE_ID = "id"
TXT_PROTOCOL_VERSION = "pv"
TXT_FINGERPRINT = "fp"

#: Longest value we accept for an identifier in a TXT record (a TXT string is at most 255 bytes).
MAX_FIELD_LEN = 200


class InvalidPeerRecord(ValueError):
    """A TXT record or static peer entry that cannot become a `PeerInfo`."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One other device of this branch, as discovery last saw it.

    `device_id` is the stable key; `addresses`/`port`/`last_seen` are what rediscovery updates.
    Static peers whose identity is not configured get the id ``static:HOST:PORT``, role ``""``,
    fingerprint ``""`` and protocol version 0 (unknown until replication talks to them).
    """

    device_id: str
    branch: str
    role: str
    addresses: tuple[str, ...]
    port: int
    protocol_version: int
    fingerprint: str
    last_seen: float
    source: Source

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(address, port) pairs to try, in announcement order."""
        return tuple((address, self.port) for address in self.addresses)


@dataclass(frozen=True, slots=True)
class PeerChange:
    """A change of the merged peer table, delivered to listeners."""

    kind: ChangeKind
    peer: PeerInfo


PeerListener = Callable[[PeerChange], None]


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidPeerRecord(f"TXT value is not UTF-8: {value!r}") from err
    return value


def decode_txt(properties: Mapping[str | bytes, str | bytes | None]) -> dict[str, str | None]:
    """Decode zeroconf TXT properties (bytes or str keys/values) into a str dict."""
    decoded: dict[str, str | None] = {}
    for key, value in properties.items():
        name = _text(key)
        if name is None:
            continue
        decoded[name.lower()] = _text(value)
    return decoded


def _required(txt: Mapping[str, str | None], key: str) -> str:
    value = txt.get(key)
    if value is None or not value.strip():
        raise InvalidPeerRecord(f"TXT record lacks {key!r}")
    value = value.strip()
    if len(value) > MAX_FIELD_LEN:
        raise InvalidPeerRecord(f"TXT {key!r} is longer than {MAX_FIELD_LEN} characters")
    return value


def encode_txt(
    *, branch: str, device_id: str, role: str, protocol_version: int, fingerprint: str
) -> dict[str, str]:
    """The TXT properties a device announces. Validates so we never announce junk."""
    txt = {
        TXT_BRANCH: branch,
        TXT_ROLE: role,
        TXT_DEVICE_ID: device_id,
        TXT_PROTOCOL_VERSION: str(int(protocol_version)),
        TXT_FINGERPRINT: fingerprint,
    }
    for key, value in txt.items():
        if key != TXT_FINGERPRINT and not value:
            raise ValueError(f"announcement needs a non-empty {key!r}")
        if len(value) > MAX_FIELD_LEN or "=" in key:
            raise ValueError(f"TXT {key!r} value too long ({len(value)} > {MAX_FIELD_LEN})")
    return txt


def peer_from_txt(
    properties: Mapping[str | bytes, str | bytes | None],
    *,
    addresses: Iterable[str],
    port: int | None,
    now: float,
) -> PeerInfo:
    """Turn a resolved mDNS service (TXT properties, addresses, SRV port) into a `PeerInfo`.

    Raises `InvalidPeerRecord` for anything we cannot trust to be a SmartQ peer.
    """
    txt = decode_txt(properties)
    device_id = _required(txt, TXT_DEVICE_ID)
    branch = _required(txt, TXT_BRANCH)
    role = _required(txt, TXT_ROLE)
    pv_text = _required(txt, TXT_PROTOCOL_VERSION)
    try:
        protocol_version = int(pv_text)
    except ValueError as err:
        raise InvalidPeerRecord(f"TXT 'pv' is not an integer: {pv_text!r}") from err
    if protocol_version < 0:
        raise InvalidPeerRecord(f"TXT 'pv' is negative: {protocol_version}")
    fingerprint = (txt.get(TXT_FINGERPRINT) or "").strip()
    if len(fingerprint) > MAX_FIELD_LEN:
        raise InvalidPeerRecord("TXT 'fp' is too long")
    if port is None or not 0 < port < 65536:
        raise InvalidPeerRecord(f"service has no usable port: {port!r}")
    return PeerInfo(
        device_id=device_id,
        branch=branch,
        role=role,
        addresses=_clean_addresses(addresses),
        port=port,
        protocol_version=protocol_version,
        fingerprint=fingerprint,
        last_seen=now,
        source="mdns",
    )


def _clean_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Deduplicate, drop unparsable entries; IPv4 first, keep announcement order otherwise."""
    seen: list[str] = []
    for address in addresses:
        try:
            ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            logger.debug("ignoring unparsable peer address %r", address)
            continue
        if address not in seen:
            seen.append(address)
    return tuple(sorted(seen, key=lambda a: ":" in a))


@dataclass(frozen=True, slots=True)
class StaticPeer:
    """A configured fallback peer: ``HOST:PORT`` or ``DEVICE_ID@HOST:PORT`` (IPv6: ``[addr]:port``)."""

    host: str
    port: int
    device_id: str | None = None

    @classmethod
    def parse(cls, entry: str) -> StaticPeer:
        """Parse one config entry; raises `InvalidPeerRecord` with a clear message."""
        text = entry.strip()
        device_id: str | None = None
        if "@" in text:
            device_id, _, text = text.partition("@")
            device_id = device_id.strip()
            if not device_id:
                raise InvalidPeerRecord(f"static peer {entry!r}: empty device id before '@'")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise InvalidPeerRecord(f"static peer {entry!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or ":" in host:
                raise InvalidPeerRecord(f"static peer {entry!r}: expected HOST:PORT")
        host = host.strip()
        if not host:
            raise InvalidPeerRecord(f"static peer {entry!r}: empty host")
        try:
            port = int(port_text)
        except ValueError as err:
            raise InvalidPeerRecord(f"static peer {entry!r}: port is not a number") from err
        if not 0 < port < 65536:
            raise InvalidPeerRecord(f"static peer {entry!r}: port out of range")
        return cls(host=host, port=port, device_id=device_id)

    def key(self) -> str:
        """The table key: the configured device id, else ``static:HOST:PORT``."""
        return self.device_id or f"static:{self.host}:{self.port}"

    def to_peer(self, *, branch: str, now: float) -> PeerInfo:
        return PeerInfo(
            device_id=self.key(),
            branch=branch,
            role="",
            addresses=(self.host,),
            port=self.port,
            protocol_version=0,
            fingerprint="",
            last_seen=now,
            source="static",
        )


class PeerTable:
    """Merged peer table of one device: mDNS peers (by service name) plus static peers.

    Rules: peers of other branches and our own device id are ignored; a device id keeps its
    identity (role, fingerprint, protocol version) from first sight, and rediscovery only
    updates addresses, port and last_seen; an mDNS peer hides a static entry that has the same
    device id or the same (address, port). Listeners get one `PeerChange` per changed device.
    """

    def __init__(
        self,
        *,
        branch: str,
        device_id: str,
        clock: Callable[[], float],
        static_peers: Iterable[str | StaticPeer] = (),
    ) -> None:
        self.branch = branch
        self.device_id = device_id
        self._clock = clock
        self._mdns: dict[str, PeerInfo] = {}  # service name -> peer
        self._static: dict[str, PeerInfo] = {}
        self._listeners: list[PeerListener] = []
        for entry in static_peers:
            static = entry if isinstance(entry, StaticPeer) else StaticPeer.parse(entry)
            if static.device_id == device_id:
                continue
            self._static[static.key()] = static.to_peer(branch=branch, now=clock())

    # -- reading -----------------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        """The merged table, sorted by device id."""
        return sorted(self._merged().values(), key=lambda p: p.device_id)

    def get(self, device_id: str) -> PeerInfo | None:
        return self._merged().get(device_id)

    def _merged(self) -> dict[str, PeerInfo]:
        merged: dict[str, PeerInfo] = {}
        covered: set[tuple[str, int]] = set()
        for peer in self._mdns.values():
            # Two names for one device id (a renamed instance): the freshest wins.
            known = merged.get(peer.device_id)
            if known is None or peer.last_seen >= known.last_seen:
                merged[peer.device_id] = peer
            covered.update(peer.endpoints)
        for key, peer in self._static.items():
            if key in merged or covered.intersection(peer.endpoints):
                continue
            merged[key] = peer
        return merged

    # -- listeners ---------------------------------------------------------------------------

    def subscribe(self, listener: PeerListener) -> Callable[[], None]:
        """Call `listener` on every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, before: dict[str, PeerInfo]) -> None:
        after = self._merged()
        changes: list[PeerChange] = []
        for key, peer in after.items():
            old = before.get(key)
            if old is None:
                changes.append(PeerChange("added", peer))
            elif (old.addresses, old.port, old.source) != (peer.addresses, peer.port, peer.source):
                changes.append(PeerChange("updated", peer))
        changes.extend(PeerChange("removed", peer) for key, peer in before.items() if key not in after)
        for change in changes:
            logger.info("peer %s %s %s:%s", change.kind, change.peer.device_id, change.peer.addresses, change.peer.port)
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # a listener's bug must not break discovery
                    logger.exception("peer listener %r failed", listener)

    # -- writing (called by discovery) -------------------------------------------------------

    def accepts(self, peer: PeerInfo) -> bool:
        """False for ourselves and for other branches' devices."""
        if peer.device_id == self.device_id:
            return False
        if peer.branch != self.branch:
            logger.debug("ignoring %s of branch %r", peer.device_id, peer.branch)
            return False
        return True

    def upsert_mdns(self, name: str, peer: PeerInfo) -> bool:
        """Record a resolved mDNS service. Returns False when it was ignored."""
        if not self.accepts(peer):
            return False
        before = self._merged()
        known = before.get(peer.device_id)
        if known is not None and known.source == "mdns":
            identity_old = (known.branch, known.role, known.fingerprint, known.protocol_version)
            identity_new = (peer.branch, peer.role, peer.fingerprint, peer.protocol_version)
            if identity_old != identity_new:
                logger.warning(
                    "ignoring announcement of %s under %r: identity %r differs from known %r",
                    peer.device_id, name, identity_new, identity_old,
                )
                return False
        previous = self._mdns.get(name)
        if previous is not None and previous.device_id != peer.device_id:
            # The same service name now claims another device id: treat as remove + add.
            del self._mdns[name]
        self._mdns[name] = peer
        self._notify(before)
        return True

    def touch_mdns(self, name: str, *, addresses: Iterable[str], port: int | None) -> None:
        """Refresh a known mDNS peer's addresses/port/last_seen (e.g. re-read from cache)."""
        peer = self._mdns.get(name)
        if peer is None:
            return
        clean = _clean_addresses(addresses) or peer.addresses
        before = self._merged()
        self._mdns[name] = replace(
            peer, addresses=clean, port=port or peer.port, last_seen=self._clock()
        )
        self._notify(before)

    def remove_mdns(self, name: str) -> None:
        """The service said goodbye or expired: drop it (a static entry may reappear)."""
        if name not in self._mdns:
            return
        before = self._merged()
        del self._mdns[name]
        self._notify(before)

    def mdns_peer(self, name: str) -> PeerInfo | None:
        """The peer last resolved under an mDNS service name."""
        return self._mdns.get(name)

    def mdns_names(self) -> list[str]:
        return list(self._mdns)

    def clear_mdns(self) -> None:
        """Forget every mDNS peer (on stop), notifying listeners."""
        before = self._merged()
        self._mdns.clear()
        self._notify(before)
