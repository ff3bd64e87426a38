"""The command line every screen shares: common options, logging, Kivy config, one loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def add_common_args(p: argparse.ArgumentParser, *, node: str, size: str, size_help: str,
                    lang_help: str) -> None:
    """``--node --fullscreen --size --lang --screenshot-dir --screenshot-every``."""
    p.add_argument("--node", default=node, help="the node's local API URL")
    p.add_argument("--fullscreen", action="store_true", help="fill the screen (appliance mode)")
    p.add_argument("--size", default=size, help=size_help)
    p.add_argument("--lang", default="en", help=lang_help)
    p.add_argument("--screenshot-dir", type=Path, help="save screenshots here")
    p.add_argument("--screenshot-every", type=float, default=0, help="seconds between screenshots")


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


def launch(args: argparse.Namespace, title: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Set up logging and Kivy, then run ``start()`` (which imports the app: Kivy's window
    must not be imported before its config is set) on one asyncio loop."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    configure_kivy(args.fullscreen, args.size, title)
    asyncio.run(start())
