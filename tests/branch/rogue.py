"""A rogue device on the branch LAN (runs inside its own namespace): not on the roster.

It announces itself by mDNS (as "rogue", and as roster device "counter-2" with its own key's
fingerprint),
finds the real nodes by mDNS like any device can, then tries every way in it has, over every
kind of connection it can make: TLS with a self-signed certificate (its own CA named like the
branch's organization), TLS with a certificate of another organization's CA, TLS without a
client certificate, and plain HTTP; on each: hello/pull/push under its own id, the same
claiming a roster id, forged events, genuine events replayed, and a captured genuine request
replayed. Prints one JSON line: what it discovered and, for every attempt, the HTTP status
(None: no HTTP answer at all) and whether any event leaked.

    python rogue.py --branch b1 --port 8441 --input FILE   (FILE: {"genuine_events", "captured"})
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sync.certs import CertAuthority, cert_pem, crl_pem, tls_context, write_file, write_private  # noqa: E402
from sync.discovery import Discovery  # noqa: E402
from sync.envelope import Event  # noqa: E402
from sync.keys import fingerprint  # noqa: E402
from sync.protocol import PREFIX, encode, sign_headers  # noqa: E402


async def attempt(session: aiohttp.ClientSession, url: str, method: str, path: str, body: bytes,
                  headers: dict[str, str]) -> dict[str, Any]:
    try:
        async with session.request(method, url + path, data=body or None, headers=headers) as resp:
            text = await resp.text()
            return {"status": resp.status, "leaked_events": '"events":[{' in text, "body": text[:200]}
    except aiohttp.ClientError as err:
        return {"status": None, "error": repr(err)}


def contexts(key: Ed25519PrivateKey, branch: str, directory: Path) -> dict[str, ssl.SSLContext | None]:
    """How the rogue can connect: its own certificates (self-signed CA, another org's CA), none, plain."""
    from cryptography.hazmat.primitives import serialization
    write_private(directory / "key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    out: dict[str, ssl.SSLContext | None] = {}
    for name, org in (("self-signed", "local"), ("other-org", "other-org")):
        ca = CertAuthority.create(org, now=time.time())
        cert = ca.issue_device(key.public_key(), branch=branch, role="counter", device="counter-1", now=time.time(),
                               valid_s=3600)
        write_file(directory / f"{name}.crt", cert_pem(cert).encode())
        write_file(directory / f"{name}.crl", crl_pem(ca.crl([], now=time.time())).encode())
        out[name] = tls_context(server=False, cert_file=directory / f"{name}.crt", key_file=directory / "key.pem",
                                ca_pem=ca.pem, crl_file=directory / f"{name}.crl")
        out[name].verify_mode = ssl.CERT_NONE  # the rogue does not care who answers
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.verify_mode = ssl.CERT_NONE
    out["no-cert"] = bare
    out["plain-http"] = None
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(Path(args.input).read_text())
    key = Ed25519PrivateKey.generate()
    ways = contexts(key, args.branch, Path(tempfile.mkdtemp(prefix="rogue")))
    fp = fingerprint(key.public_key())
    me = Discovery(branch=args.branch, device_id="rogue", role="counter", port=args.port, fingerprint=fp)
    fake = Discovery(branch=args.branch, device_id="counter-2", role="counter", port=args.port + 1, fingerprint=fp)
    await me.start()
    await fake.start()
    try:
        await asyncio.sleep(args.wait)
        found = {p.device_id: p for p in me.peers() if p.fingerprint != fp}
        forged = Event("counter-1", 1, 1, "ticket.called", 1, {"ticket": "x", "counter": "c1"}, args.branch,
                       "").signed(key).to_dict()
        attempts = []
        for way, ctx in ways.items():
            scheme = "http" if ctx is None else "https"
            connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else False)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=connector) as session:
                attempts += await try_all(session, scheme, way, found, key, forged, data, args)
        return {"discovered": sorted(found), "attempts": attempts}
    finally:
        await fake.stop()
        await me.stop()


async def try_all(session: aiohttp.ClientSession, scheme: str, way: str, found: dict[str, Any],
                  key: Ed25519PrivateKey, forged: dict[str, Any], data: dict[str, Any],
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    genuine = data["genuine_events"]
    attempts: list[dict[str, Any]] = []
    for device, peer in sorted(found.items()):
        url = f"{scheme}://{peer.addresses[0]}:{peer.port}"
        for claim in ("rogue", "counter-1"):
            for what, method, path, message in (
                ("hello", "GET", f"{PREFIX}/hello", None),
                ("pull", "POST", f"{PREFIX}/pull", {"vv": {}, "limit": 1000}),
                ("push forged", "POST", f"{PREFIX}/push", {"events": [forged]}),
                ("push replayed", "POST", f"{PREFIX}/push", {"events": genuine}),
            ):
                body = encode(message) if message is not None else b""
                headers = sign_headers(key, device=claim, branch=args.branch, method=method, path=path,
                                       body=body, to=device)
                result = await attempt(session, url, method, path, body, headers)
                attempts.append({"way": way, "target": device, "as": claim, "what": what, **result})
    captured = data["captured"]
    for device, peer in sorted(found.items()):
        url = f"{scheme}://{peer.addresses[0]}:{peer.port}"
        result = await attempt(session, url, "POST", captured["path"], captured["body"].encode(), captured["headers"])
        attempts.append({"way": way, "target": device, "as": "captured", "what": "replayed request", **result})
    return attempts

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--branch", required=True)
    parser.add_argument("--port", type=int, default=8441)
    parser.add_argument("--input", required=True)
    parser.add_argument("--wait", type=float, default=3.0)
    print(json.dumps({"result": asyncio.run(main(parser.parse_args()))}), flush=True)
