"""Mutual TLS on the LAN listener: a real node's /sync/v1 over TLS on 127.0.0.1, clients with
real certificates: the org's (accepted), a self-signed one, another organization's, none, one
revoked, one of the org for a device off the roster. Each refused client gets nothing: no
handshake, or a 403 without data."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.config import load_config
from appliance.lan import LanService, parse_lan
from appliance.node import Node
from appliance.sample import local_ca, write_sample
from sync.certs import CertAuthority, cert_pem, crl_pem, load_crl, tls_context, write_file
from sync.keys import load_or_create_key
from sync.protocol import PeerClient, PeerError


@pytest.fixture
def branch(tmp_path: Path) -> Path:
    write_sample(tmp_path / "b", branch_id="b1")
    return tmp_path / "b"


def client_ctx(tmp: Path, ca: CertAuthority, trust_pem: str, device: str, *, branch: str = "b1",
               role: str = "display", key_dir: Path | None = None) -> ssl.SSLContext:
    key_dir = key_dir or tmp / f"client-{device}-{ca.org}"
    key = load_or_create_key(key_dir)
    cert = ca.issue_device(key.public_key(), branch=branch, role=role, device=device, now=time.time(), valid_s=3600)
    write_file(key_dir / "c.crt", cert_pem(cert).encode())
    write_file(key_dir / "crl.pem", crl_pem(ca.crl([], now=time.time())).encode())
    return tls_context(server=False, cert_file=key_dir / "c.crt", key_file=key_dir / "device.key", ca_pem=trust_pem,
                       crl_file=key_dir / "crl.pem")


async def ask(url: str, ctx: ssl.SSLContext | None, device: str, key_dir: Path) -> Any:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx if ctx is not None else False)) as s:
        client = PeerClient(s, url, device=device, branch="b1", key=load_or_create_key(key_dir), peer_device="kiosk",
                            timeout_s=5)
        return await client.hello()


def test_the_lan_listener_takes_only_the_orgs_unrevoked_roster_devices(branch: Path, tmp_path: Path) -> None:
    config = load_config(branch / "kiosk.toml")
    node = Node(config)
    node.open()
    ca = local_ca(branch)
    display_dir = branch / "data" / "display"

    async def run() -> None:
        await node.start([])
        lan = LanService(parse_lan({"listen": "127.0.0.1:0", "mdns": False}))
        await lan.start(node)
        url = f"https://127.0.0.1:{lan.port}"
        try:
            # The org's certificate of a roster device: served, signed answer.
            good = tls_context(server=False, cert_file=display_dir / "device.crt", key_file=display_dir / "device.key",
                               ca_pem=ca.pem, crl_file=display_dir / "crl.pem")
            hello = await ask(url, good, "display", display_dir)
            assert hello["device"] == "kiosk" and hello["vv"]

            # A self-signed CA (same org name, same device key): refused in the handshake.
            rogue = CertAuthority.create("local", now=time.time())
            forged = client_ctx(tmp_path, rogue, ca.pem, "display", key_dir=tmp_path / "forged")
            with pytest.raises(PeerError, match="unreachable"):
                await ask(url, forged, "display", tmp_path / "forged")
            # Another organization's CA: refused in the handshake.
            other = CertAuthority.create("other-org", now=time.time())
            foreign = client_ctx(tmp_path, other, ca.pem, "display", key_dir=tmp_path / "foreign")
            with pytest.raises(PeerError, match="unreachable"):
                await ask(url, foreign, "display", tmp_path / "foreign")
            # No client certificate at all.
            bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            bare.check_hostname = False
            bare.load_verify_locations(cadata=ca.pem)
            with pytest.raises(PeerError, match="unreachable"):
                await ask(url, bare, "display", display_dir)
            # Plain HTTP on the TLS port.
            with pytest.raises(PeerError):
                await ask(url.replace("https", "http"), None, "display", display_dir)
            # The org's certificate for a device not on the roster: TLS passes, the request is refused.
            stranger = client_ctx(tmp_path, ca, ca.pem, "intruder", key_dir=tmp_path / "intruder")
            with pytest.raises(PeerError, match="403"):
                await ask(url, stranger, "intruder", tmp_path / "intruder")
            # Another roster device's certificate used to sign as the display: refused.
            c1 = branch / "data" / "counter-1"
            c1_ctx = tls_context(server=False, cert_file=c1 / "device.crt", key_file=c1 / "device.key", ca_pem=ca.pem,
                                 crl_file=c1 / "crl.pem")
            with pytest.raises(PeerError, match="403"):
                await ask(url, c1_ctx, "display", display_dir)

            # Revoked: the display's certificate on the kiosk's CRL; a new handshake is refused.
            from cryptography import x509
            serial = x509.load_pem_x509_certificate((display_dir / "device.crt").read_bytes()).serial_number
            assert node.tls is not None
            previous = load_crl((branch / "ca" / "crl.pem").read_bytes())
            assert node.tls.apply_crl(crl_pem(ca.crl([(serial, time.time())], now=time.time(), previous=previous)))
            with pytest.raises(PeerError, match="unreachable"):
                await ask(url, good, "display", display_dir)
        finally:
            await lan.stop()
            await node.stop()

    asyncio.run(run())


def test_a_node_with_lan_needs_its_certificate_or_says_how_to_get_one(branch: Path) -> None:
    for name in ("device.crt", "ca.pem"):
        (branch / "data" / "kiosk" / name).unlink()
    node = Node(load_config(branch / "kiosk.toml"))
    node.open()

    async def run() -> None:
        await node.start([])
        from appliance.config import ConfigError
        try:
            with pytest.raises(ConfigError, match="smartq enroll"):
                await LanService(parse_lan({"listen": "127.0.0.1:0", "mdns": False})).start(node)
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_certificate_for_another_device_or_key_stops_the_node(branch: Path) -> None:
    from appliance.config import ConfigError
    kiosk = branch / "data" / "kiosk"
    (kiosk / "device.crt").write_bytes((branch / "data" / "display" / "device.crt").read_bytes())
    with pytest.raises(ConfigError, match="is for display"):
        Node(load_config(branch / "kiosk.toml"))
