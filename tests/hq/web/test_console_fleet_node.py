"""Fleet health end to end: `python -m hq` with its mutual-TLS link, two devices enrolled by
code (kiosk with the fake network printer of the hardware tests, counter), real `smartq node`
processes replicating on loopback. Each node's health report reaches HQ over the mutual-TLS
link; the console's fleet page shows the kiosk's printer going from "paper low" to "out of
paper", the peers hearing each other, versions and clocks; a stopped node becomes silent."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from hardware.fake_network_printer import FakeNetworkPrinter
from linktest import ADMIN, PASSWORD, HQProcess, free_port, wait_for
from procs import NodeProcess
from test_enrollment import BRANCH, hq_admin, local_lan, make_branch_at_hq, start_enroll

pytestmark = pytest.mark.slow


def fleet_rows(hq: HQProcess) -> dict[str, list[str]]:
    """The fleet page as the bootstrap super admin sees it: {device: cells}."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{hq.url}/console/login").read()
    csrf = next(c.value for c in jar if c.name == "smartq_csrf")
    opener.open(f"{hq.url}/console/login", urllib.parse.urlencode(
        {"email": ADMIN, "password": PASSWORD, "csrf_token": csrf}).encode()).read()
    html = opener.open(f"{hq.url}/console/fleet").read().decode()
    out = {}
    for key, row in re.findall(r'<tr data-device="([^"]+)"[^>]*>(.*?)</tr>', html, re.S):
        out[key.split("/", 1)[1]] = [re.sub(r"<[^>]+>", "", c).strip()
                                     for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    out["_attention"] = re.findall(r'<li data-device="[^"]+/([^"]+)">', html)  # type: ignore[assignment]
    return out


def test_nodes_report_printer_peers_and_clock_over_the_mutual_tls_link(tmp_path: Path) -> None:
    tls_port = free_port()
    hq = HQProcess(tmp_path / "hq", extra={"link_tls_port": tls_port, "link_url": f"https://127.0.0.1:{tls_port}",
                                           "fleet_silent_after_s": 3}).start()
    printer = FakeNetworkPrinter(port=0).start()
    printer.paper = "low"
    nodes: dict[str, NodeProcess] = {}
    try:
        make_branch_at_hq(hq, tmp_path)
        configs: dict[str, Path] = {}
        for device, role, extra in (("kiosk", "kiosk", ["--numbers", "1-499"]),
                                    ("counter-1", "counter", ["--counters", "c1"])):
            data_dir, config = tmp_path / device / "data", tmp_path / device / "device.toml"
            proc, code = start_enroll(hq, data_dir, config)
            done = hq_admin(hq, "enroll", "--code", code, "--branch", BRANCH, "--role", role, "--id", device, *extra)
            assert done.returncode == 0, done.stderr
            proc.communicate(timeout=30)
            configs[device] = config
        ports = {d: free_port() for d in configs}
        for device, config in configs.items():
            local_lan(config, ports[device], {d: p for d, p in ports.items() if d != device})
            text = config.read_text().replace("[hq]\n", "[hq]\nhealth_interval_s = 0.5\n", 1)
            if device == "kiosk":
                text += f'\n[hardware.printer]\nbackend = "network"\nhost = "127.0.0.1"\nport = {printer.port}\n'
            config.write_text(text)
            assert "https://127.0.0.1" in text  # the link is the mutual-TLS listener
            nodes[device] = NodeProcess(config, log_path=tmp_path / f"{device}.log")
        for device in nodes:
            wait_for(lambda d=device: nodes[d].request("GET", "/api/v1/state")[1]["hq"]["status"] == "online", 60)
        status, ticket = nodes["kiosk"].request("POST", "/api/v1/tickets", {"service": "general"})
        assert status == 201, ticket
        wait_for(lambda: nodes["kiosk"].request("GET", "/api/v1/state")[1]["hardware"]["printer"]["state"] == "paper_low")

        def reported() -> dict[str, list[str]] | None:
            rows = fleet_rows(hq)
            k, c = rows.get("kiosk"), rows.get("counter-1")
            return rows if k and c and k[5] == "Paper low" and c[5] == "No printer" else None
        rows = wait_for(reported, 60)
        version = rows["kiosk"][6]
        assert re.match(r"^\d+\.\d+", version) and rows["counter-1"][6] == version
        assert rows["kiosk"][3].startswith("0 min") and rows["counter-1"][3].startswith("0 min")
        assert abs(float(rows["kiosk"][7].split()[0])) < 5  # one machine: the clocks agree
        assert "kiosk" in rows["_attention"] and "counter-1" not in rows["_attention"]

        def peers_heard() -> bool:
            with sqlite3.connect(hq.folder / "data" / "hq.sqlite3") as c:
                peers = {r[0]: json.loads(r[1]) for r in c.execute("SELECT device_id, peers FROM device_health")}
            return any(p["device"] == "counter-1" and p["last_seen_ms"] for p in peers["kiosk"]) and \
                any(p["device"] == "kiosk" and p["last_seen_ms"] for p in peers["counter-1"])
        # each node hears the other over the LAN and says so in its report
        wait_for(peers_heard, 60)

        printer.paper = "out"
        nodes["kiosk"].request("POST", "/api/v1/tickets", {"service": "general"})
        wait_for(lambda: fleet_rows(hq)["kiosk"][5] == "Out of paper", 60)
        nodes.pop("counter-1").stop()
        wait_for(lambda: "counter-1" in fleet_rows(hq)["_attention"], 60)
    finally:
        for node in nodes.values():
            node.stop()
        printer.stop()
        hq.stop()
