"""The app shell the three screens share: the view-model, screenshots, and one asyncio loop
running the window together with the node client's stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.properties import ObjectProperty

from appliance.client import NodeClient, StreamEvent

logger = logging.getLogger(__name__)


#: Logged once the window shows its first frame; the demo waits for it in each app's log.
WINDOW_UP = "SmartQ window up"


class NodeApp(App):
    """A Kivy app showing one view-model fed by its node's stream. Subclasses set ``kv_file``,
    ``title`` and ``screenshot_prefix``, build their root and handle ``on_event``."""

    vm = ObjectProperty(None)
    screenshot_prefix = "smartq"

    def on_start(self) -> None:
        Clock.schedule_once(lambda dt: logger.info("%s: %s", WINDOW_UP, self.title), 0)

    def __init__(self, vm: Any, *, screenshot_dir: Path | None = None,
                 screenshot_every: float = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vm = vm
        self.screenshot_dir = screenshot_dir
        self.screenshot_every = screenshot_every

    def watch_enrollment(self, data_dir: Path, every: float = 2.0) -> None:
        """``--data-dir``: show the "Enroll this device" panel over the window while
        ``enroll-code.json`` is there (and until the node answers after it is gone)."""
        self._enroll_panel: Any = None
        self.vm.bind(enrolling=lambda *_: self._show_enroll_panel())
        self.vm.watch_enrollment(data_dir, every)
        self._show_enroll_panel()

    def _show_enroll_panel(self) -> None:
        from kivy.core.window import Window

        from .enroll import EnrollPanel

        if self.vm.enrolling and self._enroll_panel is None:
            self._enroll_panel = EnrollPanel(vm=self.vm)
            Window.add_widget(self._enroll_panel)
        elif not self.vm.enrolling and self._enroll_panel is not None:
            Window.remove_widget(self._enroll_panel)
            self._enroll_panel = None

    def schedule_screenshots(self) -> None:
        """A PNG of the window every ``screenshot_every`` seconds, if asked for (call in build)."""
        if self.screenshot_dir and self.screenshot_every > 0:
            Clock.schedule_interval(lambda dt: self.screenshot(), self.screenshot_every)

    def screenshot(self, name: str | None = None) -> Path | None:
        if self.screenshot_dir is None or self.root is None:
            return None
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / (name or f"{self.screenshot_prefix}-{time.strftime('%H%M%S')}.png")
        self.root.export_to_png(str(path))
        return path

    def on_state(self, state: dict[str, Any]) -> None:
        """A full picture from ``GET /api/v1/state`` after each (re)connect."""
        self.vm.apply_state(state)

    def on_event(self, event: StreamEvent) -> None:
        """One committed event from the stream."""
        raise NotImplementedError


class FrameBatch:
    """Stream events collected and applied once per frame (bursts come on a reconnect or a
    busy minute); ``add(event, now=True)`` applies at once, in this frame."""

    def __init__(self, apply: Callable[[StreamEvent], None]) -> None:
        self._apply = apply
        self._pending: list[StreamEvent] = []
        self._trigger = Clock.create_trigger(self.flush, 0)

    def add(self, event: StreamEvent, *, now: bool = False) -> None:
        self._pending.append(event)
        if now:
            self.flush()
        else:
            self._trigger()

    def clear(self) -> None:
        """Drop what is pending (a fresh ``/state`` already holds it)."""
        self._pending.clear()

    def flush(self, *_: Any) -> None:
        events, self._pending = self._pending, []
        for event in events:
            self._apply(event)


async def run(app: NodeApp, client: NodeClient, *extra: Coroutine[Any, Any, Any],
              data_dir: Path | None = None) -> None:
    """Run the window and the node stream (plus ``extra`` coroutines) on one asyncio loop
    until the window closes; then stop them and close the client. With ``data_dir``
    (``--data-dir``) the app shows the device's enrollment code while it has one."""
    if data_dir is not None:
        app.watch_enrollment(data_dir)
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
