"""``python -m counter_ui --node http://127.0.0.1:8403 --counter c1 [--fullscreen]``"""

from __future__ import annotations

import argparse
import asyncio

from ui_common.cli import add_common_args, launch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m counter_ui", description="SmartQ counter (staff) UI")
    add_common_args(p, node="http://127.0.0.1:8403", size="1280x800",
                    size_help="window size WxH when not fullscreen",
                    lang_help="language of the screen: en fr rw sw es")
    p.add_argument("--counter", required=True, help="counter id, e.g. c1")
    p.add_argument("--no-login", action="store_true", help="branch without staff PINs")
    p.add_argument("--pin", help="log in at start with this PIN (demo and tests only: a PIN on a "
                   "command line is visible to every local user)")
    return p.parse_args(argv)


async def auto_login(vm: object, pin: str) -> None:
    """Log in as soon as the node answers (demo): retry while it is unreachable."""
    while not await vm.login(pin):  # type: ignore[attr-defined]
        await asyncio.sleep(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def start() -> None:
        from .app import build, run

        app, client = build(args.node, args.counter, login_required=not args.no_login, language=args.lang,
                            screenshot_dir=args.screenshot_dir, screenshot_every=args.screenshot_every)
        extra = [auto_login(app.vm, args.pin)] if args.pin else []
        await run(app, client, *extra, data_dir=args.data_dir)

    launch(args, "SmartQ counter", start)


if __name__ == "__main__":
    main()
