"""Peer replication over `/sync/v1`: the signed HTTP app one device serves, and the
`Replicator` that keeps this device's log in step with its peers'. Generic: it moves signed
events between event logs and knows nothing about what they mean.

Two paths (docs/replication.md):
- **push**: every event this device commits is posted at once to every known peer, so a
  call reaches the display within milliseconds;
- **anti-entropy**: every `anti_entropy_s`, and at once after a peer comes back, pull what
  that peer has and we lack, by version vector, in batches. This repairs whatever a push
  missed and relays events of devices that are down; the log holds gaps until filled.

Ingest always runs on the store's writer thread (`store.write`), reads on its readers, so
the event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiohttp import ClientSession, TCPConnector, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.envelope import Event
from sync.keys import fingerprint
from sync.log import EventLog, IngestResult, events_since, version_vector
from sync.peers import PeerInfo
from sync.protocol import (
    H_DEVICE,
    PREFIX,
    PROTOCOL_VERSION,
    AuthError,
    check_vv,
    PeerClient,
    PeerError,
    Verifier,
    decode,
    encode,
    pinned_connector,
    sign_response,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
Keyring = Callable[[str], Ed25519PublicKey | None]


class Store(Protocol):
    """What replication needs of a device: its log, and SQLite access off the event loop."""

    log: EventLog

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


@dataclass(frozen=True)
class SyncSettings:
    """Limits and timing of the protocol (the [lan] section sets them; docs/replication.md)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_push_events: int = 5000
    max_pull_limit: int = 5000
    pull_batch: int = 2000
    push_batch: int = 500
    anti_entropy_s: float = 1.0
    retry_min_s: float = 0.2
    retry_max_s: float = 0.5
    connect_timeout_s: float = 1.0
    request_timeout_s: float = 5.0


def vv_behind(ours: Mapping[str, int], theirs: Mapping[str, int]) -> int:
    """How many events `theirs` lacks of what `ours` holds."""
    return sum(max(0, seq - int(theirs.get(origin, 0))) for origin, seq in ours.items())


# -- the server side ---------------------------------------------------------------------

REFUSED = web.AppKey("refused", list)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The error envelope of every SmartQ HTTP API: {"error": {code, message}} (nodes and HQ)."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def signed_response(key: Ed25519PrivateKey, request: web.Request, message: Any, *, device: str, branch: str,
                    to: str, status: int = 200) -> web.Response:
    """A `/sync/v1` answer: the JSON message signed by `device` (our identity) for the asker `to`.
    Used by every `/sync/v1` server: the node's (create_sync_app) and HQ's branch link."""
    body = encode(message)
    headers = sign_response(key, device=device, branch=branch, method=request.method, path=request.path,
                            body=body, to=to)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


_error = error_response


