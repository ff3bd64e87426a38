"""``smartq-hq --config FILE`` (or ``python -m hq``): run the HQ server. The device's
``smartq`` command does not know HQ: the device package never imports the server.

Admin commands on the HQ host (they open HQ's database directly, beside a running server):

    smartq-hq --config FILE enroll --code 7KQ2-M9XD --branch B --role kiosk --id kiosk-2 [--numbers 1-499]
    smartq-hq --config FILE enroll --request req.json --out bundle.json --branch B --role R --id D   (offline)
    smartq-hq --config FILE revoke --branch B --id D
    smartq-hq --config FILE copy-database --to postgresql://user@host/db   (HQ stopped; docs/hq.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hq.settings import SettingsError


def _admin(args: argparse.Namespace) -> int:
    from hq.app import open_hq
    from hq.errors import ApiError
    from hq.settings import load_settings
    from hq import trust

    settings = load_settings(args.config)
    hq = open_hq(settings)
    link_url = settings.link_url or f"http://{settings.host}:{settings.port}"
    try:
        if args.command == "enroll":
            approval: dict[str, Any] = dict(
                key=hq.key, data_dir=settings.data_dir, branch=args.branch, role=args.role, device=args.id,
                numbers=args.numbers, counters=[c for c in (args.counters or "").split(",") if c], link_url=link_url,
                cert_days=float(settings.cert_days), now_ms=hq.now_ms())
            if args.request:
                try:
                    request = json.loads(Path(args.request).read_text("utf-8"))
                except (OSError, ValueError) as err:
                    print(f"smartq-hq: cannot read {args.request}: {err}", file=sys.stderr)
                    return 2
                if args.code and trust.normalize_code(args.code) != trust.normalize_code(request.get("code")):
                    print("smartq-hq: the code on the device's screen is not the one in the request file",
                          file=sys.stderr)
                    return 1
                bundle = hq.db.write_sync(lambda c: trust.bundle_from_request(
                    c, request, now=hq.now(), ttl_s=int(settings.enroll_code_ttl_s), **approval))
                Path(args.out).write_text(json.dumps(bundle, indent=1), "utf-8")
                print(f"enrolled {args.id} in {args.branch} ({args.role}); bundle written to {args.out}")
            else:
                if not args.code:
                    print("smartq-hq: enroll needs --code (or --request for the offline path)", file=sys.stderr)
                    return 2
                hq.db.write_sync(lambda c: trust.approve(c, code=args.code, **approval))
                print(f"enrolled {args.id} in {args.branch} ({args.role}); the device picks up its certificate now")
        elif args.command == "revoke":
            out = hq.db.write_sync(lambda c: trust.revoke(c, key=hq.key, data_dir=settings.data_dir,
                                                          branch=args.branch, device=args.id, now_ms=hq.now_ms()))
            print(f"revoked {out['device']} of {out['branch']}: its events after seq {out['after_seq']} are refused")
    except ApiError as err:
        print(f"smartq-hq: {err.message}", file=sys.stderr)
        return 1
    finally:
        hq.db.close()
    return 0


def _copy_database(args: argparse.Namespace) -> int:
    """Copy this HQ's SQLite database into the (new, empty) database at ``--to``."""
    from hq.copydb import CopyError, copy_into
    from hq.db import dialect_of, open_database, sqlite_path
    from hq.settings import load_settings

    settings = load_settings(args.config)
    if dialect_of(settings.database_url) != "sqlite":
        print("smartq-hq: copy-database copies a SQLite HQ; this one's database is already a server's",
              file=sys.stderr)
        return 2
    if not sqlite_path(settings.database_url, settings.data_dir).is_file():
        print(f"smartq-hq: no SQLite database at {sqlite_path(settings.database_url, settings.data_dir)}",
              file=sys.stderr)
        return 2
    source = open_database(settings.database_url, data_dir=settings.data_dir, readers=1)
    try:
        source.migrate()  # the copy needs the source at the code's schema, as the target will be
        path = source.path
    finally:
        source.close()
    try:
        target = open_database(args.to, data_dir=settings.data_dir, readers=1, pool_size=1)
    except Exception as err:  # psycopg's connection errors say what is wrong (host, login, database)
        print(f"smartq-hq: cannot open {args.to.split('@')[-1]}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    try:
        target.migrate()
        counts = copy_into(path, target)
    except CopyError as err:
        print(f"smartq-hq: {err}", file=sys.stderr)
        return 1
    finally:
        target.close()
    print(f"copied {sum(counts.values())} rows of {len(counts)} tables; now set database = \"<that URL>\" "
          "on every HQ host, copy hq_ed25519.pem to each, and start them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartq-hq", description="SmartQ headquarters server")
    parser.add_argument("--config", required=True, help="TOML settings file (see docs/hq.md)")
    sub = parser.add_subparsers(dest="command")
    enroll = sub.add_parser("enroll", help="enroll a device by the one-time code on its screen")
    enroll.add_argument("--code", help="the code the device shows, e.g. 7KQ2-M9XD")
    enroll.add_argument("--request", help="offline: the device's request file (smartq enroll --request-out)")
    enroll.add_argument("--out", default="smartq-bundle.json", help="offline: where to write the signed bundle")
    enroll.add_argument("--branch", required=True)
    enroll.add_argument("--role", required=True, choices=("kiosk", "display", "counter"))
    enroll.add_argument("--id", required=True, help="device id, unique in the organization")
    enroll.add_argument("--numbers", help="ticket number range of an issuing device, e.g. 1-499")
    enroll.add_argument("--counters", help="counters a counter device serves, comma-separated")
    revoke = sub.add_parser("revoke", help="revoke a device: its certificate, connections and later events")
    revoke.add_argument("--branch", required=True)
    revoke.add_argument("--id", required=True)
    copy = sub.add_parser("copy-database", help="copy this SQLite HQ into a new PostgreSQL database (HQ stopped)")
    copy.add_argument("--to", required=True, help="the target's URL, e.g. postgresql://smartq:secret@db/smartq")
    args = parser.parse_args(argv)
    try:
        if args.command in ("enroll", "revoke"):
            return _admin(args)
        if args.command == "copy-database":
            return _copy_database(args)
        from hq.main import run
        run(args.config)
    except SettingsError as err:
        print(f"hq: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
