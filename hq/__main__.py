"""``smartq-hq --config FILE`` (or ``python -m hq``): run the HQ server. The device's
``smartq`` command does not know HQ: the device package never imports the server."""

from __future__ import annotations

import argparse
import sys

from hq.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartq-hq", description="SmartQ headquarters server")
    parser.add_argument("--config", required=True, help="TOML settings file (see docs/hq.md)")
    args = parser.parse_args(argv)
    from hq.main import run
    try:
        run(args.config)
    except SettingsError as err:
        print(f"hq: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
