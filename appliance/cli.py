"""The `smartq` command (the device side; HQ has its own: `smartq-hq`, `python -m hq`)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from pathlib import Path

from appliance.config import ConfigError, load_config


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_init(args: argparse.Namespace) -> int:
    from appliance.sample import write_sample

    try:
        paths = write_sample(Path(args.dir), branch_id=args.branch_id, port_base=args.port_base, force=args.force,
                             lan_loopback=args.lan_loopback)
    except FileExistsError as err:
        print(f"smartq init: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from appliance.server import serve

    config = load_config(args.config, role=args.role, listen=args.listen)

    def ready(url: str) -> None:
        print(f"SMARTQ_LISTENING {url}", flush=True)

    asyncio.run(serve(config, on_ready=ready))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from appliance.node import Node

    config = load_config(args.config)
    node = Node(config)
    try:
        problems = node.verify()
    finally:
        node.close()
    for p in problems:
        print(p)
    print("all hash chains verify" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def cmd_refold(args: argparse.Namespace) -> int:
    from appliance.node import Node

    node = Node(load_config(args.config))
    node.writer.start()
    try:
        count = node.writer.call(node.projection.rebuild)
    finally:
        node.close()
    print(f"re-folded {count} events")
    return 0


def cmd_hash_pin(args: argparse.Namespace) -> int:
    from appliance.staff import hash_pin

    pin = args.pin or getpass.getpass("PIN: ")
    if not pin.isdigit():
        print("smartq hash-pin: a PIN is digits only", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartq", description="SmartQ queue appliance")
    parser.add_argument("--log-level", default=os.environ.get("SMARTQ_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a sample branch: one config per device")
    p.add_argument("dir")
    p.add_argument("--branch-id", default="kigali-main")
    p.add_argument("--port-base", type=int, default=8400, help="kiosk gets base+1, display +2, counters +3, +4")
    p.add_argument("--force", action="store_true")
    p.add_argument("--lan-loopback", action="store_true",
                   help="replicate over 127.0.0.1 with static peers (a whole branch on one machine)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("node", help="run this device's node (store, local API)")
    p.add_argument("--config", required=True)
    p.add_argument("--role", choices=("kiosk", "display", "counter"))
    p.add_argument("--listen", help="host:port, overrides device.listen (port 0: any free port)")
    p.set_defaults(func=cmd_node)

    p = sub.add_parser("verify", help="check every stored hash chain and signature")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("refold", help="rebuild the projection from the log")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_refold)

    p = sub.add_parser("hash-pin", help="print the pin_hash of a staff PIN")
    p.add_argument("pin", nargs="?")
    p.set_defaults(func=cmd_hash_pin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"smartq: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
