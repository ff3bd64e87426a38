"""``python -m kiosk_ui --node http://127.0.0.1:8401 [--fullscreen] [--lang en]``"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kiosk_ui", description="SmartQ kiosk UI")
    p.add_argument("--node", default="http://127.0.0.1:8401", help="the node's local API URL")
    p.add_argument("--fullscreen", action="store_true", help="fill the screen (appliance mode)")
    p.add_argument("--lang", default="en", help="default language: en fr rw sw es")
    p.add_argument("--size", default="800x1280", help="window size WxH when not fullscreen")
    p.add_argument("--phone-region", default="RW", help="region for local phone numbers")
    p.add_argument("--idle", type=float, default=45.0, help="seconds before going back to start")
    p.add_argument("--print-watch", type=float, default=8.0,
                   help="seconds to wait for the printer to confirm a ticket before telling the "
                        "citizen to note the number on screen")
    p.add_argument("--screenshot-dir", type=Path, help="save screenshots here")
    p.add_argument("--screenshot-every", type=float, default=0, help="seconds between screenshots")
    return p.parse_args(argv)


def configure_kivy(fullscreen: bool, size: str, title: str) -> None:
    """Must run before kivy.core.window is imported."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    from kivy.config import Config

    width, _, height = size.partition("x")
    Config.set("graphics", "width", width)
    Config.set("graphics", "height", height)
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")
    # Touch kiosks have no keyboard: dock Kivy's on-screen keyboard under the fields.
    Config.set("kivy", "keyboard_mode", "dock" if fullscreen else "system")
    Config.set("kivy", "exit_on_escape", "0" if fullscreen else "1")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_kivy(args.fullscreen, args.size, "SmartQ kiosk")
    from .app import build, run

    app, client = build(args.node, language=args.lang, phone_region=args.phone_region,
                        idle_timeout_s=args.idle, print_watch_s=args.print_watch,
                        screenshot_dir=args.screenshot_dir,
                        screenshot_every=args.screenshot_every)
    asyncio.run(run(app, client))


if __name__ == "__main__":
    main()
