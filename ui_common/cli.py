"""The command line every screen shares: common options, logging, Kivy config, one loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def window_size(text: str) -> str:
    """``--size``: WxH in pixels, e.g. 1280x720 (argparse turns the error into one line)."""
    w, sep, h = text.partition("x")
    if not (sep and w.isdigit() and h.isdigit() and 100 <= int(w) <= 10000 and 100 <= int(h) <= 10000):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 1280x720, got {text!r}")
    return text


def node_url(text: str) -> str:
    """``--node``: the node's local API, an http:// address."""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise argparse.ArgumentTypeError(f"expected an address such as http://127.0.0.1:8401, got {text!r}")
    return text.rstrip("/")


def add_common_args(p: argparse.ArgumentParser, *, node: str, size: str, size_help: str,
                    lang_help: str) -> None:
    """``--node --fullscreen --size --lang --data-dir --screenshot-dir --screenshot-every``."""
    from .languages import LANGUAGES

    p.add_argument("--node", default=node, type=node_url, help="the node's local API URL")
    p.add_argument("--fullscreen", action="store_true", help="fill the screen (appliance mode)")
    p.add_argument("--size", default=size, type=window_size, help=size_help)
    p.add_argument("--lang", default="en", choices=list(LANGUAGES), help=lang_help)
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="the device's data dir: while `smartq enroll` waits for an admin "
                        "(DIR/enroll-code.json), show its code and QR full screen")
    p.add_argument("--screenshot-dir", type=Path, help="save screenshots here")
    p.add_argument("--screenshot-every", type=float, default=0, help="seconds between screenshots")


def configure_kivy(fullscreen: bool, size: str, title: str) -> None:
    """Must run before kivy is first imported.

    Every setting the apps need is set here, so they read no ``~/.kivy/config.ini``: with
    ``KIVY_NO_CONFIG`` Kivy creates no folder at all, and apps started together can no longer
    race to create ``~/.kivy`` (the ``FileExistsError`` that killed windows at the demo's first
    start). Whoever sets ``KIVY_HOME`` gets that folder, created here first (``exist_ok``)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    if os.environ.get("KIVY_HOME"):
        (Path(os.environ["KIVY_HOME"]).expanduser() / "mods").mkdir(parents=True, exist_ok=True)
    else:
        os.environ.setdefault("KIVY_NO_CONFIG", "1")
    from kivy.config import Config

    width, _, height = size.partition("x")
    Config.set("graphics", "width", width)
    Config.set("graphics", "height", height)
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")
    # Touch kiosks have no keyboard: dock Kivy's on-screen keyboard under the fields.
    Config.set("kivy", "keyboard_mode", "dock" if fullscreen else "system")
    Config.set("kivy", "exit_on_escape", "0" if fullscreen else "1")


class NoScreen(SystemExit):
    """The app has no screen to show its window on: one line, exit status 1."""

    def __init__(self, title: str, reason: str) -> None:
        super().__init__(f"{title}: no screen: {reason}")


def choose_video_driver(title: str) -> None:
    """Pick SDL's video driver from the environment before Kivy starts, or stop with one line.

    Left alone, SDL falls back to an *offscreen* driver when there is no X or Wayland display:
    the app then runs without any visible window and never exits (a kiosk started over ssh, or
    a unit started before the screen, looked hung). So: ``SDL_VIDEODRIVER`` set (the appliance
    sets ``kmsdrm``) is kept; otherwise ``DISPLAY`` means ``x11`` and ``WAYLAND_DISPLAY`` means
    ``wayland``; neither is an error. Kivy is held to its ``sdl2`` window, so a driver that
    cannot open fails instead of falling back to another provider."""
    if not sys.platform.startswith("linux"):
        return
    if not os.environ.get("SDL_VIDEODRIVER"):
        if os.environ.get("DISPLAY"):
            os.environ["SDL_VIDEODRIVER"] = "x11"
        elif os.environ.get("WAYLAND_DISPLAY"):
            os.environ["SDL_VIDEODRIVER"] = "wayland"
        else:
            raise NoScreen(title, "DISPLAY and WAYLAND_DISPLAY are unset; start it inside the "
                                  "desktop session, or set SDL_VIDEODRIVER=kmsdrm on a console")
    os.environ.setdefault("KIVY_WINDOW", "sdl2")


class _WindowFailure(logging.Filter):
    """Holds back Kivy's multi-line "no Window provider" report, keeping its reason."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.CRITICAL or "Window" not in record.getMessage():
            return True
        for line in record.getMessage().splitlines():
            if " - " in line and "Error" in line:  # "sdl2 - RuntimeError: b'x11 not available'"
                self.reason = self.reason or line.strip()
        return False


def open_window(title: str) -> None:
    """Create Kivy's window now (after ``configure_kivy``); if it cannot be opened, stop with
    one line naming the driver and the reason instead of Kivy's traceback and a dead app."""
    kivy_log = logging.getLogger("kivy")
    failure = _WindowFailure()
    kivy_log.addFilter(failure)
    try:
        from kivy.core.window import Window
    finally:
        kivy_log.removeFilter(failure)
    if Window is None:
        driver = os.environ.get("SDL_VIDEODRIVER", "default")
        raise NoScreen(title, f"the {driver} video driver cannot open a window"
                              + (f" ({failure.reason})" if failure.reason else ""))


def launch(args: argparse.Namespace, title: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Check there is a screen, set up logging and Kivy, open the window, then run ``start()``
    (which imports the app: Kivy's window must not be imported before its config is set) on
    one asyncio loop."""
    choose_video_driver(title)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    configure_kivy(args.fullscreen, args.size, title)
    open_window(title)
    asyncio.run(start())
