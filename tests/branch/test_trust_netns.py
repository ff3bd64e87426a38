"""Trust with real nodes and a real HQ, each in its own network namespace on one bridge.

Six fresh devices (no key, no config) run `smartq enroll` against HQ; the admin enters each code
with `smartq-hq enroll`; the nodes start on what HQ sent them, find each other by mDNS and
replicate over mutual TLS, and sync with HQ over its mutual-TLS link. Meanwhile tcpdump on the
bridge records everything: a busy stretch with phone numbers on tickets and staff PIN hashes in
HQ's config, and no phone number, PIN hash or event appears in the capture. Then HQ revokes one
device: the revocation reaches the five others (measured), they refuse the revoked device's TLS
handshakes (it sees nothing) and its later events, and what it did before stays.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from .netns import Host, Network
from .nodes import http_json, spawn_node
from .replicated import API, drive, drive_bg, finish, state, wait_converged

pytestmark = [pytest.mark.netns, pytest.mark.slow]
BRANCH = "b-trust"
ORG = "acme"
ADMIN, PASSWORD = "root@hq.test", "correct horse battery"
PHONE = "+250788123456"
PINS = ("4821", "7390")
DEVICES = {  # device: (role, enroll options)
    "kiosk": ("kiosk", ["--numbers", "1-499"]),
    "display": ("display", []),
    "counter-1": ("counter", ["--counters", "c1"]),
    "counter-2": ("counter", ["--counters", "c2"]),
    "counter-3": ("counter", ["--counters", "c3"]),
    "kiosk-2": ("kiosk", ["--numbers", "500-599"]),  # the one that gets revoked
}
FAST_LINK = 'interval_s = 1.0\nmin_gap_s = 0.05\nbackoff_min_s = 0.3\nbackoff_max_s = 1.0\ntimeout_s = 5.0\n'

SETUP = r"""
import asyncio, json, sys, aiohttp
sys.path.insert(0, sys.argv[4])
from appliance.config import load_config
from hq.enroll import register_branch
import dataclasses
url, org, template, _, pin = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
async def main():
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/v1/auth/tokens", json={"email": "%s", "password": "%s"}) as r:
            token = (await r.json())["token"]
        auth = {"Authorization": "Bearer " + token}
        async with s.post(url + "/api/v1/orgs", json={"id": org, "name": "Acme"}, headers=auth) as r:
            assert r.status in (201, 409), await r.text()
        config = dataclasses.replace(load_config(template), roster=())
        async with s.get(url + "/api/v1/branches/" + config.branch_id, headers=auth) as r:
            if r.status == 404:
                await register_branch(s, url, token, org, config, hours=("00:00", "23:45"), weekdays=range(7))
        for sid, name in (("amina", "Amina Uwase"), ("jean", "Jean Habimana")):
            async with s.put(url + "/api/v1/branches/" + config.branch_id + "/staff/" + sid,
                             json={"name": name, "pin": pin}, headers=auth) as r:
                assert r.status == 200, await r.text()
asyncio.run(main())
print("ok")
""" % (ADMIN, PASSWORD)

TLS_HELLO = r"""
import json, ssl, sys, urllib.request
url, data = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(data + "/ca.pem")
ctx.load_cert_chain(data + "/device.crt", data + "/device.key")
try:
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()[:300]}))
except urllib.error.HTTPError as err:
    print(json.dumps({"status": err.code, "body": err.read().decode()[:300]}))
except Exception as err:
    print(json.dumps({"status": None, "error": repr(err)}))
"""


def start_hq(lan: Network, tmp: Path, python: str, env: dict[str, str]) -> tuple[Host, Path, str]:
    host = lan.add_host("hq")
    folder = tmp / "hq"
    folder.mkdir()
    settings = dict(host="0.0.0.0", port=8400, data_dir=str(folder / "data"), cookie_secure=False,
                    argon2_memory_kib=64, argon2_iterations=1, argon2_lanes=1, scheduler_enabled=False,
                    booking_rate_per_minute=0, login_rate_per_minute=0, bootstrap_admin_email=ADMIN,
                    bootstrap_admin_password=PASSWORD, link_tls_port=8443, link_url=f"https://{host.ip}:8443")
    (folder / "hq.toml").write_text("[hq]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    proc = lan.spawn(host, [python, "-m", "hq", "--config", str(folder / "hq.toml")], env=env, name="hq")
    url = f"http://{host.ip}:8400"
    deadline = time.monotonic() + 60
    while True:
        try:
            if http_json(lan, host, url + "/healthz", python=python)[0] == 200:
                break
        except Exception:
            pass
        assert proc.alive(), proc.stderr()[-3000:]
        assert time.monotonic() < deadline, "HQ did not come up"
        time.sleep(0.3)
    return host, folder, url


def hq_admin(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The admin's command on the HQ host (it opens HQ's database directly)."""
    return subprocess.run([sys.executable, "-m", "hq", "--config", str(folder / "hq.toml"), *args],
                          capture_output=True, text=True, timeout=60)


