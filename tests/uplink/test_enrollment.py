"""Enrollment by one-time code, end to end with real processes on 127.0.0.1: `python -m hq` with
its mutual-TLS link listener, fresh devices running `smartq enroll` (no key copied by hand), the
admin's `smartq-hq enroll --code`, then `smartq node` with what HQ sent: the nodes replicate
over mutual TLS with the org CA's certificates and sync with HQ over the mutual-TLS link.
Then a revocation at HQ reaches the other node, which refuses the revoked device.
The offline path (request and bundle files) is checked too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from procs import NodeProcess

from appliance.config import load_config
from appliance.sample import write_sample
from hq.enroll import register_branch
from linktest import ORG, FAST, HQProcess, admin_token, free_port, midday_timezone, wait_for

pytestmark = pytest.mark.slow
BRANCH = "b-enroll"


def smartq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def hq_admin(hq: HQProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hq", "--config", str(hq.folder / "hq.toml"), *args],
                          capture_output=True, text=True, timeout=60)


def make_branch_at_hq(hq: HQProcess, tmp: Path) -> None:
    """An org and an empty branch (services, counters, hours; no devices yet) at HQ."""
    write_sample(tmp / "template", branch_id=BRANCH, timezone=midday_timezone(), port_base=0)
    config = dataclasses.replace(load_config(tmp / "template" / "kiosk.toml"), roster=())

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            token = await admin_token(session, hq.url)
            async with session.post(f"{hq.url}/api/v1/orgs", json={"id": ORG, "name": "Demo"},
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 201, await r.text()
            await register_branch(session, hq.url, token, ORG, config, hours=("00:00", "23:45"), weekdays=range(7))
    asyncio.run(run())


def start_enroll(hq: HQProcess, data_dir: Path, config_out: Path) -> tuple[subprocess.Popen[str], str]:
    """A fresh device at first start: registers a code at HQ and shows it; returns (process, code)."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "enroll", "--hq", hq.url, "--data-dir",
                             str(data_dir), "--config-out", str(config_out), "--poll-s", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.match(r"SMARTQ_ENROLL_CODE ([0-9A-Z]{4}-[0-9A-Z]{4})$", line.strip())
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match[1]


def local_lan(config: Path, port: int, peers: dict[str, int]) -> None:
    """The enrolled config, with [lan] on loopback (one machine) and a fast [hq] link."""
    text = config.read_text()
    static = ", ".join(f'"{d}@127.0.0.1:{p}"' for d, p in peers.items())
    text = text.replace('[lan]\nlisten = "0.0.0.0:8441"\nmdns = true',
                        f'[lan]\nlisten = "127.0.0.1:{port}"\nmdns = false\nstatic_peers = [{static}]')
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items())
    text = text.replace("[hq]\n", "[hq]\n" + extra, 1)
    config.write_text(text)


