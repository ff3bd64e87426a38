"""Benchmark: the cost of mutual TLS on a reconnect storm.

One real node (the sample kiosk: SQLite store, writer thread, its `/sync/v1` LAN listener with
mutual TLS pinned to the branch's CA) on 127.0.0.1, and 20 devices with their own certificates
of that CA that all reconnect at once (what happens when a switch comes back): each opens a
fresh connection, completes the TLS 1.3 handshake (both certificates, CRL check, the node's
binding check) and a signed `hello`. Measured per device: connect -> signed answer; and the
node's CPU time for the whole storm. The same storm over plain HTTP (`tls = false`) gives the
baseline, so the difference is the TLS cost.

Figures -> bench/results/tls.json.

Run: .venv/bin/python -m bench.bench_tls [--devices 20] [--storms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from appliance.config import load_config  # noqa: E402
from appliance.lan import LanService, parse_lan  # noqa: E402
from appliance.node import Node  # noqa: E402
from appliance.sample import issue_local_cert, write_sample  # noqa: E402
from bench.common import latency_summary, write  # noqa: E402
from sync.certs import tls_context  # noqa: E402
from sync.keys import load_or_create_key, public_key_text  # noqa: E402
from sync.protocol import PeerClient  # noqa: E402


def make_branch(directory: Path, devices: int) -> list[str]:
    """The sample branch plus `devices` extra counters on the roster, each with a certificate."""
    write_sample(directory, branch_id="b1")
    names = [f"dev-{i:02d}" for i in range(devices)]
    roster = ""
    for name in names:
        key = load_or_create_key(directory / "data" / name)
        issue_local_cert(directory, name, "counter", "b1")
        roster += f'\n[[roster]]\nid = "{name}"\nrole = "counter"\npublic_key = "{public_key_text(key.public_key())}"\n'
    kiosk = directory / "kiosk.toml"
    kiosk.write_text(kiosk.read_text() + roster)
    return names


async def storm(url: str, directory: Path, names: list[str], tls: bool) -> list[float]:
    """Every device connects afresh and says hello, all at once; seconds per device."""

    async def one(name: str) -> float:
        data = directory / "data" / name
        ctx = (tls_context(server=False, cert_file=data / "device.crt", key_file=data / "device.key",
                           ca_pem=(data / "ca.pem").read_text(), crl_file=data / "crl.pem") if tls else False)
        start = time.perf_counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as session:
            client = PeerClient(session, url, device=name, branch="b1", key=load_or_create_key(data),
                                peer_device="kiosk", timeout_s=30)
            await client.hello()
            return time.perf_counter() - start

    return list(await asyncio.gather(*(one(n) for n in names)))


async def run(directory: Path, names: list[str], storms: int, tls: bool) -> dict[str, Any]:
    node = Node(load_config(directory / "kiosk.toml"))
    await asyncio.to_thread(node.open)
    await node.start([])
    lan = LanService(parse_lan({"listen": "127.0.0.1:0", "mdns": False, "tls": tls}))
    await lan.start(node)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{lan.port}"
    try:
        await storm(url, directory, names, tls)  # warm-up
        times: list[float] = []
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        for _ in range(storms):
            times += await storm(url, directory, names, tls)
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await lan.stop()
        await node.stop()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    connections = storms * len(names)
    return {"per_device_connect_to_signed_hello": latency_summary(times),
            "storm_wall_ms": round(wall / storms * 1000, 2),
            "cpu_ms_per_connection_both_sides": round(cpu / connections * 1000, 3),
            "connections": connections}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--storms", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        directory = Path(tmp)
        names = make_branch(directory, args.devices)
        tls = asyncio.run(run(directory, names, args.storms, True))
        plain = asyncio.run(run(directory, names, args.storms, False))
    write("tls", {
        "setup": f"one kiosk node on 127.0.0.1; {args.devices} devices reconnect at once ({args.storms} storms), "
                 "each a fresh connection + signed hello; clients and node in one process (CPU is both sides); "
                 "2-core machine shared with other work",
        "mutual_tls": tls, "plain_http": plain,
        "tls_cost_cpu_ms_per_connection": round(tls["cpu_ms_per_connection_both_sides"]
                                                - plain["cpu_ms_per_connection_both_sides"], 3),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
