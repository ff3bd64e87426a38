"""A real kiosk node printing to a network printer on 127.0.0.1:9100 (a TCP listener the test runs).

Proves: issued tickets arrive as ESC/POS bytes (label, service name in the ticket's language,
QR payload); a refusing or jammed printer never blocks issuing and shows in
GET /api/v1/state -> hardware.printer; reprint works once the printer is back.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from appliance.sample import write_sample
from hardware.fake_network_printer import FakeNetworkPrinter

from .test_node_config import free_port, hardware, sample_device, start_node, wait_for

logger = logging.getLogger(__name__)
pytestmark = pytest.mark.slow

CUT = b"\x1dV"


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample")
    write_sample(path)
    return path


def kiosk_config(sample_dir: Path, tmp_path: Path, port: int) -> Path:
    shutil.copytree(sample_dir, tmp_path / "branch")
    return sample_device(tmp_path / "branch", "kiosk", f"""
[hardware.printer]
backend = "network"
host = "127.0.0.1"
port = {port}
connect_timeout = 1.0
write_timeout = 1.0
status_timeout = 0.5
poll_interval = 0
footer = {{ en = "Thank you", fr = "Merci de votre patience" }}

[hq]
public_url = "https://q.example.org/"
""")


def test_issued_ticket_arrives_at_the_network_printer(sample_dir: Path, tmp_path: Path) -> None:
    with FakeNetworkPrinter(port=9100) as printer:
        if printer.used_fallback:
            logger.warning("127.0.0.1:9100 busy; printer on %d", printer.port)
        node = start_node(kiosk_config(sample_dir, tmp_path, printer.port), tmp_path, "kiosk")
        try:
            status, ticket = node.request("POST", "/api/v1/tickets", {"service": "general", "language": "fr"})
            assert status == 201, ticket
            assert ticket["print"]["status"] == "queued" and ticket["print"]["job"]
            # the QR is the ticket's unguessable status page, not a template of its id
            assert ticket["status_url"].startswith("https://q.example.org/t/")
            assert ticket["id"] not in ticket["status_url"] and len(ticket["status_url"].rsplit("/", 1)[1]) == 22
            qr = ticket["status_url"].encode()
            assert printer.wait_for(lambda data: ticket["label"].encode() in data and CUT in data)
            data = printer.received
            assert qr in data
            # the service in the ticket's language, in code page 858 (é = 0x82)
            assert "Renseignements généraux".encode("cp858") in data
            assert "Votre numéro".encode("cp858") in data and b"Merci de votre patience" in data
            assert b"Kigali Main Office" in data
            # jobs_ok counts in the spooler's thread; last_job is set when the result reaches the loop
            printer_view = wait_for(lambda: (v := hardware(node)["printer"])["jobs_ok"] == 1 and v["last_job"] and v,
                                    what="job ok")
            assert printer_view["status"] == "ok" and printer_view["state"] == "ok"
            assert printer_view["last_job"]["ticket"] == ticket["id"] and printer_view["last_job"]["ok"]
            assert printer_view["last_failed_job"] is None
            assert printer_view["target"] == f"127.0.0.1:{printer.port}"
        finally:
            node.stop()


def test_refusing_printer_never_blocks_issue_and_reprint_works_once_it_is_back(sample_dir: Path,
                                                                               tmp_path: Path) -> None:
    port = free_port(9100)  # nothing listens: connections are refused
    node = start_node(kiosk_config(sample_dir, tmp_path, port), tmp_path, "kiosk")
    try:
        status, ticket = node.request("POST", "/api/v1/tickets", {"service": "payments"})
        assert status == 201, ticket
        assert ticket["print"]["status"] in ("queued", "failed")
        assert node.request("GET", f"/api/v1/tickets/{ticket['id']}")[0] == 200
        view = wait_for(lambda: (v := hardware(node)["printer"])["last_failed_job"] and v, what="failed job")
        assert view["status"] == "offline" and view["state"] == "offline"
        assert view["last_failed_job"]["ticket"] == ticket["id"]
        # known offline: the next ticket is still issued, and told at once that it will not print
        status, second = node.request("POST", "/api/v1/tickets", {"service": "payments"})
        assert status == 201 and second["print"]["status"] == "failed" and "offline" in second["print"]["message"]

        with FakeNetworkPrinter(port=port, fallback_to_ephemeral=False) as printer:
            status, reply = node.request("POST", f"/api/v1/tickets/{ticket['id']}/reprint")
            assert status == 202 and reply["print"]["status"] == "queued"
            assert printer.wait_for(lambda d: ticket["label"].encode() in d and b"COPY" in d and CUT in d)
            # the node notices the printer is back by itself; new tickets print again
            wait_for(lambda: hardware(node)["printer"]["status"] == "ok", what="printer ok")
            status, third = node.request("POST", "/api/v1/tickets", {"service": "payments"})
            assert status == 201 and third["print"]["status"] == "queued"
            assert printer.wait_for(lambda d: third["label"].encode() in d)
    finally:
        node.stop()


def test_printer_hanging_mid_ticket_never_blocks_issue_and_shows_the_fault(sample_dir: Path,
                                                                          tmp_path: Path) -> None:
    port = free_port(9100)
    jammed = FakeNetworkPrinter(port=port, fallback_to_ephemeral=False, hang_after=60).start()
    node = None
    try:
        node = start_node(kiosk_config(sample_dir, tmp_path, port), tmp_path, "kiosk")
        status, ticket = node.request("POST", "/api/v1/tickets", {"service": "general"})
        assert status == 201, ticket
        assert node.request("GET", f"/api/v1/tickets/{ticket['id']}")[0] == 200
        # while the printer hangs, issuing still answers
        status, other = node.request("POST", "/api/v1/tickets", {"service": "documents"})
        assert status == 201 and other["print"]["status"] in ("queued", "failed")
        view = wait_for(lambda: (v := hardware(node)["printer"])["last_failed_job"] and v, what="failed job")
        assert view["jobs_failed"] >= 1
        assert view["last_failed_job"]["error"]
        failed_ids = {view["last_failed_job"]["ticket"]}
        assert failed_ids & {ticket["id"], other["id"]}
        jammed.stop()

        with FakeNetworkPrinter(port=port, fallback_to_ephemeral=False) as printer:
            status, reply = node.request("POST", f"/api/v1/tickets/{ticket['id']}/reprint")
            assert status == 202 and reply["print"]["status"] == "queued"
            assert printer.wait_for(lambda d: ticket["label"].encode() in d and b"COPY" in d and CUT in d)
            wait_for(lambda: hardware(node)["printer"]["last_job"]["ok"], what="reprint ok")
    finally:
        if node is not None:
            node.stop()
        jammed.stop()
