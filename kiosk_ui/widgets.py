"""Small view classes the kiosk layout uses (no I/O, no state of their own)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import ListProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
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


class KeyPad(GridLayout):
    """A pad of big keys (the phone number's digits, the booking code's characters): one
    ``button_class`` button per entry of ``keys``; dispatches ``on_key(key)``. The key
    "back" shows ``back_text`` and deletes."""

    keys = ListProperty([])
    button_class = StringProperty("PadButton")
    back_text = StringProperty("←")

    def __init__(self, **kwargs: Any) -> None:
        self.register_event_type("on_key")
        super().__init__(**kwargs)

    def on_keys(self, *_: Any) -> None:
        self.clear_widgets()
        for key in self.keys:
            button = getattr(Factory, self.button_class)(text=self.back_text if key == "back" else key)
            button.pad_key = key
            button.bind(on_release=lambda b: self.dispatch("on_key", b.pad_key))
            self.add_widget(button)

    def on_back_text(self, *_: Any) -> None:
        for button in self.children:
            if getattr(button, "pad_key", None) == "back":
                button.text = self.back_text

    def on_key(self, key: str) -> None:
        pass


class QRImage(Image):
    """Shows ``data`` as a QR code; empty data shows nothing."""

    data = StringProperty("")

    def on_data(self, *_: Any) -> None:
        self.texture = qr_texture(self.data) if self.data else None


Factory.register("ChoiceList", cls=ChoiceList)
Factory.register("QRImage", cls=QRImage)
Factory.register("KeyPad", cls=KeyPad)
