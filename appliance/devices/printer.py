"""The kiosk's ticket printer: every issued ticket becomes a `TicketPrint` on the spooler's
queue; the reply says "queued" or "failed", never waits for paper; job outcomes show in
GET /api/v1/state -> hardware.printer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from appliance.config import Config, ConfigError
from appliance.devices.base import DeviceService
from appliance.node import Node
from hardware.errors import PrinterError
from hardware.printer import PrintSpooler, build_printer_from_config
from hardware.ticket_layout import TicketPrint

logger = logging.getLogger(__name__)

# Printer states in which a new ticket is refused at once (the kiosk shows it on screen).
PRINTER_FAULTS = ("offline", "error", "paper_out", "cover_open")
RECHECK_S = 2.0  # while the printer is faulty, ask it for its status this often


def refuse_status_url(table: dict[str, Any]) -> None:
    if "status_url" in table:
        # A template of the ticket id let anyone guess other tickets' pages; the QR is now
        # the ticket's own unguessable status_url.
        raise ConfigError("hardware.printer.status_url is no longer used: the printed QR is the ticket's "
                          "status_url; set [hq] public_url = \"https://hq.example.org\" instead "
                          "(docs/configuration.md)")


def parse_footer(value: Any) -> dict[str, str]:
    """`footer`: one text, or a table of language = text."""
    if isinstance(value, str):
        value = {"": value}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError("hardware.printer.footer: expected a string or a table of language = text")
    return dict(value)


class PrinterService(DeviceService):
    kind = "printer"

    def __init__(self, config: Config, table: dict[str, Any]) -> None:
        table = dict(table)
        refuse_status_url(table)
        self.footer = parse_footer(table.pop("footer", ""))
        self._loop: asyncio.AbstractEventLoop | None = None
        self.spooler: PrintSpooler = build_printer_from_config(table, on_result=self._on_print_result)
        super().__init__(config, self.spooler)
        self._jobs: dict[str, dict[str, Any]] = {}  # job id -> {ticket, label, copy}
        self.last_job: dict[str, Any] | None = None
        self.last_failed_job: dict[str, Any] | None = None

    @classmethod
    def from_table(cls, config: Config, table: dict[str, Any]) -> PrinterService:
        return cls(config, table)

    async def start(self, node: Node) -> None:
        self._loop = asyncio.get_running_loop()
        await super().start(node)

    async def started(self, node: Node) -> None:
        if self.spooler.config.status_query:
            self.spawn(self._recheck(), "printer recheck")

    def view(self) -> dict[str, Any]:
        status = self.spooler.status()
        # `status` is the one word a kiosk needs: "ok" while tickets come out, else the fault
        status["status"] = "ok" if status["state"] in ("ok", "paper_low", "unknown") else status["state"]
        status["last_job"] = self.last_job
        status["last_failed_job"] = self.last_failed_job
        return status

    async def on_ticket_issued(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Queue the ticket's printout; {"status": "queued", "job"} or {"status": "failed", "message"}."""
        status = self.spooler.status()
        if self.spooler.config.status_query and status["state"] in PRINTER_FAULTS:
            # Known faulty: refuse now so the kiosk shows the number on screen, instead of a
            # ticket coming out later for nobody. The recheck task notices the printer's return.
            self.spooler.check_now()
            message = f"printer {status['state'].replace('_', ' ')}: {status['message']}"
            self._remember_failure(None, ticket, False, message)
            return {"status": "failed", "message": message}
        return await self._submit(ticket, copy=False)

    async def reprint(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Print a ticket again marked COPY; always tried (staff ask when the printer is back)."""
        return await self._submit(ticket, copy=True)

    async def _submit(self, ticket: dict[str, Any], *, copy: bool) -> dict[str, Any]:
        try:
            printout = await self._ticket_print(ticket)
        except Exception as err:  # a printout must never fail the issue itself
            logger.exception("ticket %s: could not build its printout", ticket.get("label"))
            return {"status": "failed", "message": f"could not lay out the ticket: {err}"}
        try:
            job = self.spooler.reprint(printout) if copy else self.spooler.submit(printout)
        except PrinterError as err:
            self._remember_failure(None, ticket, copy, str(err))
            return {"status": "failed", "message": str(err)}
        self._jobs[job] = {"ticket": ticket["id"], "label": ticket["label"], "copy": copy}
        while len(self._jobs) > 200:
            self._jobs.pop(next(iter(self._jobs)))
        return {"status": "queued", "job": job}

    async def _ticket_print(self, ticket: dict[str, Any]) -> TicketPrint:
        node = self.node
        assert node is not None
        model = await node.read(node.branch.model)
        language = ticket.get("language") or model.languages[0]
        service = model.services.get(ticket["service"])
        service_name = service.name(language) if service is not None else ticket["service"]
        issued = datetime.fromisoformat(ticket["issued_at"]) if ticket.get("issued_at") else datetime.now(model.tz)
        # The live status page ([hq] public_url); without it, a checked-in booking's code.
        qr: str | None = ticket.get("status_url") or ticket.get("booking_code")
        footer = self.footer.get(language, self.footer.get("", ""))
        return TicketPrint(branch_name=model.name, label=ticket["label"], service_name=service_name,
                           issued_at=issued, people_ahead=ticket.get("people_ahead"),
                           estimated_wait_s=ticket.get("estimated_wait_s"),
                           estimated_wait_range_s=ticket.get("estimated_wait_range_s"), qr_payload=qr, language=language,
                           footer=footer, ticket_id=ticket["id"])

    def _on_print_result(self, job_id: str, ok: bool, error: str | None) -> None:
        """Spooler thread: hop to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._print_result, job_id, ok, error)

    def _print_result(self, job_id: str, ok: bool, error: str | None) -> None:
        info = self._jobs.pop(job_id, {"ticket": None, "label": None, "copy": False})
        self.last_job = {"job": job_id, **info, "ok": ok, "error": error, "at": self.now_iso()}
        if not ok:
            self.last_failed_job = dict(self.last_job)

    def _remember_failure(self, job_id: str | None, ticket: dict[str, Any], copy: bool, error: str) -> None:
        self.last_job = {"job": job_id, "ticket": ticket["id"], "label": ticket["label"], "copy": copy, "ok": False,
                         "error": error, "at": self.now_iso()}
        self.last_failed_job = dict(self.last_job)

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_S)
            status = self.spooler.status()
            if status["state"] in PRINTER_FAULTS and not status["printing"] and not status["queue_depth"]:
                self.spooler.check_now()
