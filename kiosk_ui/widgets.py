"""Small view classes the kiosk layout uses (no I/O, no state of their own)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import ListProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.image import Image

from .qr import qr_texture


class ChoiceList(BoxLayout):
    """A column of big buttons, one per item ``{key, text}``; dispatches ``on_choose(key)``."""

    items = ListProperty([])
    button_class = StringProperty("ChoiceButton")

    def __init__(self, **kwargs: Any) -> None:
        self.register_event_type("on_choose")
        super().__init__(**kwargs)

    def on_items(self, *_: Any) -> None:
        self.clear_widgets()
        for item in self.items:
            button = getattr(Factory, self.button_class)(text=item["text"])
            button.choice_key = item["key"]
            button.bind(on_release=lambda b: self.dispatch("on_choose", b.choice_key))
            self.add_widget(button)

    def on_choose(self, key: str) -> None:
        pass


class QRImage(Image):
    """Shows ``data`` as a QR code; empty data shows nothing."""

    data = StringProperty("")

    def on_data(self, *_: Any) -> None:
        self.texture = qr_texture(self.data) if self.data else None


Factory.register("ChoiceList", cls=ChoiceList)
Factory.register("QRImage", cls=QRImage)
