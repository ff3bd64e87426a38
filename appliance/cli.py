"""The `smartq` command (the device side; HQ has its own: `smartq-hq`, `python -m hq`)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sync.keys import KeyFileError

from appliance.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from appliance.node import Node


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_enroll(args: argparse.Namespace) -> int:
    import json

    from appliance import enroll

    data_dir = Path(args.data_dir)
    try:
        printer = None
        if args.printer:
            import tomllib
            try:
                printer = tomllib.loads(Path(args.printer).read_text(encoding="utf-8"))["hardware"]["printer"]
            except (KeyError, tomllib.TOMLDecodeError) as err:
                print(f"smartq enroll: {args.printer}: no [hardware.printer] table ({err})", file=sys.stderr)
                return 2
        if args.request_out:
            _, request = enroll.request(data_dir)
            Path(args.request_out).write_text(json.dumps(request), encoding="utf-8")
            enroll.show_code(data_dir, request["code"], printer)
            print(f"SMARTQ_ENROLL_CODE {request['code']}", flush=True)
            print(f"request written to {args.request_out}: take it to HQ with the code above", flush=True)
            return 0
        if not args.config_out:
            print("smartq enroll: --config-out is needed to install the configuration", file=sys.stderr)
            return 2
        if args.bundle:
            from sync.keys import load_or_create_key
            bundle = json.loads(Path(args.bundle).read_text(encoding="utf-8"))
            out = enroll.install(bundle, data_dir, Path(args.config_out), key=load_or_create_key(data_dir),
                                 hq_key=args.hq_key)
        elif args.hq:
            out = asyncio.run(enroll.enroll_online(
                args.hq, data_dir, Path(args.config_out), hq_key=args.hq_key, poll_s=args.poll_s, printer=printer,
                on_code=lambda code: print(f"SMARTQ_ENROLL_CODE {code}", flush=True)))
        else:
            print("smartq enroll: give --hq URL, --bundle FILE or --request-out FILE", file=sys.stderr)
            return 2
    except (enroll.EnrollError, OSError, ValueError, KeyFileError) as err:
        print(f"smartq enroll: {err}", file=sys.stderr)
        return 1
    print(f"SMARTQ_ENROLLED {out['device']} {out['config']}", flush=True)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from appliance.sample import write_sample

    try:
        paths = write_sample(Path(args.dir), branch_id=args.branch_id, port_base=args.port_base, force=args.force,
                             lan_loopback=args.lan_loopback)
    except FileExistsError as err:
        print(f"smartq init: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"smartq init: cannot write {args.dir}: {err.strerror or err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from appliance.server import serve

    config = load_config(args.config, role=args.role, listen=args.listen)

    def ready(url: str) -> None:
        print(f"SMARTQ_LISTENING {url}", flush=True)

    try:
        asyncio.run(serve(config, on_ready=ready))
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{_store_path(config)}: {err} (restore it from a peer or a backup)") from err
    return 0


class StoreError(Exception):
    """The device's store cannot be used; the message says which file and why (one line)."""


def _store_path(config: Config) -> Path:
    from appliance.node import DB_FILE

    return config.data_dir / DB_FILE


def _open_node(config: Config) -> Node:
    """The device's node without its services; a store that is not SQLite is a StoreError."""
    from appliance.node import Node

    try:
        return Node(config)
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{_store_path(config)}: {err} (restore it from a peer or a backup)") from err


