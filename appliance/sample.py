"""`smartq init DIR`: a working sample branch (services, counters, staff, one config per device).

It also makes a local org CA (`DIR/ca/`, org "local") and a certificate for each device, so the
sample branch replicates over mutual TLS without HQ; an enrolled device gets its certificate
from HQ's CA instead (docs/security.md)."""

from __future__ import annotations

import json
from pathlib import Path

import time

from sync.certs import CertAuthority, CertError, cert_pem, crl_pem, load_crl, write_file
from sync.keys import load_or_create_key, public_key_text

from appliance.staff import hash_pin

# (device id, role, port, ticket number range or None, counters it serves)
DEVICES = [
    ("kiosk", "kiosk", 8401, "1-599", []),
    ("display", "display", 8402, None, []),
    ("counter-1", "counter", 8403, "600-799", ["c1"]),
    ("counter-2", "counter", 8404, "800-999", ["c2", "c3"]),
]
# [hardware] per role: fakes by default, so the demo and the tests run without devices
# (docs/hardware.md, "Wiring in the node", shows the real backends).
HARDWARE = {
    "kiosk": """
[hardware.printer]
backend = "dummy"            # a real printer: backend = "network", host = "192.168.1.50"
# backend = "network"
# host = "127.0.0.1"
# port = 9100
# The QR holds the ticket's live status page at HQ: set `public_url` in [hq] (the demo does).
footer = "Thank you for waiting"
""",
    "display": """
[hardware.announcer]
engine = "espeak-ng"         # a chime, then each call spoken in the branch's languages
sink = "auto"                # the speakers (aplay/paplay) when installed, else silent
chime = true
""",
    "counter": """
[hardware.keypad]
backend = "fake"             # a serial keypad: backend = "serial", url = "/dev/ttyUSB0"

[hardware.led]
backend = "fake"             # a serial LED sign: backend = "serial", url = "/dev/ttyUSB1"
""",
}
# [lan] per device (docs/replication.md). By default replication is inert on one shared
# machine: the listener takes any free loopback port and mDNS is off, so sample nodes started
# by tests never touch real interfaces or fixed ports. `lan_loopback=True` (the demo) gives
# each device a fixed loopback port and the others as static peers, so a one-machine branch
# replicates. On a real device: listen = "0.0.0.0:8441", mdns = true (the commented lines).
LAN_PORT_OFFSET = 40  # LAN port = the device's API port + 40 (8441 for the kiosk)


def lan_section(device_id: str, port: int, *, loopback: bool, peers: dict[str, int]) -> str:
    """The [lan] table of one sample device; `peers` maps the other devices to their LAN ports."""
    if loopback:
        static = ", ".join(f'"{d}@127.0.0.1:{p}"' for d, p in peers.items())
        return f"""
[lan]
listen = "127.0.0.1:{port}"
mdns = false
static_peers = [{static}]
"""
    return """
[lan]
listen = "127.0.0.1:0"       # a device: listen = "0.0.0.0:8441"
mdns = false                 # a device: mdns = true (finds the branch's other devices)
static_peers = []            # where mDNS cannot reach: ["display@10.0.5.21:8441"]
"""


STAFF = [("amina", "Amina Uwase", "1234"), ("jean", "Jean Habimana", "2345"), ("lucia", "Lucía Gómez", "3456")]

SERVICES = """
[[services]]
id = "general"
letter = "A"
names = { en = "General enquiries", fr = "Renseignements généraux", rw = "Amakuru rusange", sw = "Maswali ya jumla", es = "Información general" }

[[services]]
id = "payments"
letter = "B"
names = { en = "Payments", fr = "Paiements", rw = "Kwishyura", sw = "Malipo", es = "Pagos" }

[[services]]
id = "documents"
letter = "C"
names = { en = "Documents and certificates", fr = "Documents et certificats", rw = "Inyandiko n'ibyemezo", sw = "Nyaraka na vyeti", es = "Documentos y certificados" }

[[counters]]
id = "c1"
name = "Counter 1"
names = { en = "Counter 1", fr = "Guichet 1", rw = "Konteri 1", sw = "Dirisha 1", es = "Ventanilla 1" }
services = ["general", "payments"]

[[counters]]
id = "c2"
name = "Counter 2"
names = { en = "Counter 2", fr = "Guichet 2", rw = "Konteri 2", sw = "Dirisha 2", es = "Ventanilla 2" }
services = ["general", "documents"]

[[counters]]
id = "c3"
name = "Counter 3"
names = { en = "Counter 3", fr = "Guichet 3", rw = "Konteri 3", sw = "Dirisha 3", es = "Ventanilla 3" }
services = ["documents", "payments"]
"""