def create_sync_app(
    store: Store, *, device_id: str, role: str, branch: str, key: Ed25519PrivateKey, keyring: Keyring,
    settings: SyncSettings = SyncSettings(), verifier: Verifier | None = None,
    on_request: Callable[[str], None] | None = None, clock_ms: Callable[[], int] | None = None,
    peer_check: Callable[[bytes | None, str], None] | None = None,
) -> web.Application:
    """The `/sync/v1` app: hello, push, pull. Every request must be signed by a device the
    keyring knows, for our branch, addressed to us, fresh and not replayed; every answer is
    signed by us and addressed to the asker. `on_request(device)` hears every authenticated
    request (the replicator uses it to notice a peer is back)."""
    verifier = verifier or Verifier(keyring, lambda b: b == branch, audience=device_id, clock_ms=clock_ms)
    own_fingerprint = fingerprint(key.public_key())
    refused: list[dict[str, Any]] = []

    async def authenticate(request: web.Request) -> tuple[str, bytes]:
        body = await request.read() if request.can_read_body else b""
        try:
            signed = verifier.verify(request.method, request.path, request.headers, body,
                                     unaddressed_ok=request.path == f"{PREFIX}/hello")
            if peer_check is not None:
                from sync.certs import peer_der
                peer_check(peer_der(request.transport), signed.device)
        except AuthError as err:
            peer = request.remote or "?"
            claimed = request.headers.get(H_DEVICE, "?")
            logger.warning("refused %s %s from %s (claims %r): %s", request.method, request.path, peer, claimed,
                           err.message)
            refused.append({"at_ms": int(time.time() * 1000), "remote": peer, "device": claimed,
                            "path": request.path, "status": err.status, "reason": err.message})
            del refused[:-100]
            raise _Refused(err) from err
        if on_request is not None:
            on_request(signed.device)
        return signed.device, body

    def answer(request: web.Request, asker: str, message: Any) -> web.Response:
        return signed_response(key, request, message, device=device_id, branch=branch, to=asker)

    async def hello(request: web.Request) -> web.Response:
        asker, _ = await authenticate(request)
        vv = await store.read(version_vector)
        return answer(request, asker, {"protocol": PROTOCOL_VERSION, "device": device_id, "role": role,
                                       "branch": branch, "fingerprint": own_fingerprint, "vv": vv})

    async def push(request: web.Request) -> web.Response:
        asker, body = await authenticate(request)
        message = decode(body)
        events = message.get("events") if isinstance(message, dict) else None
        if not isinstance(events, list):
            return _error(400, "bad_request", "push needs {events: [envelope, ...]}")
        if len(events) > settings.max_push_events:
            return _error(413, "too_many_events", f"at most {settings.max_push_events} events per push")

        def ingest(conn: sqlite3.Connection) -> tuple[IngestResult, dict[str, int]]:
            return store.log.ingest(conn, events), version_vector(conn)

        result, vv = await store.write(ingest)
        if result.rejected:
            logger.warning("push from %s: %d event(s) rejected, first: %s", asker, len(result.rejected),
                           result.rejected[0])
        return answer(request, asker, {
            "accepted": len(result.accepted), "duplicates": result.duplicates, "held": result.held,
            "quarantined": result.quarantined, "rejected": [list(r) for r in result.rejected[:50]], "vv": vv,
        })

    async def pull(request: web.Request) -> web.Response:
        asker, body = await authenticate(request)
        message = decode(body)
        vv = message.get("vv") if isinstance(message, dict) else None
        limit = message.get("limit", settings.pull_batch) if isinstance(message, dict) else None
        try:
            vv = check_vv(vv) if isinstance(vv, dict) else None
        except AuthError as err:
            return _error(400, "bad_request", err.message)
        if vv is None:
            return _error(400, "bad_request", "pull needs {vv: {origin: seq}, limit}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return _error(400, "bad_request", "limit must be a positive integer")
        limit = min(limit, settings.max_pull_limit)

        def read(conn: sqlite3.Connection) -> tuple[list[Event], dict[str, int]]:
            return events_since(conn, vv, limit), version_vector(conn)

        events, ours = await store.read(read)
        return answer(request, asker, {"events": [e.to_dict() for e in events], "more": len(events) >= limit,
                                       "vv": ours})

    @web.middleware
    async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as refusal:
            return _error(refusal.error.status, "refused", refusal.error.message)
        except web.HTTPException as err:
            if err.status == 413:
                return _error(413, "body_too_large", f"body larger than {settings.max_body_bytes} bytes")
            if err.status >= 400:
                return _error(err.status, "http_error", err.reason)
            raise
        except AuthError as err:  # a body that is not JSON
            return _error(err.status, "bad_request", err.message)

    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    app[REFUSED] = refused
    app.router.add_get(f"{PREFIX}/hello", hello)
    app.router.add_post(f"{PREFIX}/push", push)
    app.router.add_post(f"{PREFIX}/pull", pull)
    return app


class _Refused(Exception):
    def __init__(self, error: AuthError) -> None:
        super().__init__(error.message)
        self.error = error


# -- the client side ---------------------------------------------------------------------

@dataclass
class PeerState:
    """What replication knows about one peer (the `view()` row)."""

    key: str                       # the peer table key (device id, or static:HOST:PORT)
    info: PeerInfo
    device: str | None             # verified device id (a signed answer or the roster)
    status: str = "unknown"        # ok | unreachable | unknown
    last_seen: float | None = None  # wall clock of the last successful exchange
    last_error: str | None = None
    their_vv: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    pending: list[Event] = field(default_factory=list)
    resync: bool = True
    next_round: float = 0.0        # monotonic time of the next anti-entropy round
    wake: asyncio.Event = field(default_factory=asyncio.Event)       # pull now
    push_wake: asyncio.Event = field(default_factory=asyncio.Event)  # pending events to push
    task: asyncio.Task[None] | None = None
    push_task: asyncio.Task[None] | None = None
    client: PeerClient | None = None
    session: ClientSession | None = None  # its own connection pool: dropped whole on failure
    endpoint: tuple[str, int] | None = None


class Replicator:
    """Keeps the store's log in step with every admitted peer: push own events, pull the rest."""

    def __init__(
        self, store: Store, *, device_id: str, branch: str, key: Ed25519PrivateKey, keyring: Keyring,
        settings: SyncSettings = SyncSettings(), clock: Callable[[], float] = time.time,
        rng: random.Random | None = None, ssl: ssl_module.SSLContext | None = None,
        peer_check: Callable[[bytes | None, str | None], None] | None = None,
    ) -> None:
        """`ssl`: a client context for mutual TLS (peer URLs become https); None = plain HTTP.
        `peer_check(der, device)` checks the certificate a peer presented (see create_sync_app);
        with `ssl`, the fingerprint a peer announces by mDNS is that of its certificate (not
        compared with its roster key)."""
        self._store = store
        self.device_id = device_id
        self.branch = branch
        self._key = key
        self._keyring = keyring
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._ssl = ssl
        self._peer_check = peer_check
        self._answers = Verifier(keyring, lambda b: b == branch, audience=device_id)
        self._peers: dict[str, PeerState] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._pull_lock = asyncio.Lock()
        self._our_vv: dict[str, int] = {}
        self._ignored: dict[str, str] = {}
        self._running = False

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._our_vv = await self._store.read(version_vector)
        self._running = True
        for peer in self._peers.values():
            self._start_worker(peer)

    async def stop(self) -> None:
        self._running = False
        tasks = [t for p in self._peers.values() for t in (p.task, p.push_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in self._peers.values():
            self._drop_connections(peer)
        await asyncio.gather(*self._closing, return_exceptions=True)

    # -- peers -----------------------------------------------------------------------------
    def admit(self, info: PeerInfo) -> str | None:
        """Why a discovered peer is not replicated with (None: admitted)."""
        if info.branch != self.branch:
            return f"belongs to branch {info.branch!r}"
        if info.device_id == self.device_id:
            return "is this device"
        if info.source == "static" and info.device_id.startswith("static:"):
            return None  # identified by its first signed answer
        key = self._keyring(info.device_id)
        if key is None:
            return "is not on the roster"
        if info.source == "mdns" and self._ssl is None and info.fingerprint != fingerprint(key):
            return f"announces fingerprint {info.fingerprint!r}, the roster key's is {fingerprint(key)!r}"
        if info.protocol_version not in (0, PROTOCOL_VERSION):
            return f"speaks protocol {info.protocol_version}, we speak {PROTOCOL_VERSION}"
        return None

    def upsert(self, info: PeerInfo) -> bool:
        """A peer was discovered or its address changed. Returns False when it is ignored."""
        reason = self.admit(info)
        if reason is not None:
            if self._ignored.get(info.device_id) != reason:
                logger.warning("ignoring peer %s at %s: it %s", info.device_id, info.endpoints, reason)
                self._ignored[info.device_id] = reason
            return False
        self._ignored.pop(info.device_id, None)
        peer = self._peers.get(info.device_id)
        if peer is None:
            device = None if info.device_id.startswith("static:") else info.device_id
            peer = PeerState(key=info.device_id, info=info, device=device)
            self._peers[info.device_id] = peer
            logger.info("replicating with %s at %s", info.device_id, info.endpoints)
            if self._running:
                self._start_worker(peer)
        else:
            peer.info = info
            self._drop_connections(peer)  # reconnect to the new address
            peer.failures = 0
            peer.next_round = 0.0
            peer.wake.set()
        return True

    def remove(self, device_id: str) -> None:
        peer = self._peers.pop(device_id, None)
        if peer is not None:
            for task in (peer.task, peer.push_task):
                if task is not None:
                    task.cancel()
            self._drop_connections(peer)
            logger.info("stopped replicating with %s", device_id)

    def heard_from(self, device: str) -> None:
        """A peer just sent us an authenticated request: if we thought it down, try it now."""
        for peer in self._peers.values():
            if peer.device == device and peer.status != "ok":
                peer.failures = 0
                peer.next_round = 0.0
                peer.wake.set()

    def on_committed(self, events: list[Event]) -> None:
        """After each commit (on the loop): queue our own new events for every peer."""
        own = [e for e in events if e.origin == self.device_id]
        for e in events:
            if e.seq > self._our_vv.get(e.origin, 0):
                self._our_vv[e.origin] = e.seq
        if not own:
            return
        for peer in self._peers.values():
            if peer.status == "unreachable" or peer.device is None:
                continue  # anti-entropy carries them when it is back (or once it is identified)
            peer.pending.extend(own)
            peer.push_wake.set()

    def view(self) -> list[dict[str, Any]]:
        out = []
        for peer in sorted(self._peers.values(), key=lambda p: p.key):
            address = f"{peer.endpoint[0]}:{peer.endpoint[1]}" if peer.endpoint else (
                f"{peer.info.endpoints[0][0]}:{peer.info.port}" if peer.info.endpoints else None)
            out.append({
                "id": peer.device or peer.key, "role": peer.info.role or None, "address": address,
                "source": peer.info.source, "status": peer.status,
                "last_seen": peer.last_seen, "last_error": peer.last_error,
                "behind": vv_behind(self._our_vv, peer.their_vv) if peer.status == "ok" else None,
                "ahead": vv_behind(peer.their_vv, self._our_vv) if peer.status == "ok" else None,
                "vv": dict(peer.their_vv),
            })
        return out

    def peer(self, key: str) -> PeerState | None:
        return self._peers.get(key)

    # -- the per-peer worker ---------------------------------------------------------------
    def _start_worker(self, peer: PeerState) -> None:
        """Two tasks per peer, so a slow pull (or one waiting for the pull lock) never delays a push."""
        loop = asyncio.get_running_loop()
        peer.task = loop.create_task(self._pull_loop(peer), name=f"pull-{peer.key}")
        peer.push_task = loop.create_task(self._push_loop(peer), name=f"push-{peer.key}")

    def _client(self, peer: PeerState) -> PeerClient:
        if peer.client is None:
            if peer.session is None:
                connector = (pinned_connector(self._ssl, self._tls_check(peer), limit_per_host=2)
                             if self._ssl is not None else TCPConnector(limit_per_host=2, ssl=False))
                peer.session = ClientSession(connector=connector)
            endpoints = peer.info.endpoints
            if not endpoints:
                raise PeerError(f"{peer.key} has no address")
            # Alternate between announced addresses after failures.
            host, port = endpoints[peer.failures % len(endpoints)]
            scheme = "https" if self._ssl is not None else "http"
            shown = f"[{host}]" if ":" in host else host
            peer.endpoint = (host, port)
            peer.client = PeerClient(peer.session, f"{scheme}://{shown}:{port}", device=self.device_id,
                                     branch=self.branch, key=self._key, verifier=self._answers,
                                     peer_device=peer.device, timeout_s=self.settings.request_timeout_s,
                                     connect_timeout_s=self.settings.connect_timeout_s)
        return peer.client

    def _tls_check(self, peer: PeerState) -> Callable[[bytes | None], None]:
        def check(der: bytes | None) -> None:
            if der is None:
                raise AuthError(401, "no TLS certificate")
            # The `fp` a peer announces is its certificate's fingerprint, but a certificate is
            # renewed while announcements are cached: identity comes from the certificate's
            # binding (org, branch, device, roster key), checked here on every new connection.
            if self._peer_check is not None:
                self._peer_check(der, peer.device)
        return check

    async def _push_loop(self, peer: PeerState) -> None:
        while True:
            await peer.push_wake.wait()
            peer.push_wake.clear()
            if peer.device is None:
                peer.pending.clear()
                continue
            try:
                await self._push_pending(peer)
                self._succeeded(peer)
            except asyncio.CancelledError:
                raise
            except PeerError as err:
                self._failed(peer, str(err))
            except Exception as err:  # a bug must not end replication with this peer
                logger.exception("pushing to %s failed", peer.key)
                self._failed(peer, repr(err))

    async def _pull_loop(self, peer: PeerState) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = peer.next_round - loop.time()
            if delay > 0:
                # Not asyncio.wait_for: on 3.11 it swallows a cancel that comes as the wait ends,
                # and this loop would outlive stop().
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await peer.wake.wait()
            peer.wake.clear()
            try:
                await self._anti_entropy(peer)
                peer.next_round = loop.time() + self.settings.anti_entropy_s
                self._succeeded(peer)
            except asyncio.CancelledError:
                raise
            except PeerError as err:
                self._failed(peer, str(err))
                peer.next_round = loop.time() + self._backoff(peer)
            except Exception as err:  # a bug must not end replication with this peer
                logger.exception("replication with %s failed", peer.key)
                self._failed(peer, repr(err))
                peer.next_round = loop.time() + self._backoff(peer)

    def _backoff(self, peer: PeerState) -> float:
        base = min(self.settings.retry_max_s, self.settings.retry_min_s * (2 ** min(peer.failures - 1, 10)))
        return base * (0.75 + 0.5 * self._rng.random())  # jitter: peers do not retry in lockstep

    def _succeeded(self, peer: PeerState) -> None:
        if peer.status != "ok":
            logger.info("peer %s reachable at %s", peer.device or peer.key, peer.endpoint)
            # One peer back usually means the network healed: retry the others now.
            for other in self._peers.values():
                if other is not peer and other.status == "unreachable":
                    other.next_round = 0.0
                    other.wake.set()
        peer.status, peer.failures, peer.last_error = "ok", 0, None
        peer.last_seen = self._clock()

    def _failed(self, peer: PeerState, message: str) -> None:
        if peer.status != "unreachable":
            logger.warning("peer %s unreachable: %s", peer.device or peer.key, message)
        peer.status, peer.last_error = "unreachable", message
        peer.failures += 1
        peer.pending.clear()  # anti-entropy repairs what was not delivered
        peer.resync = True
        self._drop_connections(peer)

    def _drop_connections(self, peer: PeerState) -> None:
        """Close the peer's pooled connections: after a partition, a kept-alive socket would
        swallow the next request until the whole-request timeout; a fresh connect fails fast."""
        peer.client = None
        session, peer.session = peer.session, None
        if session is not None:
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _learn(self, peer: PeerState, client: PeerClient, vv: Any) -> None:
        """Record the peer's vector; a static peer learns its device id from its first signed answer."""
        if isinstance(vv, dict):
            peer.their_vv = {str(k): int(v) for k, v in vv.items() if isinstance(v, int)}
        if peer.device is None and client.last_signer is not None:
            if client.last_signer == self.device_id:
                raise PeerError(f"{peer.key} is this device")
            peer.device = client.last_signer
            client.peer_device = peer.device
            logger.info("static peer %s is device %s", peer.key, peer.device)

    async def _push_pending(self, peer: PeerState) -> None:
        client = self._client(peer)
        while peer.pending:
            batch = peer.pending[: self.settings.push_batch]
            reply = await client.push([e.to_dict() for e in batch])
            del peer.pending[: len(batch)]
            self._learn(peer, client, reply.get("vv"))
            if reply.get("held"):
                # It lacks earlier events of ours (it was away): send them from where it is.
                await self._push_own_since(peer, client)

    async def _push_own_since(self, peer: PeerState, client: PeerClient) -> None:
        while True:
            have = {self.device_id: peer.their_vv.get(self.device_id, 0)}
            events = await self._store.read(lambda conn: [
                e for e in events_since(conn, have, self.settings.push_batch) if e.origin == self.device_id])
            if not events:
                return
            reply = await client.push([e.to_dict() for e in events])
            before = have[self.device_id]
            self._learn(peer, client, reply.get("vv"))
            if peer.their_vv.get(self.device_id, 0) <= before:
                return  # no progress (it refuses them); anti-entropy logs will tell

    async def _anti_entropy(self, peer: PeerState) -> None:
        """Pull everything the peer has and we lack, in batches; one pull at a time per device,
        so after a heal the same events are not fetched from every peer at once."""
        client = self._client(peer)
        if peer.device is None:  # a static peer: learn who it is before asking for events
            self._learn(peer, client, (await client.hello()).get("vv"))
        # The first request runs outside the lock: a peer that does not answer must not hold
        # up pulls from the others; usually it says "nothing new" and we are done.
        vv = await self._store.read(version_vector)
        reply = await client.pull(vv, self.settings.pull_batch)
        async with self._pull_lock:
            while True:
                self._learn(peer, client, reply.get("vv"))
                events = reply.get("events")
                if not isinstance(events, list):
                    raise PeerError(f"{peer.key}: pull answer without events")
                if events:
                    result, vv = await self._store.write(
                        lambda conn: (self._store.log.ingest(conn, events), version_vector(conn)))
                    self._our_vv.update(vv)
                    if result.rejected:
                        logger.warning("pull from %s: %d event(s) rejected, first: %s", peer.key,
                                       len(result.rejected), result.rejected[0])
                    if not result.accepted and not result.held:
                        break  # nothing new came of it; do not ask again for the same events
                if not reply.get("more"):
                    break
                reply = await client.pull(vv, self.settings.pull_batch)
        peer.resync = False


__all__ = ["PeerState", "Replicator", "Store", "SyncSettings", "create_sync_app", "vv_behind"]
