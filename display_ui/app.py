"""Display app wiring: stream events, coalesced into frames, drive the view-model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kivy.clock import Clock
from kivy.uix.floatlayout import FloatLayout

from appliance.client import NodeClient, StreamEvent
from ui_common import app as shell

from . import widgets  # noqa: F401  (registers RowList, Ticker)
from .viewmodels import CALL_EVENTS, Announcer, DisplayViewModel

logger = logging.getLogger(__name__)

KV = Path(__file__).with_name("display.kv")


class DisplayRoot(FloatLayout):
    """Layout root; see display.kv."""


class DisplayApp(shell.NodeApp):
    #: Loaded by App.load_kv before build(); named explicitly so it is loaded once.
    kv_file = str(KV)
    title = "SmartQ display"
    screenshot_prefix = "display"

    def __init__(self, vm: DisplayViewModel, **kwargs: Any) -> None:
        super().__init__(vm, **kwargs)
        self.tz: ZoneInfo | None = None
        # Events arrive in bursts (a reconnect, a busy minute); apply them once per frame.
        self.events = shell.FrameBatch(vm.apply_event)

    def build(self) -> DisplayRoot:
        root = DisplayRoot()
        Clock.schedule_interval(self._tick, 1.0)
        Clock.schedule_interval(self._blink, 0.5)
        self.schedule_screenshots()
        self._tick(0)
        return root

    def _tick(self, _: float) -> None:
        self.vm.tick(datetime.now(self.tz))

    def _blink(self, _: float) -> None:
        if self.root is not None:
            self.root.blink = (not self.root.blink) if self.vm.flashing else False

    def on_state(self, state: dict[str, Any]) -> None:
        tz = (state.get("branch") or {}).get("timezone")
        if tz:
            try:
                self.tz = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                logger.warning("unknown branch timezone %r", tz)
        self.events.clear()
        self.vm.apply_state(state)

    def on_event(self, event: StreamEvent) -> None:
        # A call is what people watch for: show it in this frame, not the next one.
        self.events.add(event, now=event.type in CALL_EVENTS)


def build(node: str, *, announcer: Announcer | None = None, notices: list[str] | None = None,
          language: str = "en", screenshot_dir: Path | None = None, screenshot_every: float = 0,
          on_call_shown: Callable[[str], None] | None = None,
          cycle_languages: tuple[str, ...] | list[str] | None = (), cycle_s: float = 10.0,
          directions: dict[str, str] | None = None,
          ) -> tuple[DisplayApp, NodeClient]:
    """``cycle_languages``: None takes the branch's languages in turn; () keeps one language."""
    client = NodeClient(node)
    vm = DisplayViewModel(announcer=announcer, clock=time.monotonic, notices=notices,
                          language=language, on_call_shown=on_call_shown,
                          cycle_languages=None if cycle_languages is None else list(cycle_languages),
                          cycle_s=cycle_s, directions=directions)
    return DisplayApp(vm, screenshot_dir=screenshot_dir, screenshot_every=screenshot_every), client


async def run(app: DisplayApp, client: NodeClient, *extra: Coroutine[Any, Any, Any],
              data_dir: Path | None = None) -> None:
    """Run the window, the node stream and ``extra`` on one asyncio loop until the window closes."""
    await shell.run(app, client, *extra, data_dir=data_dir)
