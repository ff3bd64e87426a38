"""Counter app wiring: view-model, layout, keyboard shortcuts, the node stream."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.properties import BooleanProperty
from kivy.uix.boxlayout import BoxLayout

from appliance.client import NodeClient, StreamEvent
from ui_common import app as shell

from . import widgets  # noqa: F401  (registers RowList)
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


class CounterApp(shell.NodeApp):
    kv_file = str(KV)
    title = "SmartQ counter"

    def __init__(self, vm: CounterViewModel, **kwargs: Any) -> None:
        super().__init__(vm, **kwargs)
        self.screenshot_prefix = f"counter-{vm.counter_id}"
        self.events = shell.FrameBatch(vm.apply_event)

    def build(self) -> CounterRoot:
        root = CounterRoot()
        Window.bind(on_key_down=self._on_key)
        Clock.schedule_interval(lambda dt: self.vm.tick(), 1.0)
        self.schedule_screenshots()
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
        self.events.clear()
        self.vm.apply_state(state)

    def on_event(self, event: StreamEvent) -> None:
        self.events.add(event)


def build(node: str, counter: str, *, login_required: bool = True, language: str = "en",
          screenshot_dir: Path | None = None, screenshot_every: float = 0,
          ) -> tuple[CounterApp, NodeClient]:
    client = NodeClient(node)
    vm = CounterViewModel(client, counter, now=lambda: datetime.now(UTC),
                          login_required=login_required, language=language)
    return CounterApp(vm, screenshot_dir=screenshot_dir, screenshot_every=screenshot_every), client


async def run(app: CounterApp, client: NodeClient, *extra: Coroutine[Any, Any, Any],
              data_dir: Path | None = None) -> None:
    """Run the window, the node stream and ``extra`` on one asyncio loop until the window closes."""
    await shell.run(app, client, *extra, data_dir=data_dir)
