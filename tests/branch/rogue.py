"""A rogue device on the branch LAN (runs inside its own namespace): not on the roster.

It announces itself by mDNS (as "rogue", and as roster device "counter-2" with its own key's
fingerprint),
finds the real nodes by mDNS like any device can, then tries every way in it has:
hello/pull/push under its own id, the same claiming a roster id, forged events, genuine
events replayed, and a captured genuine request replayed to its addressee and to another
device. Prints one JSON line: what it discovered and the HTTP status of every attempt.

    python rogue.py --branch b1 --port 8441 --input FILE   (FILE: {"genuine_events", "captured"})
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(Path(args.input).read_text())
    key = Ed25519PrivateKey.generate()
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
        genuine = data["genuine_events"]
        attempts = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for device, peer in sorted(found.items()):
                url = f"http://{peer.addresses[0]}:{peer.port}"
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
                        attempts.append({"target": device, "as": claim, "what": what, **result})
            captured = data["captured"]
            for device, peer in sorted(found.items()):
                url = f"http://{peer.addresses[0]}:{peer.port}"
                result = await attempt(session, url, "POST", captured["path"], captured["body"].encode(),
                                       captured["headers"])
                attempts.append({"target": device, "as": "captured", "what": "replayed request", **result})
        return {"discovered": sorted(found), "attempts": attempts}
    finally:
        await fake.stop()
        await me.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--branch", required=True)
    parser.add_argument("--port", type=int, default=8441)
    parser.add_argument("--input", required=True)
    parser.add_argument("--wait", type=float, default=3.0)
    print(json.dumps({"result": asyncio.run(main(parser.parse_args()))}), flush=True)