def test_fresh_devices_enroll_by_code_and_replicate_over_mutual_tls_then_one_is_revoked(tmp_path: Path) -> None:
    tls_port = free_port()
    hq = HQProcess(tmp_path / "hq", extra={"link_tls_port": tls_port, "link_url": f"https://127.0.0.1:{tls_port}",
                                           "cert_days": 1}).start()
    nodes: list[NodeProcess] = []
    enrolling: list[subprocess.Popen[str]] = []
    try:
        make_branch_at_hq(hq, tmp_path)
        devices = {"kiosk": ("kiosk", ["--numbers", "1-499"]), "counter-1": ("counter", ["--counters", "c1"])}
        configs: dict[str, Path] = {}
        for device, (role, extra) in devices.items():
            data_dir, config = tmp_path / device / "data", tmp_path / device / "device.toml"
            assert not data_dir.exists()  # a fresh device: no key, no certificate, no config
            proc, code = start_enroll(hq, data_dir, config)
            enrolling.append(proc)
            shown = json.loads((data_dir / "enroll-code.json").read_text())
            assert shown == {"code": code, "qr": f"smartq-enroll:{code}"}  # what its screen shows
            # A wrong code changes nothing; the admin enters the one on the screen.
            assert hq_admin(hq, "enroll", "--code", "ZZZZ-ZZZZ", "--branch", BRANCH, "--role", role,
                            "--id", device).returncode == 1
            done = hq_admin(hq, "enroll", "--code", code.lower().replace("-", ""), "--branch", BRANCH, "--role",
                            role, "--id", device, *extra)
            assert done.returncode == 0, done.stderr
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert f"SMARTQ_ENROLLED {device}" in out
            assert (data_dir / "device.crt").exists() and not (data_dir / "enroll-code.json").exists()
            configs[device] = config
        # The same code cannot be used twice.
        assert hq_admin(hq, "enroll", "--code", code, "--branch", BRANCH, "--role", "display",
                        "--id", "display").returncode == 1

        ports = {d: free_port() for d in configs}
        for device, config in configs.items():
            local_lan(config, ports[device], {d: p for d, p in ports.items() if d != device})
            nodes.append(NodeProcess(config, log_path=tmp_path / f"{device}.log"))
        kiosk, counter = nodes

        status, ticket = kiosk.request("POST", "/api/v1/tickets", {"service": "general"})
        assert status == 201, ticket

        def seen_at_counter() -> bool:
            status, state = counter.request("GET", "/api/v1/state")
            return status == 200 and any(s["waiting"] for s in state["services"])
        wait_for(seen_at_counter, 30)  # replicated over mutual TLS with the org CA's certificates

        def hq_has(origin: str) -> int:
            with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
                return c.execute("SELECT count(*) FROM events WHERE origin = ?", (origin,)).fetchone()[0]
        wait_for(lambda: hq_has("kiosk") > 0, 30)  # and reached HQ over the mutual-TLS link

        # Staff PIN hashes travel sealed to the branch's counter key: the kiosk holds only
        # ciphertext, the counter (whose bundle brought the key) can read them.
        async def put_staff() -> None:
            async with aiohttp.ClientSession() as session:
                token = await admin_token(session, hq.url)
                async with session.put(f"{hq.url}/api/v1/branches/{BRANCH}/staff/amina", json={
                        "name": "Amina Uwase", "pin": "4821"}, headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200, await r.text()
        asyncio.run(put_staff())

        def staff_at(device: str) -> dict | None:
            with sqlite3.connect(f"file:{tmp_path / device / 'data' / 'smartq.db'}?mode=ro", uri=True) as c:
                row = c.execute("SELECT payload FROM events WHERE type = 'config.staff' ORDER BY hlc DESC").fetchone()
            return json.loads(row[0]) if row else None
        sealed = wait_for(lambda: staff_at("kiosk"), 30)
        assert set(sealed) == {"sealed"} and "argon2" not in json.dumps(sealed) and "Amina" not in json.dumps(sealed)
        from appliance.enroll import open_staff
        assert open_staff(tmp_path / "kiosk" / "data", sealed) is None
        with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
            bundles = dict(c.execute("SELECT device_id, bundle FROM enrollments"))
        assert "counter_key_sealed" in bundles["counter-1"] and "PRIVATE KEY" not in bundles["counter-1"]
        assert "counter_key" not in bundles["kiosk"]  # the counter key goes to counters only, sealed
        staff = open_staff(tmp_path / "counter-1" / "data", wait_for(lambda: staff_at("counter-1"), 30))
        assert staff is not None and staff[0]["name"] == "Amina Uwase" and staff[0]["pin_hash"].startswith("$argon2id$")

        def logged_in() -> dict | None:  # the enrolled counter takes HQ's staff: Amina's PIN works
            status, body = counter.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "4821"})
            return body if status == 200 else None
        assert wait_for(logged_in, 30)["staff"] == {"id": "amina", "name": "Amina Uwase"}
        status, _ = kiosk.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "4821"})
        assert status == 401  # the kiosk cannot read the sealed list, so it knows no such PIN
        for node in nodes:
            status, state = node.request("GET", "/api/v1/state")
            assert state["hq"]["status"] == "online" and state["hq"]["url"].startswith("https://"), state["hq"]
            assert {p["status"] for p in state["peers"]} == {"ok"}, state["peers"]

        # Revocation: counter-1's certificate and its later events.
        revoked = hq_admin(hq, "revoke", "--branch", BRANCH, "--id", "counter-1")
        assert revoked.returncode == 0, revoked.stderr

        def kiosk_refuses() -> bool:
            log = (tmp_path / "kiosk.log").read_text()
            return "device counter-1 is revoked" in log
        wait_for(kiosk_refuses, 30)

        def counter_cut_off() -> bool:
            status, state = counter.request("GET", "/api/v1/state")
            peers = {p["id"]: p["status"] for p in state["peers"]}
            return peers.get("kiosk") == "unreachable" and state["hq"]["status"] == "offline"
        wait_for(counter_cut_off, 30)
        # What it did before stays: its events up to the revocation are still at HQ.
        with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
            assert c.execute("SELECT count(*) FROM events WHERE origin = 'counter-1'").fetchone()[0] > 0
    finally:
        for proc in enrolling:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for node in nodes:
            node.stop()
        hq.stop()


