"""Test helper CLI: run one `sync.discovery.Discovery` and print what it sees as JSON lines.

Run only inside a test network namespace (it binds mDNS on every interface it can see).
Lines: {"event": "started", ...}, then {"event": "peers", "t": ..., "peers": [...]} after
every change of the peer table, and {"event": "stopped"} after SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
import threading
import time

from sync.discovery import Discovery
from sync.peers import PeerChange


def _emit(record: dict[str, object]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


async def _main(args: argparse.Namespace) -> None:
    discovery = Discovery(
        branch=args.branch,
        device_id=args.id,
        role=args.role,
        port=args.port,
        fingerprint=args.fp,
        static_peers=args.static,
        protocol_version=args.pv,
        refresh_interval=args.refresh,
        interfaces=args.interface or None,
    )

    def on_change(change: PeerChange) -> None:
        _emit(
            {
                "event": "peers",
                "t": time.time(),
                "kind": change.kind,
                "device": change.peer.device_id,
                "peers": [dataclasses.asdict(p) for p in discovery.peers()],
            }
        )

    unsubscribe = discovery.subscribe(on_change)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _emit({"event": "starting", "t": time.time()})
    await discovery.start()
    _emit(
        {
            "event": "started",
            "t": time.time(),
            "name": discovery.service_name,
            "addresses": list(discovery.addresses),
            "peers": [dataclasses.asdict(p) for p in discovery.peers()],
        }
    )
    await stop.wait()
    unsubscribe()
    await discovery.stop()
    _emit({"event": "stopped", "t": time.time()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--branch", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--role", default="counter")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--fp", default="")
    parser.add_argument("--pv", type=int, default=1)
    parser.add_argument("--static", action="append", default=[])
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--interface", action="append", default=[], help="name or IPv4 (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("zeroconf").setLevel(logging.INFO)
    asyncio.run(_main(args))
    # Nothing of discovery may outlive stop(): no zeroconf or executor threads left behind.
    leftovers = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    _emit({"event": "exit", "threads": leftovers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
