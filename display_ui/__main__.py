"""``python -m display_ui --node http://127.0.0.1:8402 [--fullscreen] [--size 1280x720]``"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from kiosk_ui.__main__ import configure_kivy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m display_ui", description="SmartQ waiting-room display")
    p.add_argument("--node", default="http://127.0.0.1:8402", help="the node's local API URL")
    p.add_argument("--fullscreen", action="store_true")
    p.add_argument("--size", default="1920x1080", help="1920x1080 or 1280x720 (any WxH works)")
    p.add_argument("--lang", default="en", help="language of the screen and service names: en fr rw sw es")
    p.add_argument("--notice", action="append", default=[], help="a ticker notice (repeatable)")
    p.add_argument("--screenshot-dir", type=Path)
    p.add_argument("--screenshot-every", type=float, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_kivy(args.fullscreen, args.size, "SmartQ display")
    from .app import build, run

    app, client = build(args.node, notices=args.notice, language=args.lang,
                        screenshot_dir=args.screenshot_dir, screenshot_every=args.screenshot_every)
    asyncio.run(run(app, client))


if __name__ == "__main__":
    main()
