"""Kiosk app wiring: the view-model, the .kv layout, the node stream, one asyncio loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.boxlayout import BoxLayout

from appliance.client import NodeClient, StreamEvent
from ui_common import app as shell

from . import widgets  # noqa: F401  (registers ChoiceList, QRImage with the Factory)
from .viewmodels import KioskViewModel, Speaker

logger = logging.getLogger(__name__)

KV = Path(__file__).with_name("kiosk.kv")


class KioskRoot(BoxLayout):
    """The layout root; everything it shows is declared in kiosk.kv."""

    def on_kv_post(self, base_widget: Any) -> None:
        # Bound here rather than in kv: the screens must exist before ``current`` is set.
        vm = App.get_running_app().vm
        sm = self.ids.sm
        sm.current = vm.screen
        vm.bind(screen=lambda _, name: setattr(sm, "current", name))


class KioskApp(shell.NodeApp):
    #: Loaded by App.load_kv before build(); named explicitly so it is loaded once.
    kv_file = str(KV)
    title = "SmartQ kiosk"
    screenshot_prefix = "kiosk"

    def __init__(self, vm: KioskViewModel, **kwargs: Any) -> None:
        super().__init__(vm, **kwargs)
        # A burst of stream events becomes one /state refresh.
        self._refresh = Clock.create_trigger(lambda dt: vm.spawn(vm.refresh()), 0.3)

    def build(self) -> KioskRoot:
        root = KioskRoot()
        Window.bind(on_touch_down=lambda *a: self.vm.touch())
        Clock.schedule_interval(lambda dt: self.vm.check_idle(), 1.0)
        self.schedule_screenshots()
        return root

    def on_event(self, event: StreamEvent) -> None:
        self._refresh()


def build(node: str, *, language: str = "en", speaker: Speaker | None = None,
          phone_region: str | None = "RW", idle_timeout_s: float = 45.0,
          print_watch_s: float = 8.0, screenshot_dir: Path | None = None, screenshot_every: float = 0,
          ) -> tuple[KioskApp, NodeClient]:
    client = NodeClient(node)
    vm = KioskViewModel(client, clock=time.monotonic, speaker=speaker, language=language,
                        phone_region=phone_region, idle_timeout_s=idle_timeout_s,
                        print_watch_s=print_watch_s)
    return KioskApp(vm, screenshot_dir=screenshot_dir, screenshot_every=screenshot_every), client


async def run(app: KioskApp, client: NodeClient, *extra: Coroutine[Any, Any, Any],
              data_dir: Path | None = None) -> None:
    """Run the window, the node stream and ``extra`` on one asyncio loop until the window closes."""
    await shell.run(app, client, *extra, data_dir=data_dir)
