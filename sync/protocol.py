"""The replication protocol's wire format and request authentication (`/sync/v1/`).

Every request is signed by the sending device's Ed25519 key; every response by the
answering one. What is signed (the *string to sign*):

    smartq-sync-v1 \\n METHOD \\n PATH \\n BRANCH \\n DEVICE \\n TIME_MS \\n NONCE \\n SHA256(BODY) [\\n TO]

where BODY is the uncompressed JSON body (empty for GET) and TO, when present, the device
the message is addressed to (a request: the peer asked; an answer: the device that asked).
Headers carry the parts: X-SmartQ-Protocol, X-SmartQ-Branch, X-SmartQ-Device, X-SmartQ-Time,
X-SmartQ-Nonce, X-SmartQ-Signature (hex), X-SmartQ-To. A receiver with an `audience` refuses
messages addressed to another device, so a request captured on its way to one peer cannot be
replayed to another (each peer keeps its own nonce memory). A receiver accepts a request only from a device its keyring
knows, for a branch it serves, within `max_skew_ms` of its clock, with a nonce not seen
in that window. Events inside bodies are signed by their origins anyway; request
signatures decide who may *ask* (pull, push, hello), so an outsider reads nothing.

Messages (JSON):
  GET  /sync/v1/hello -> {protocol, device, role, branch, fingerprint, vv}
  POST /sync/v1/push  {events: [envelope...]} -> {accepted, duplicates, held, quarantined, rejected, vv}
  POST /sync/v1/pull  {vv: {origin: seq}, limit} -> {events: [envelope...], more, vv}
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.envelope import INT_MAX
from sync.keys import verify

PROTOCOL_VERSION = 1
PREFIX = "/sync/v1"
MAX_SKEW_MS = 60 * 60 * 1000
H_PROTOCOL, H_BRANCH, H_DEVICE = "X-SmartQ-Protocol", "X-SmartQ-Branch", "X-SmartQ-Device"
H_TIME, H_NONCE, H_SIGNATURE = "X-SmartQ-Time", "X-SmartQ-Nonce", "X-SmartQ-Signature"
H_TO = "X-SmartQ-To"
PUSH_REFUSED = 422  # a push of which some events were refused (the rest are kept); reasons in the body


class AuthError(Exception):
    """A request or response that must not be trusted; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


