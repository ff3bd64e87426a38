"""The counter's keypad: each key press becomes a Branch command through the node's writer.

The keys and what they do are one table (KEYS); each handler answers the short line the
keypad shows ("OK A042", "EMPTY", "ERR counter not open")."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from appliance.config import Config
from appliance.devices.base import DeviceService
from appliance.errors import Conflict, DomainError, NotFound
from appliance.node import Node
from hardware.keypad import KeypadCommand, asyncio_handler, build_keypad_from_config

logger = logging.getLogger(__name__)

KEYPAD_TIMEOUT_S = 5.0
# Short keypad texts for domain error codes (a keypad shows about 32 characters).
KEYPAD_REASONS = {
    "counter_not_open": "counter not open", "not_your_ticket": "not your ticket", "superseded": "taken elsewhere",
    "unknown_service": "unknown service", "unknown_counter": "unknown counter", "wrong_pin": "wrong PIN",
    "locked_out": "locked out, wait", "session_expired": "login again", "unauthorized": "login first",
    "forbidden": "not this counter", "bad_request": "bad request",
}
KeyHandler = Callable[["KeypadService", KeypadCommand, "str | None"], Awaitable[str]]


@dataclass(frozen=True)
class Key:
    """What a key does: its handler (given the command and the staff id), and whether the
    counter needs a logged-in staff member first."""

    handler: KeyHandler
    login: bool = True
    arg: str | None = None  # the action or status the handler applies


class KeypadService(DeviceService):
    kind = "keypad"

    def __init__(self, config: Config) -> None:
        super().__init__(config, None)
        self.sessions: dict[str, tuple[str, str]] = {}  # counter -> (token, staff id)
        self.last_ticket: dict[str, str] = {}  # counter -> ticket last acted on (REQUEUE after NOSHOW)
        self._handler: Callable[[KeypadCommand], str] | None = None

    @classmethod
    def from_table(cls, config: Config, table: dict[str, Any]) -> KeypadService:
        cls.require_counters(config)
        service = cls(config)
        service.driver = build_keypad_from_config(table, service._line)
        return service

    async def start(self, node: Node) -> None:
        self._handler = asyncio_handler(asyncio.get_running_loop(), self.on_key, timeout=KEYPAD_TIMEOUT_S)
        await super().start(node)

    def view(self) -> dict[str, Any]:
        return {**self.driver.status(), "logged_in": {c: s for c, (_, s) in self.sessions.items()}}

    def _line(self, cmd: KeypadCommand) -> str:
        """Keypad thread: run the command on the node's loop, wait for its reply."""
        handler = self._handler
        return handler(cmd) if handler is not None else "ERR not ready"

    async def on_key(self, cmd: KeypadCommand) -> str:
        try:
            if cmd.counter not in self.config.device_counters:
                return "ERR not this counter"
            key = KEYS.get(cmd.key)
            if key is None:
                return "ERR unknown key"
            staff = self._staff(cmd.counter) if key.login else None
            return await key.handler(self, cmd, staff)
        except DomainError as err:
            return "ERR " + KEYPAD_REASONS.get(err.code, err.message.split(";")[0])
        except Exception:
            logger.exception("keypad command %s failed", cmd)
            return "ERR internal error"

    # -- the keys ---------------------------------------------------------------------------
    async def login(self, cmd: KeypadCommand, staff: str | None) -> str:
        node = self._node()
        assert cmd.arg is not None
        session = await asyncio.to_thread(node.staff.login, cmd.counter, cmd.arg)
        self._drop_session(cmd.counter)
        self.sessions[cmd.counter] = (session.token, session.staff_id)
        logger.info("keypad: %s logged in at %s", session.staff_id, cmd.counter)
        return f"OK {session.staff_name}"

    async def logout(self, cmd: KeypadCommand, staff: str | None) -> str:
        self._drop_session(cmd.counter)
        return "OK"

    async def call_next(self, cmd: KeypadCommand, staff: str | None) -> str:
        node, counter = self._node(), cmd.counter
        ticket = await node.write(lambda conn: node.branch.call_next(conn, counter))
        if ticket is None:
            return "EMPTY"
        self.last_ticket[counter] = ticket["id"]
        return f"OK {ticket['label']}"

    async def set_status(self, cmd: KeypadCommand, staff: str | None) -> str:
        node, counter, status = self._node(), cmd.counter, KEYS[cmd.key].arg
        assert status is not None
        await node.write(lambda conn: node.branch.set_counter(conn, counter, status, staff))
        return "OK"

    async def act(self, cmd: KeypadCommand, staff: str | None) -> str:
        node, counter, action = self._node(), cmd.counter, KEYS[cmd.key].arg
        assert action is not None
        last = self.last_ticket.get(counter)

        def act(conn: sqlite3.Connection) -> dict[str, Any]:
            current = node.branch.counter(conn, counter)["current"]
            ticket_id = current["id"] if current is not None else None
            if ticket_id is None and action == "requeue" and last is not None:
                ticket_id = last  # REQUEUE right after NOSHOW: the citizen turned up late
            if ticket_id is None:
                raise Conflict("no current ticket", code="no_current_ticket")
            body = {"to_service": self._service_of(conn, cmd.arg or "")} if action == "transfer" else {}
            return node.branch.act(conn, counter, ticket_id, action, body)

        ticket = await node.write(act)
        self.last_ticket[counter] = ticket["id"]
        return f"OK {ticket['label']}"

    # -- helpers ----------------------------------------------------------------------------
    def _node(self) -> Node:
        assert self.node is not None
        return self.node

    def _drop_session(self, counter: str) -> None:
        old = self.sessions.pop(counter, None)
        if old is not None:
            self._node().staff.logout(old[0])

    def _staff(self, counter: str) -> str | None:
        """The staff id acting at `counter`; DomainError when a login is required and missing."""
        node = self._node()
        held = self.sessions.get(counter)
        if held is None:
            if node.staff.required:
                raise DomainError("login first", code="unauthorized")
            return None
        try:
            node.staff.check(held[0], counter)
        except DomainError:
            self.sessions.pop(counter, None)
            raise
        return held[1]

    def _service_of(self, conn: sqlite3.Connection, arg: str) -> str:
        """A service id, or a service letter (a keypad may only have letters: TRANSFER B)."""
        model = self._node().branch.model(conn)
        if arg in model.services:
            return arg
        for service in model.services.values():
            if service.letter == arg.upper():
                return service.id
        raise NotFound(f"unknown service {arg!r}", code="unknown_service")


# The keypad's keys (hardware.keypad.KEYS validates their arguments).
KEYS: dict[str, Key] = {
    "LOGIN": Key(KeypadService.login, login=False),
    "LOGOUT": Key(KeypadService.logout, login=False),
    "NEXT": Key(KeypadService.call_next),
    "OPEN": Key(KeypadService.set_status, arg="open"),
    "PAUSE": Key(KeypadService.set_status, arg="pause"),
    "CLOSE": Key(KeypadService.set_status, arg="close"),
    "RECALL": Key(KeypadService.act, arg="recall"),
    "START": Key(KeypadService.act, arg="start"),
    "DONE": Key(KeypadService.act, arg="complete"),
    "NOSHOW": Key(KeypadService.act, arg="no-show"),
    "REQUEUE": Key(KeypadService.act, arg="requeue"),
    "TRANSFER": Key(KeypadService.act, arg="transfer"),
}
