"""Async HTTP + server-sent-events client for a node's local API (DESIGN §6).

Used by the three Kivy UIs (and by the demo's simulated citizens and staff). It translates
aiohttp errors into a few typed exceptions at the boundary, so a view-model only has to tell
"the node is unreachable" from "the node said no", and it keeps the event stream alive with
exponential backoff, fetching ``/state`` once after every (re)connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

JSON = dict[str, Any]


class NodeError(Exception):
    """Base of every error this client raises."""


class NodeUnavailable(NodeError):
    """The node could not be reached (refused, reset, timed out, or not speaking HTTP/JSON)."""


class NodeRejected(NodeError):
    """The node answered with an error reply (4xx/5xx, ``{"error": {code, message}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(NodeRejected):
    """400: the request was malformed or a field was invalid."""


class Unauthorized(NodeRejected):
    """401/403: a staff session is missing, expired or the PIN is wrong."""


class NotFound(NodeRejected):
    """404: unknown ticket, counter, service or booking code."""


class Conflict(NodeRejected):
    """409: the action does not fit the current state (e.g. completing a waiting ticket)."""


_BY_STATUS: dict[int, type[NodeRejected]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
}


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event from ``GET /api/v1/stream``."""

    id: str | None
    type: str
    data: JSON


def parse_sse_lines(lines: list[str]) -> StreamEvent | None:
    """Turn the lines of one SSE block (without the blank terminator) into an event.

    Comment lines (``:`` heartbeats) are skipped; a block with only comments gives None.
    """
    event_id: str | None = None
    event_type = "message"
    data_lines: list[str] = []
    for line in lines:
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            event_type = value
        elif field == "data":
            data_lines.append(value)
    if not data_lines:
        return None
    raw = "\n".join(data_lines)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("stream: non-JSON data for %s dropped", event_type)
        return None
    if not isinstance(data, dict):
        data = {"value": data}
    return StreamEvent(event_id, event_type, data)


class Backoff:
    """Exponential backoff with full jitter; ``rng`` is injected for deterministic tests."""

    def __init__(
        self,
        first: float = 0.25,
        maximum: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.first = first
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.first * (2**self._attempt))
        self._attempt += 1
        # Never below half the cap: a restarting node must not be hammered by a 0 s retry.
        return cap / 2 + self._rng.random() * cap / 2


StateHandler = Callable[[JSON], Any]
EventHandler = Callable[[StreamEvent], Any]
ConnectionHandler = Callable[[bool, str], Any]


async def _maybe_await(value: Any) -> None:
    if isinstance(value, Awaitable):
        await value


async def _call_handler(handler: Callable[..., Any], *args: Any) -> None:
    """A UI handler's bug is logged; it must not end the stream (the UI would freeze)."""
    try:
        await _maybe_await(handler(*args))
    except Exception:
        logger.exception("stream handler %r failed", handler)


class NodeClient:
    """Client of one node's local API at ``base_url`` (e.g. ``http://127.0.0.1:8401``).

    Create it inside the running loop; close it with ``await client.close()`` or use it as an
    async context manager. ``token`` is the staff bearer token, set by :meth:`login`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def request(self, method: str, path: str, body: JSON | None = None) -> JSON | None:
        """Send one API request; return the JSON reply, or None for 204.

        Raises NodeUnavailable when the node cannot be reached and a NodeRejected subclass
        for error replies.
        """
        url = f"{self.base_url}{API_PREFIX}{path}"
        try:
            async with self._get_session().request(
                method,
                url,
                json=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status == 204:
                    return None
                text = await resp.text()
                payload: Any = None
                if text:
                    try:
                        payload = json.loads(text)
                    except json.JSONDecodeError:
                        payload = None
                if resp.status >= 400:
                    raise _rejection(resp.status, payload, text)
                if not isinstance(payload, dict):
                    raise NodeUnavailable(f"{method} {path}: reply is not a JSON object")
                return payload
        except NodeError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise NodeUnavailable(f"{method} {path}: {err or type(err).__name__}") from err

    # --- citizens -------------------------------------------------------------------------

    async def state(self) -> JSON:
        return await self._must("GET", "/state")

    async def ticket(self, ticket_id: str) -> JSON:
        return await self._must("GET", f"/tickets/{ticket_id}")

    async def issue_ticket(
        self,
        service: str | None = None,
        *,
        priority: int = 0,
        language: str | None = None,
        phone: str | None = None,
        booking_code: str | None = None,
    ) -> JSON:
        """POST /tickets; a booking check-in sends ``booking_code`` (service optional)."""
        body: JSON = {}
        if service is not None:
            body["service"] = service
        if priority:
            body["priority"] = priority
        if language:
            body["language"] = language
        if phone:
            body["phone"] = phone
        if booking_code:
            body["booking_code"] = booking_code
        return await self._must("POST", "/tickets", body)

    # --- staff ----------------------------------------------------------------------------

    async def login(self, counter: str, pin: str) -> JSON:
        reply = await self._must("POST", "/staff/login", {"counter": counter, "pin": pin})
        self.token = reply.get("token")
        return reply

    async def logout(self) -> None:
        """End this client's staff session at the node (POST /staff/logout), then forget the
        token. The token is forgotten even when the node cannot be reached; that error is
        raised after, so the caller can say the session may still be open there."""
        if not self.token:
            return
        try:
            await self.request("POST", "/staff/logout", {})
        finally:
            self.token = None

    async def call_next(self, counter: str) -> JSON | None:
        """Call the next waiting ticket; None when nobody waits (204)."""
        return await self.request("POST", f"/counters/{counter}/call-next", {})

    async def call_ticket(self, counter: str, ticket_id: str) -> JSON:
        """Call one specific waiting ticket (node addition, see docs/ui.md)."""
        return await self._must("POST", f"/counters/{counter}/tickets/{ticket_id}/call", {})

    async def ticket_action(
        self, counter: str, ticket_id: str, action: str, body: JSON | None = None
    ) -> JSON:
        """recall | start | complete | no-show | requeue | transfer."""
        return await self._must(
            "POST", f"/counters/{counter}/tickets/{ticket_id}/{action}", body or {}
        )

    async def transfer(
        self,
        counter: str,
        ticket_id: str,
        *,
        to_service: str | None = None,
        to_counter: str | None = None,
    ) -> JSON:
        if (to_service is None) == (to_counter is None):
            raise ValueError("transfer needs exactly one of to_service / to_counter")
        body = {"to_service": to_service} if to_service else {"to_counter": to_counter}
        return await self.ticket_action(counter, ticket_id, "transfer", body)

    async def set_counter_status(self, counter: str, status: str) -> JSON:
        """status: open | pause | close."""
        if status not in ("open", "pause", "close"):
            raise ValueError(f"unknown counter status action {status!r}")
        return await self._must("POST", f"/counters/{counter}/{status}", {})

    async def _must(self, method: str, path: str, body: JSON | None = None) -> JSON:
        reply = await self.request(method, path, body)
        if reply is None:
            raise NodeUnavailable(f"{method} {path}: unexpected empty reply")
        return reply

    # --- the event stream -----------------------------------------------------------------

    async def events(self) -> AsyncIterator[StreamEvent]:
        """One connection to ``GET /stream``; yields events until it drops.

        Raises NodeUnavailable when it cannot connect or the connection breaks.
        """
        async for event in self._raw_stream():
            if event is not None:
                yield event

    async def _raw_stream(self) -> AsyncIterator[StreamEvent | None]:
        """Like :meth:`events`, but first yields None once the reply headers arrived, so a
        caller can fetch ``/state`` knowing every later event is already being buffered."""
        url = f"{self.base_url}{API_PREFIX}/stream"
        headers = self._headers()
        headers["Accept"] = "text/event-stream"
        try:
            async with self._get_session().get(
                url,
                headers=headers,
                # No total timeout on a stream; heartbeats arrive every 15 s, so 45 s of
                # silence means a dead peer.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=45),
            ) as resp:
                if resp.status >= 400:
                    raise _rejection(resp.status, None, await resp.text())
                yield None
                block: list[str] = []
                async for raw in resp.content:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line:
                        block.append(line)
                        continue
                    event = parse_sse_lines(block)
                    block = []
                    if event is not None:
                        yield event
        except NodeError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise NodeUnavailable(f"stream: {err or type(err).__name__}") from err
        raise NodeUnavailable("stream: closed by the node")

    async def follow(
        self,
        *,
        on_state: StateHandler,
        on_event: EventHandler,
        on_connection: ConnectionHandler | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Keep the stream open forever: on each (re)connect fetch ``/state`` once, then
        deliver events; on loss report ``on_connection(False, reason)`` and retry with
        backoff. Handlers may be plain functions or coroutines. Runs until cancelled."""
        backoff = backoff or Backoff()
        while True:
            connected = False
            try:
                async for event in self._raw_stream():
                    if event is None:
                        # The stream is open: events from now on are buffered for us.
                        await _call_handler(on_state, await self.state())
                        connected = True
                        backoff.reset()
                        if on_connection is not None:
                            await _call_handler(on_connection, True, "")
                        continue
                    await _call_handler(on_event, event)
                reason = "stream closed"
            except NodeError as err:
                reason = str(err)
            if connected:
                logger.info("stream to %s lost: %s", self.base_url, reason)
            if on_connection is not None:
                await _call_handler(on_connection, False, reason)
            await sleep(backoff.next_delay())


def _rejection(status: int, payload: Any, text: str) -> NodeRejected:
    code, message = f"http_{status}", text[:200]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        code = str(payload["error"].get("code", code))
        message = str(payload["error"].get("message", message))
    cls = _BY_STATUS.get(status, NodeRejected)
    return cls(status, code, message)