LOCAL_ORG = "local"
LOCAL_CERT_DAYS = 365


def local_ca(directory: Path) -> CertAuthority:
    """The sample branch's own org CA (`DIR/ca/`): what HQ's CA is for an enrolled branch, so a
    branch made by `smartq init` runs mutual TLS without HQ. Created on first use."""
    try:
        return CertAuthority.load(directory / "ca")
    except CertError:
        if (directory / "ca" / "ca.key").exists():
            raise
    ca = CertAuthority.create(LOCAL_ORG, now=time.time())
    ca.save(directory / "ca")
    write_file(directory / "ca" / "crl.pem", crl_pem(ca.crl([], now=time.time())).encode("ascii"))
    return ca


def issue_local_cert(directory: Path, device_id: str, role: str, branch_id: str) -> Path:
    """Give a sample device (key in `DIR/data/<device>`) a certificate of the local CA, the CA
    and its CRL; returns its data dir."""
    ca = local_ca(directory)
    data = directory / "data" / device_id
    key = load_or_create_key(data)
    cert = ca.issue_device(key.public_key(), branch=branch_id, role=role, device=device_id, now=time.time(),
                           valid_s=LOCAL_CERT_DAYS * 86400)
    write_file(data / "device.crt", cert_pem(cert).encode("ascii"))
    write_file(data / "ca.pem", ca.pem.encode("ascii"))
    crl = load_crl((directory / "ca" / "crl.pem").read_bytes())
    write_file(data / "crl.pem", crl_pem(crl).encode("ascii"))
    return data


def write_sample(directory: Path, *, branch_id: str = "kigali-main", branch_name: str = "Kigali Main Office",
                 timezone: str = "Africa/Kigali", port_base: int = 8400, force: bool = False,
                 lan_loopback: bool = False) -> list[Path]:
    """Write one TOML per device plus each device's key; returns the config paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    keys = {}
    for device_id, role, *_ in DEVICES:
        keys[device_id] = public_key_text(load_or_create_key(directory / "data" / device_id).public_key())
        issue_local_cert(directory, device_id, role, branch_id)
    roster = "".join(
        f'\n[[roster]]\nid = "{d}"\nrole = "{role}"\npublic_key = "{keys[d]}"\n' + (f'numbers = "{rng}"\n' if rng else "")
        for d, role, _, rng, _ in DEVICES
    )
    staff = "".join(
        f'\n[[staff]]\nid = "{sid}"\nname = "{name}"\n# PIN {pin} (sample only: change it)\npin_hash = "{hash_pin(pin)}"\n'
        for sid, name, pin in STAFF
    )

    def lan_peers(me: str) -> dict[str, int]:
        return {d: p - 8400 + port_base + LAN_PORT_OFFSET for d, _, p, _, _ in DEVICES if d != me}

    for device_id, role, port, _, counters in DEVICES:
        path = directory / f"{device_id}.toml"
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists (use --force to overwrite)")
        port = port - 8400 + port_base
        text = f"""# SmartQ device configuration (docs/configuration.md lists every setting).
[branch]
id = "{branch_id}"
name = "{branch_name}"
timezone = "{timezone}"
languages = ["en", "fr", "rw", "sw", "es"]
[branch.notices]              # the display's ticker, per language (or one list for all)
en = ["Please keep your ticket until you are served.", "Payments close at 15:00 today."]
fr = ["Veuillez garder votre ticket jusqu'à votre passage.", "Les paiements ferment à 15 h aujourd'hui."]
rw = ["Mubike itike yanyu kugeza mwakiriwe.", "Kwishyura birafunga saa 15:00 uyu munsi."]
sw = ["Tafadhali hifadhi tiketi yako hadi uhudumiwe.", "Malipo yanafungwa saa 15:00 leo."]
es = ["Conserve su número hasta que le atiendan.", "Los pagos cierran hoy a las 15:00."]

[device]
id = "{device_id}"
role = "{role}"
data_dir = "data/{device_id}"
listen = "127.0.0.1:{port}"
counters = {json.dumps(counters)}

[queue]
max_priority = 1
promote_after_s = 1800
max_recalls = 3
call_timeout_s = 600
default_service_s = 300

[security]
require_staff_login = true
{lan_section(device_id, port + LAN_PORT_OFFSET, loopback=lan_loopback, peers=lan_peers(device_id))}{HARDWARE[role]}{SERVICES}{roster}{staff}"""
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