def cmd_verify(args: argparse.Namespace) -> int:
    """Check what an operator must trust after a power cut: the SQLite file, every hash chain
    and signature, and that the projection is what a whole re-fold of the log gives."""
    from sync.keys import KEY_FILE

    config = load_config(args.config)
    db = _store_path(config)
    if not (config.data_dir / KEY_FILE).exists():
        raise StoreError(f"{config.data_dir}: no device key here; is device.data_dir right?")
    print(f"device {config.device_id} ({config.role}) of branch {config.branch_id}, store {db}")
    if not db.exists():
        print("no store yet (the node creates it on its first start): nothing else to verify")
        return 0
    node = _open_node(config)
    try:
        problems, report = _verify_store(node)
    finally:
        node.close()
    for line in report:
        print(line)
    for p in problems:
        print(f"problem: {p}")
    print("verified: no problems" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _verify_store(node: Node) -> tuple[list[str], list[str]]:
    from sync.db import connect

    from appliance.projection import Projection, state_hash

    report: list[str] = []
    problems: list[str] = []
    conn = connect(node.db_path, readonly=True)
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        try:
            integrity = [r[0] for r in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{node.db_path}: {err}") from err
        if integrity == ["ok"]:
            report.append("SQLite file: quick_check ok")
        else:
            problems += [f"SQLite: {line}" for line in integrity]
        events, origins = conn.execute("SELECT count(*), count(DISTINCT origin) FROM events").fetchone()
        chain_problems = node.verify()
        problems += chain_problems
        if not chain_problems:
            report.append(f"log: {events} events from {origins} devices, every hash chain and signature verifies")
        held = conn.execute("SELECT count(*) FROM held").fetchone()[0]
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        report.append(f"waiting: {held} events held for a gap, {quarantined} in quarantine")
        # Re-fold a copy, so the check works beside a running node and changes nothing.
        conn.backup(memory)
        memory.execute("BEGIN")
        Projection().rebuild(memory)
        compacted = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'hq_compaction'").fetchone() and \
            conn.execute("SELECT count(*) FROM hq_compaction").fetchone()[0]
        # After a nightly compaction the log holds only recent days: compare what it re-folds.
        only = {r[0] for r in memory.execute("SELECT id FROM tickets")} if compacted else None
        refolded = _projection_digest(memory, only)
        memory.execute("ROLLBACK")
        stored = _projection_digest(conn, only)
        if stored == refolded and only is not None:
            report.append(f"projection: the tickets of the days kept ({len(only)}) equal a re-fold of the log"
                          " (older days were compacted after HQ confirmed them)")
        elif stored == refolded:
            report.append(f"projection: equal to a whole re-fold of the log (state hash {state_hash(conn)[:16]})")
        else:
            problems.append(f"projection differs from a whole re-fold (stored {stored[:16]}, re-fold {refolded[:16]});"
                            " run smartq refold")
    finally:
        memory.close()
        conn.close()
    return problems, report


def _projection_digest(conn: sqlite3.Connection, only: set[str] | None = None) -> str:
    """The state hash, extended by every column of every ticket row (the state hash covers
    each ticket's fold state; the indexed columns beside it must agree with it too).
    `only`: just these tickets (a compacted log re-folds only what it kept)."""
    import hashlib

    from sync.envelope import canonical_json

    from appliance.projection import state_hash

    digest = hashlib.sha256(state_hash(conn).encode() if only is None else b"")
    for row in conn.execute("SELECT * FROM tickets ORDER BY id"):
        if only is None or row[0] in only:
            digest.update(canonical_json(list(row)))
    return digest.hexdigest()


def cmd_refold(args: argparse.Namespace) -> int:
    from appliance.projection import state_hash

    node = _open_node(load_config(args.config))
    try:
        node.writer.start()
        count = node.writer.call(node.projection.rebuild)
        tickets = node.writer.call(lambda c: c.execute("SELECT count(*) FROM tickets").fetchone()[0])
        digest = node.writer.call(state_hash)
    finally:
        node.close()
    print(f"re-folded {count} events into {tickets} tickets; state hash {digest[:16]}")
    return 0


def cmd_hash_pin(args: argparse.Namespace) -> int:
    from appliance.staff import hash_pin

    if args.pin:
        pin = args.pin
    elif sys.stdin.isatty():
        try:
            pin = getpass.getpass("PIN: ")
        except EOFError:
            pin = ""
    else:  # piped: `echo 4821 | smartq hash-pin`
        pin = sys.stdin.readline().strip()
    if not pin:
        print("smartq hash-pin: no PIN given", file=sys.stderr)
        return 2
    if not pin.isdigit():
        print("smartq hash-pin: a PIN is digits only", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from appliance.simulate_cli import run

    return run(args)


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

    p = sub.add_parser("enroll", help="enroll this device at HQ by a one-time code (or a bundle file)")
    p.add_argument("--data-dir", required=True, help="the device's data dir (key, certificate)")
    p.add_argument("--hq", help="HQ base URL (online enrollment)")
    p.add_argument("--config-out", help="where to write the device config HQ sends")
    p.add_argument("--hq-key", help="HQ's public key, when the image pins it (base64url)")
    p.add_argument("--request-out", help="offline: write the enrollment request to this file (USB stick)")
    p.add_argument("--bundle", help="offline: import the signed bundle HQ wrote for this device")
    p.add_argument("--poll-s", type=float, default=2.0, help="how often to ask HQ whether the code was entered")
    p.add_argument("--printer", help="a TOML file with this device's [hardware.printer]: print the code on it")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("hash-pin", help="print the pin_hash of a staff PIN")
    p.add_argument("pin", nargs="?")
    p.set_defaults(func=cmd_hash_pin)

    p = sub.add_parser("simulate", help="simulate branch days through the queue engine; score the wait estimates")
    p.add_argument("scenario")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"smartq: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyFileError as err:
        print(f"smartq: device key: {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"smartq: store: {err}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as err:  # the store broke under a running command
        print(f"smartq: store: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
