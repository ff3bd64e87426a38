"""View classes for the display: the ticker (its lists of rows are ``ui_common.widgets.RowList``)."""

from __future__ import annotations

from typing import Any

from kivy.animation import Animation
from kivy.factory import Factory
from kivy.properties import StringProperty
from kivy.uix.label import Label
from kivy.uix.stencilview import StencilView

from ui_common.widgets import RowList

__all__ = ["RowList", "Ticker"]


class Ticker(StencilView):
    """Scrolls ``text`` right to left, forever, at a readable pace."""

    text = StringProperty("")
    speed = 120.0  # pixels per second

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = Label(size_hint=(None, None), font_size=0)
        self.add_widget(self.label)
        self.bind(text=self._restart, size=self._restart, pos=self._restart)

    def _restart(self, *_: Any) -> None:
        Animation.cancel_all(self.label)
        self.label.text = self.text
        self.label.font_size = self.height * 0.55
        self.label.texture_update()
        self.label.size = self.label.texture_size
        self.label.center_y = self.center_y
        if not self.text:
            return
        self.label.x = self.right
        self._run()

    def _run(self, *_: Any) -> None:
        distance = self.width + self.label.width
        self.label.x = self.right
        anim = Animation(x=self.x - self.label.width, duration=distance / self.speed)
        anim.bind(on_complete=self._run)
        anim.start(self.label)


Factory.register("Ticker", cls=Ticker)
