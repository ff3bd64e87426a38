"""The node's hardware: the `[hardware]` section wires hardware/ drivers to the queue.

One small service per device kind, each with the validation of its own sub-table beside it:

- `printer` (a kiosk, appliance.devices.printer): every issued ticket becomes a print job;
- `keypad` (a counter, appliance.devices.keypad): keypad lines become Branch commands;
- `led` (a counter, appliance.devices.led): the sign shows each counter's current ticket;
- `announcer` (a display, appliance.devices.announcer): every call and recall is announced.

`HardwareService` is the node service named "hardware" that starts and stops them together
and puts their views side by side in GET /api/v1/state -> hardware. Every driver does its
blocking I/O on its own thread (docs/hardware.md, "Wiring in the node").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from appliance.config import Config, ConfigError
from appliance.devices.announcer import AnnouncerService, counter_number
from appliance.devices.base import DeviceService
from appliance.devices.keypad import KeypadService
from appliance.devices.led import LedSignService
from appliance.devices.printer import PrinterService
from appliance.node import Node
from hardware.errors import HardwareConfigError, HardwareError

__all__ = ["HardwareService", "counter_number", "from_config"]

# section name -> the service of that device kind, in start order (stop is the reverse)
KINDS: dict[str, type[DeviceService]] = {
    "printer": PrinterService, "led": LedSignService, "announcer": AnnouncerService, "keypad": KeypadService,
}
SECTIONS = ("printer", "keypad", "led", "announcer")


class HardwareService:
    """The `hardware` NodeService: the device services this config names."""

    name = "hardware"

    def __init__(self, config: Config, **tables: dict[str, Any]) -> None:
        """`tables`: each device's `[hardware.X]` table. Raises ConfigError."""
        self.config = config
        self.parts: dict[str, DeviceService] = {}
        for kind, cls in KINDS.items():
            if kind in tables:
                try:
                    self.parts[kind] = cls.from_table(config, tables[kind])
                except (HardwareConfigError, HardwareError) as err:
                    raise ConfigError(str(err)) from err

    # the drivers, for tests and tools
    @property
    def printer(self) -> PrinterService | None:
        return self.parts.get("printer")  # type: ignore[return-value]

    @property
    def announcer_service(self) -> AnnouncerService | None:
        return self.parts.get("announcer")  # type: ignore[return-value]

    @property
    def spooler(self) -> Any:
        return self.printer.spooler if self.printer is not None else None

    @property
    def keypad(self) -> Any:
        part = self.parts.get("keypad")
        return part.driver if part is not None else None

    @property
    def sign(self) -> Any:
        part = self.parts.get("led")
        return part.driver if part is not None else None

    @property
    def announcer(self) -> Any:
        part = self.announcer_service
        return part.driver if part is not None else None

    @property
    def announced(self) -> Any:
        part = self.announcer_service
        return part.announced if part is not None else None

    async def start(self, node: Node) -> None:
        started: list[DeviceService] = []
        try:
            for part in self.parts.values():
                await part.start(node)
                started.append(part)
        except BaseException:
            for part in reversed(started):
                await part.stop()
            raise

    async def stop(self) -> None:
        # in parallel: the printer's stop waits for the job in progress (seconds when jammed)
        await asyncio.gather(*(part.stop() for part in reversed(self.parts.values())))

    def view(self) -> dict[str, Any]:
        return {kind: (self.parts[kind].view() if kind in self.parts else None) for kind in SECTIONS}

    async def on_ticket_issued(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Queue the ticket's printout (node.after_issue); see PrinterService.on_ticket_issued."""
        if self.printer is None:
            return {"status": "no_printer"}
        return await self.printer.on_ticket_issued(ticket)

    async def reprint(self, ticket: dict[str, Any]) -> dict[str, Any]:
        if self.printer is None:
            return {"status": "no_printer"}
        return await self.printer.reprint(ticket)


def from_config(config: Config) -> HardwareService | None:
    """The hardware service for `[hardware]`, or None when it names no device."""
    raw = config.raw.get("hardware")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("hardware: expected a table")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"hardware: unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
    tables: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        if name in raw:
            value = raw[name]
            if not isinstance(value, Mapping):
                raise ConfigError(f"hardware.{name}: expected a table")
            tables[name] = dict(value)
    if not tables:
        return None
    return HardwareService(config, **tables)