def decode(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as err:
        raise AuthError(400, f"body is not JSON: {err}") from err


def check_vv(value: Any) -> dict[str, int]:
    """A version vector from a peer: {origin: seq} with seqs a store can hold; raises AuthError(400)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT_MAX
            for k, v in value.items()):
        raise AuthError(400, f"vv must be an object {{origin: seq}} with seqs from 0 to {INT_MAX}")
    return value


def string_to_sign(method: str, path: str, branch: str, device: str, time_ms: int, nonce: str, body: bytes,
                   to: str = "") -> bytes:
    parts = ["smartq-sync-v1", method.upper(), path, branch, device, str(time_ms), nonce, hashlib.sha256(body).hexdigest()]
    if to:
        parts.append(to)
    return "\n".join(parts).encode("utf-8")


def sign_headers(key: Ed25519PrivateKey, *, device: str, branch: str, method: str, path: str, body: bytes,
                 now_ms: int | None = None, nonce: str | None = None, to: str | None = None) -> dict[str, str]:
    time_ms = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = nonce or secrets.token_hex(16)
    sig = key.sign(string_to_sign(method, path, branch, device, time_ms, nonce, body, to or "")).hex()
    headers = {H_PROTOCOL: str(PROTOCOL_VERSION), H_BRANCH: branch, H_DEVICE: device, H_TIME: str(time_ms),
               H_NONCE: nonce, H_SIGNATURE: sig}
    if to:
        headers[H_TO] = to
    return headers


@dataclass(frozen=True)
class Signed:
    """Who signed a verified message, for which branch."""

    device: str
    branch: str


class Verifier:
    """Checks signed requests (or responses); thread-safe; remembers nonces for replay."""

    def __init__(self, keyring: Callable[[str], Ed25519PublicKey | None], branches: Callable[[str], bool],
                 *, max_skew_ms: int = MAX_SKEW_MS, clock_ms: Callable[[], int] | None = None,
                 max_nonces: int = 200_000, audience: str | None = None) -> None:
        """With `audience` (our device id), messages must be addressed to us (X-SmartQ-To)."""
        self._keyring = keyring
        self.audience = audience
        self._branches = branches
        self._max_skew_ms = max_skew_ms
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._nonces: dict[str, int] = {}
        self._max_nonces = max_nonces
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *,
               expect_device: str | None = None, check_replay: bool = True,
               unaddressed_ok: bool = False, audience: Callable[[str], str] | None = None) -> Signed:
        """Who signed this message; raises AuthError. `unaddressed_ok` accepts a message
        without X-SmartQ-To even with an audience (a hello to a static peer whose id is
        not known yet). `audience` names our device id per signed branch (HQ answers as
        "hq:<branch>"), in place of the fixed one."""
        try:
            protocol = int(headers.get(H_PROTOCOL, "0"))
            time_ms = int(headers[H_TIME])
            device, branch, nonce, sig_hex = headers[H_DEVICE], headers[H_BRANCH], headers[H_NONCE], headers[H_SIGNATURE]
            signature = bytes.fromhex(sig_hex)
            to = headers.get(H_TO, "")
        except (KeyError, ValueError) as err:
            raise AuthError(401, "missing or malformed X-SmartQ-* signature headers") from err
        if protocol != PROTOCOL_VERSION:
            raise AuthError(409, f"protocol version {protocol} is not {PROTOCOL_VERSION}")
        if expect_device is not None and device != expect_device:
            raise AuthError(401, f"answer signed by {device!r}, expected {expect_device!r}")
        if not self._branches(branch):
            raise AuthError(403, f"branch {branch!r} is not served here")
        key = self._keyring(device)
        if key is None:
            raise AuthError(403, f"device {device!r} is not on the roster")
        if not verify(key, signature, string_to_sign(method, path, branch, device, time_ms, nonce, body, to)):
            raise AuthError(401, "bad request signature")
        us = audience(branch) if audience is not None else self.audience
        if us is not None and to != us and not (unaddressed_ok and not to):
            raise AuthError(401, f"addressed to {to or 'nobody'!r}, not to {us!r}")
        now = self._clock_ms()
        if abs(now - time_ms) > self._max_skew_ms:
            raise AuthError(401, f"request time is {abs(now - time_ms) // 1000} s off this device's clock")
        if check_replay:
            with self._lock:
                if nonce in self._nonces:
                    raise AuthError(401, "replayed request (nonce already used)")
                if len(self._nonces) >= self._max_nonces:
                    self._expire(now)
                self._nonces[nonce] = time_ms
        return Signed(device, branch)

    def _expire(self, now: int) -> None:
        horizon = now - self._max_skew_ms
        self._nonces = {n: t for n, t in self._nonces.items() if t >= horizon}
        while len(self._nonces) >= self._max_nonces:  # still full: drop the oldest
            self._nonces.pop(next(iter(self._nonces)))


class PeerError(Exception):
    """A peer that could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PeerClient:
    """Signed requests to one peer's /sync/v1 (a branch device or HQ), over aiohttp.

    With `verifier`, answers must be signed by a device its keyring knows, and by
    `peer_device` when that is set; requests are addressed to `peer_device` (X-SmartQ-To).
    `last_signer` is the device that signed the last verified answer (how a static peer
    configured without an id is identified).
    """

    def __init__(self, session: Any, base_url: str, *, device: str, branch: str, key: Ed25519PrivateKey,
                 verifier: Verifier | None = None, peer_device: str | None = None, timeout_s: float = 10.0,
                 connect_timeout_s: float | None = None, server_hostname: str | None = None) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._device, self._branch, self._key = device, branch, key
        self._verifier, self.peer_device = verifier, peer_device
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._extra = {"server_hostname": server_hostname} if server_hostname else {}  # TLS SNI
        self.last_signer: str | None = None

    async def request(self, method: str, path: str, message: Any = None, *, answer_statuses: tuple[int, ...] = ()) -> Any:
        """`answer_statuses`: error statuses that still carry a signed answer (a push whose
        batch had refused events is 422 with the counts and the version vector)."""
        import aiohttp

        body = encode(message) if message is not None else b""
        headers = sign_headers(self._key, device=self._device, branch=self._branch, method=method, path=path,
                               body=body, to=self.peer_device)
        if body:
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=self._timeout_s, sock_connect=self._connect_timeout_s)
        try:
            async with self._session.request(method, self.base_url + path, data=body or None, headers=headers,
                                             timeout=timeout, **self._extra) as resp:
                raw = await resp.read()
                if resp.status >= 400 and resp.status not in answer_statuses:
                    detail = raw[:300].decode("utf-8", "replace")
                    raise PeerError(f"{method} {path} -> {resp.status}: {detail}", resp.status)
                if self._verifier is not None:
                    try:
                        signed = self._verifier.verify(method, path, resp.headers, raw, expect_device=self.peer_device,
                                                       check_replay=False)
                    except AuthError as err:
                        raise PeerError(f"untrusted answer from {self.base_url}: {err.message}") from err
                    self.last_signer = signed.device
                return decode(raw)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise PeerError(f"{self.base_url} unreachable: {type(err).__name__}: {err}") from err
        except AuthError as err:  # an answer that is not JSON
            raise PeerError(f"bad answer from {self.base_url}: {err.message}") from err

    async def hello(self) -> dict[str, Any]:
        return await self.request("GET", f"{PREFIX}/hello")

    async def push(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("POST", f"{PREFIX}/push", {"events": events}, answer_statuses=(PUSH_REFUSED,))

    async def pull(self, vv: Mapping[str, int], limit: int = 1000) -> dict[str, Any]:
        return await self.request("POST", f"{PREFIX}/pull", {"vv": dict(vv), "limit": limit})


def pinned_connector(ssl_context: Any, check: Callable[[bytes | None], None], **kwargs: Any) -> Any:
    """An aiohttp connector for mutual TLS that hands each new connection's peer certificate
    (DER) to `check` before any request is sent on it; `check` raises AuthError to refuse."""
    import aiohttp

    from sync.certs import peer_der

    class PinnedConnector(aiohttp.TCPConnector):
        async def _wrap_create_connection(self, *args: Any, **kw: Any) -> Any:
            transport, protocol = await super()._wrap_create_connection(*args, **kw)
            try:
                check(peer_der(transport))
            except AuthError as err:
                transport.close()
                raise aiohttp.ClientConnectionError(f"untrusted TLS peer: {err.message}") from err
            return transport, protocol

    return PinnedConnector(ssl=ssl_context, **kwargs)


def sign_response(key: Ed25519PrivateKey, *, device: str, branch: str, method: str, path: str,
                  body: bytes, to: str | None = None) -> dict[str, str]:
    """Headers that sign an answer (the same string to sign, by the answering device,
    addressed `to` the device that asked)."""
    return sign_headers(key, device=device, branch=branch, method=method, path=path, body=body, to=to)