def test_offline_enrollment_with_request_and_bundle_files(tmp_path: Path) -> None:
    hq = HQProcess(tmp_path / "hq").start()
    try:
        make_branch_at_hq(hq, tmp_path)
        hq.stop()  # the branch has no WAN: everything travels on a USB stick
        data_dir, stick = tmp_path / "display" / "data", tmp_path / "usb"
        stick.mkdir()
        from hardware.fake_network_printer import FakeNetworkPrinter
        with FakeNetworkPrinter(port=0) as printer:  # a kiosk prints its code too
            (tmp_path / "printer.toml").write_text(
                f'[hardware.printer]\nbackend = "network"\nhost = "127.0.0.1"\nport = {printer.port}\n')
            made = smartq("enroll", "--data-dir", str(data_dir), "--request-out", str(stick / "request.json"),
                          "--printer", str(tmp_path / "printer.toml"))
            assert made.returncode == 0, made.stderr
            code = re.search(r"SMARTQ_ENROLL_CODE (\S+)", made.stdout)[1]
            assert printer.wait_for(lambda data: code.encode() in data and b"smartq-enroll:" in data)
        # A stick swapped on the way: the code on the screen does not match the request.
        wrong = hq_admin(hq, "enroll", "--request", str(stick / "request.json"), "--code", "ZZZZ-ZZZZ",
                         "--out", str(stick / "bundle.json"), "--branch", BRANCH, "--role", "display", "--id", "display")
        assert wrong.returncode == 1 and not (stick / "bundle.json").exists()
        signed = hq_admin(hq, "enroll", "--request", str(stick / "request.json"), "--code", code,
                          "--out", str(stick / "bundle.json"), "--branch", BRANCH, "--role", "display", "--id", "display")
        assert signed.returncode == 0, signed.stderr
        # A tampered bundle is refused; the genuine one installs.
        bundle = json.loads((stick / "bundle.json").read_text())
        (stick / "tampered.json").write_text(json.dumps({**bundle, "role": "kiosk"}))
        config = tmp_path / "display" / "device.toml"
        bad = smartq("enroll", "--data-dir", str(data_dir), "--bundle", str(stick / "tampered.json"),
                     "--config-out", str(config))
        assert bad.returncode == 1 and "signature" in bad.stderr and not config.exists()
        good = smartq("enroll", "--data-dir", str(data_dir), "--bundle", str(stick / "bundle.json"),
                      "--config-out", str(config))
        assert good.returncode == 0, good.stderr
        loaded = load_config(config)
        assert (loaded.device_id, loaded.role, loaded.branch_id) == ("display", "display", BRANCH)
        assert [r.id for r in loaded.roster] == ["display"]
    finally:
        hq.stop()


def test_a_short_lived_certificate_is_renewed_over_the_link_and_used_at_once(tmp_path: Path) -> None:
    """Certificates of 3 minutes (cert_days = 0.002): past half their life at once, so the node
    renews over the mutual-TLS link; the new certificate is used for the next connections."""
    from cryptography import x509
    tls_port = free_port()
    hq = HQProcess(tmp_path / "hq", extra={"link_tls_port": tls_port, "link_url": f"https://127.0.0.1:{tls_port}",
                                           "cert_days": 0.002}).start()
    node = None
    try:
        make_branch_at_hq(hq, tmp_path)
        data_dir, config = tmp_path / "kiosk" / "data", tmp_path / "kiosk" / "device.toml"
        proc, code = start_enroll(hq, data_dir, config)
        assert hq_admin(hq, "enroll", "--code", code, "--branch", BRANCH, "--role", "kiosk", "--id", "kiosk",
                        "--numbers", "1-499").returncode == 0
        assert proc.wait(30) == 0
        first = x509.load_pem_x509_certificate((data_dir / "device.crt").read_bytes()).serial_number
        local_lan(config, free_port(), {})
        node = NodeProcess(config, log_path=tmp_path / "kiosk.log")

        def serial() -> int:
            return x509.load_pem_x509_certificate((data_dir / "device.crt").read_bytes()).serial_number
        wait_for(lambda: serial() != first, 30)
        second = serial()
        wait_for(lambda: serial() != second, 30)  # and again, over a connection made with the renewed one
        status, state = node.request("GET", "/api/v1/state")
        assert state["hq"]["status"] == "online", state["hq"]
        with sqlite3.connect(f"file:{hq.folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True) as c:
            issued = c.execute("SELECT count(*) FROM certificates WHERE device_id = 'kiosk'").fetchone()[0]
        assert issued >= 3
    finally:
        if node is not None:
            node.stop()
        hq.stop()