def log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_enrolled_branch_runs_mutual_tls_leaks_nothing_and_a_revocation_reaches_every_node(
        lan, python, python_env, tmp_path) -> None:
    env = python_env
    repo = str(Path(__file__).resolve().parents[2])
    from appliance.sample import write_sample
    write_sample(tmp_path / "template", branch_id=BRANCH)
    hq_host, hq_folder, hq_url = start_hq(lan, tmp_path, python, env)
    setup = lan.run(hq_host, [python, "-c", SETUP, hq_url, ORG, str(tmp_path / "template" / "kiosk.toml"), repo,
                              PINS[0]], env=env, timeout=60)
    assert setup.stdout.strip() == "ok", setup.stderr

    # Every packet on the bridge from here on: enrollment, first sync, the busy stretch.
    pcap = tmp_path / "lan.pcap"
    tcpdump = subprocess.Popen(["ip", "netns", "exec", lan.switch_ns, "tcpdump", "-i", "br0", "-U", "-s", "0",
                                "-Z", "root", "-w", str(pcap)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        # 1. Fresh devices enroll by code: nothing is copied by hand.
        hosts, configs = {}, {}
        enrolling = {}
        for device in DEVICES:
            hosts[device] = lan.add_host(device.replace("counter-", "c").replace("display", "disp").replace("-", "")[:8])
            data_dir, config = tmp_path / device / "data", tmp_path / device / "device.toml"
            enrolling[device] = lan.spawn(hosts[device], [python, "-m", "appliance.cli", "enroll", "--hq", hq_url,
                                                          "--data-dir", str(data_dir), "--config-out", str(config),
                                                          "--poll-s", "0.3"], env=env, name=f"enroll-{device}")
            configs[device] = config
        codes = {}
        for device, proc in enrolling.items():
            codes[device] = proc.wait_for(
                lambda _: (re.search(r"SMARTQ_ENROLL_CODE (\S+)", proc.stdout()) or [None, None])[1], 60, "code")
        for device, (role, extra) in DEVICES.items():
            done = hq_admin(hq_folder, "enroll", "--code", codes[device], "--branch", BRANCH, "--role", role,
                            "--id", device, *extra)
            assert done.returncode == 0, done.stderr
        for device, proc in enrolling.items():
            proc.wait_for(lambda _: "SMARTQ_ENROLLED" in proc.stdout(), 60, "enrolled")
            text = configs[device].read_text()
            assert 'listen = "0.0.0.0:8441"' in text and "mdns = true" in text and "https://" in text
            # Staff PINs reach branches in HQ's config.staff, not folded by nodes yet: counters here
            # act without a staff session (the PIN hashes still travel, which the capture checks).
            configs[device].write_text(text.replace("[hq]\n", "[hq]\n" + FAST_LINK, 1)
                                       + "\n[security]\nrequire_staff_login = false\n")

        # 2. The nodes start on HQ's configs and replicate over mutual TLS (found by mDNS).
        nodes = {d: spawn_node(lan, hosts[d], configs[d], python=python, env=env, listen=API) for d in DEVICES}
        drive(lan, nodes["kiosk-2"], "issue", {"n": 3, "services": ["general"]}, python=python, env=env)
        busy = [drive_bg(lan, nodes[f"counter-{i}"], "serve", {"counter": f"c{i}", "idle_s": 4.0, "max": 1000},
                         python=python, env=env, name=f"serve-{i}") for i in (1, 2, 3)]
        issued = drive(lan, nodes["kiosk"], "issue", {"n": 60, "services": ["general", "payments", "documents"],
                                                      "phone": PHONE}, python=python, env=env)
        assert len(issued["issued"]) == 60, issued["errors"][:3]
        # HQ changes a PIN during the busy stretch: a new config.staff travels HQ -> nodes -> peers.
        lan.run(hq_host, [python, "-c", SETUP, hq_url, ORG, str(tmp_path / "template" / "kiosk.toml"), repo,
                          PINS[1]], env=env, timeout=60)
        for proc in busy:
            finish(proc, timeout=120)
        digest = wait_converged(lan, nodes.values(), python=python, env=env, timeout=90)
        for device, node in nodes.items():
            body = state(lan, node, python=python, env=env)
            peers = {p["id"]: p["status"] for p in body["peers"]}
            assert peers == {d: "ok" for d in DEVICES if d != device}, (device, peers)
            assert body["hq"]["status"] == "online", (device, body["hq"])
        assert digest
    finally:
        time.sleep(1.0)
        tcpdump.send_signal(signal.SIGTERM)
        tcpdump.wait(10)

    # 3. The capture: mDNS is readable (it holds nothing secret), everything else is TLS.
    captured = pcap.read_bytes()
    assert len(captured) > 200_000, len(captured)
    assert b"_smartq" in captured  # the capture did see the LAN's clear-text traffic
    for secret in (PHONE.encode(), PHONE[4:].encode(), b"argon2", b"scrypt$", b"pin_hash", b"ticket.issued",
                   b'"origin"', b'"payload"', b"Amina", b"config.staff", b"X-SmartQ-Signature"):
        assert secret not in captured, secret

    # 4. Revocation of kiosk-2, measured: every other node applies it.
    revoked = hq_admin(hq_folder, "revoke", "--branch", BRANCH, "--id", "kiosk-2")
    assert revoked.returncode == 0, revoked.stderr
    hq_db = sqlite3.connect(f"file:{hq_folder / 'data' / 'hq.sqlite3'}?mode=ro", uri=True)
    try:  # when HQ signed and stored the revocation (its HLC: unix ms << 16)
        t0 = hq_db.execute("SELECT hlc FROM outbox WHERE type = 'trust.revoked'").fetchone()[0] / 65536 / 1000
    finally:
        hq_db.close()
    others = [d for d in DEVICES if d != "kiosk-2"]
    reached: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while len(reached) < len(others) and time.monotonic() < deadline:
        for device in others:
            match = re.search(r"^(.{23}) WARNING appliance\.node: device kiosk-2 is revoked", nodes[device].proc.stderr(),
                              re.M)
            if match and device not in reached:
                reached[device] = log_time(match[1]) - t0
        time.sleep(0.1)
    assert set(reached) == set(others), reached
    (tmp_path / "revocation.json").write_text(json.dumps(reached))
    print(f"revocation reached {len(reached)} nodes, seconds after HQ committed it: "
          f"{json.dumps({k: round(v, 3) for k, v in reached.items()})}")
    # One link round (interval_s = 1 s) plus one anti-entropy round (1 s), with room for load.
    assert max(reached.values()) < 6.0, reached

    # 5. The revoked device: refused at TLS by every node (it reads nothing), its later events
    #    go nowhere, what it did before stays.
    victim = nodes["kiosk-2"]
    for device in others[:3]:
        out = lan.run(hosts["kiosk-2"], [python, "-c", TLS_HELLO, f"https://{hosts[device].ip}:8441/sync/v1/hello",
                                         str(tmp_path / "kiosk-2" / "data")], env=env)
        reply = json.loads(out.stdout)
        assert reply["status"] is None and "body" not in reply, reply
    held = {d: max_seq(tmp_path / d / "data" / "smartq.db", "kiosk-2") for d in others}
    assert min(held.values()) >= 3, held  # its tickets from before the revocation are everywhere
    after = drive(lan, victim, "issue", {"n": 2, "services": ["general"]}, python=python, env=env)
    assert len(after["issued"]) == 2  # it still works alone...
    time.sleep(4)
    assert max_seq(tmp_path / "kiosk-2" / "data" / "smartq.db", "kiosk-2") > max(held.values())
    # ...but nothing it did after the revocation reaches anyone, and what it did before stays.
    assert {d: max_seq(tmp_path / d / "data" / "smartq.db", "kiosk-2") for d in others} == held


def max_seq(db: Path, origin: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events WHERE origin = ?", (origin,)).fetchone()[0])
    finally:
        conn.close()
