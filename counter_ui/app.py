"""Counter app wiring: view-model, layout, keyboard shortcuts, the node stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.properties import BooleanProperty, ObjectProperty
from kivy.uix.boxlayout import BoxLayout

from appliance.client import NodeClient, StreamEvent

from . import widgets  # noqa: F401  (registers CounterRowList)
from .viewmodels import CounterViewModel

logger = logging.getLogger(__name__)

KV = Path(__file__).with_name("counter.kv")


class CounterRoot(BoxLayout):
    show_transfer = BooleanProperty(False)

    def on_kv_post(self, base_widget: Any) -> None:
        vm = App.get_running_app().vm
        sm = self.ids.sm

        def screen(*_: Any) -> None:
            sm.current = "main" if vm.logged_in else "login"

        vm.bind(logged_in=screen)
        screen()


class CounterApp(App):
    vm = ObjectProperty(None)
    kv_file = str(KV)
    title = "SmartQ counter"

    def __init__(self, vm: CounterViewModel, *, screenshot_dir: Path | None = None,
                 screenshot_every: float = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vm = vm
        self.screenshot_dir = screenshot_dir
        self.screenshot_every = screenshot_every
        self._pending: list[StreamEvent] = []
        self._flush = Clock.create_trigger(self._apply_pending, 0)

    def build(self) -> CounterRoot:
        root = CounterRoot()
        Window.bind(on_key_down=self._on_key)
        Clock.schedule_interval(lambda dt: self.vm.tick(), 1.0)
        if self.screenshot_dir and self.screenshot_every > 0:
            Clock.schedule_interval(lambda dt: self.screenshot(), self.screenshot_every)
        return root

    def _on_key(self, window: Any, key: int, scancode: int, codepoint: str | None,
                modifiers: list[str]) -> bool:
        """Shortcuts work once logged in (the login screen's PIN field gets the keys)."""
        if not self.vm.logged_in or self.root is None:
            return False
        name = window._system_keyboard.keycode_to_string(key) or (codepoint or "")
        if name == "t":
            self.root.show_transfer = not self.root.show_transfer
            return True
        if name == "w":
            if self.vm.services:
                self.vm.spawn(self.vm.issue_walkin(self.vm.services[0]["id"]))
            return True
        return self.vm.handle_key(name)

    def on_state(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        self.vm.apply_state(state)

    def on_event(self, event: StreamEvent) -> None:
        self._pending.append(event)
        self._flush()

    def _apply_pending(self, _: float) -> None:
        events, self._pending = self._pending, []
        for event in events:
            self.vm.apply_event(event)

    def screenshot(self, name: str | None = None) -> Path | None:
        if self.screenshot_dir is None or self.root is None:
            return None
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / (name or f"counter-{self.vm.counter_id}-{time.strftime('%H%M%S')}.png")
        self.root.export_to_png(str(path))
        return path


def build(node: str, counter: str, *, login_required: bool = True, language: str = "en",
          screenshot_dir: Path | None = None, screenshot_every: float = 0,
          ) -> tuple[CounterApp, NodeClient]:
    client = NodeClient(node)
    vm = CounterViewModel(client, counter, now=lambda: datetime.now(UTC),
                          login_required=login_required, language=language)
    return CounterApp(vm, screenshot_dir=screenshot_dir, screenshot_every=screenshot_every), client


async def run(app: CounterApp, client: NodeClient, *extra: Coroutine[Any, Any, Any]) -> None:
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
