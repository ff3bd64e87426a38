"""Display app wiring: stream events, coalesced into frames, drive the view-model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kivy.app import App
from kivy.clock import Clock
from kivy.properties import ObjectProperty
from kivy.uix.floatlayout import FloatLayout

from appliance.client import NodeClient, StreamEvent

from . import widgets  # noqa: F401  (registers RowList, Ticker)
from .viewmodels import CALL_EVENTS, Announcer, DisplayViewModel

logger = logging.getLogger(__name__)

KV = Path(__file__).with_name("display.kv")


class DisplayRoot(FloatLayout):
    """Layout root; see display.kv."""


class DisplayApp(App):
    vm = ObjectProperty(None)
    #: Loaded by App.load_kv before build(); named explicitly so it is loaded once.
    kv_file = str(KV)
    title = "SmartQ display"

    def __init__(self, vm: DisplayViewModel, *, screenshot_dir: Path | None = None,
                 screenshot_every: float = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vm = vm
        self.screenshot_dir = screenshot_dir
        self.screenshot_every = screenshot_every
        self.tz: ZoneInfo | None = None
        self._pending: list[StreamEvent] = []
        # Events arrive in bursts (a reconnect, a busy minute); apply them once per frame.
        self._flush = Clock.create_trigger(self._apply_pending, 0)

    def build(self) -> DisplayRoot:
        root = DisplayRoot()
        Clock.schedule_interval(self._tick, 1.0)
        Clock.schedule_interval(self._blink, 0.5)
        if self.screenshot_dir and self.screenshot_every > 0:
            Clock.schedule_interval(lambda dt: self.screenshot(), self.screenshot_every)
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
        self._pending.clear()
        self.vm.apply_state(state)

    def on_event(self, event: StreamEvent) -> None:
        self._pending.append(event)
        if event.type in CALL_EVENTS:
            # A call is what people watch for: show it in this frame, not the next one.
            self._apply_pending(0)
        else:
            self._flush()

    def _apply_pending(self, _: float) -> None:
        events, self._pending = self._pending, []
        for event in events:
            self.vm.apply_event(event)

    def screenshot(self, name: str | None = None) -> Path | None:
        if self.screenshot_dir is None or self.root is None:
            return None
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / (name or f"display-{time.strftime('%H%M%S')}.png")
        self.root.export_to_png(str(path))
        return path


def build(node: str, *, announcer: Announcer | None = None, notices: list[str] | None = None,
          language: str = "en", screenshot_dir: Path | None = None, screenshot_every: float = 0,
          on_call_shown: Callable[[str], None] | None = None,
          ) -> tuple[DisplayApp, NodeClient]:
    client = NodeClient(node)
    vm = DisplayViewModel(announcer=announcer, clock=time.monotonic, notices=notices,
                          language=language, on_call_shown=on_call_shown)
    return DisplayApp(vm, screenshot_dir=screenshot_dir, screenshot_every=screenshot_every), client


async def run(app: DisplayApp, client: NodeClient, *extra: Coroutine[Any, Any, Any]) -> None:
    tasks = [
        asyncio.ensure_future(client.follow(on_state=app.on_state, on_event=app.on_event,
                                            on_connection=app.vm.set_connected)),
        *(asyncio.ensure_future(c) for c in extra),
    ]
    try:
        await app.async_run(async_lib="asyncio")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
