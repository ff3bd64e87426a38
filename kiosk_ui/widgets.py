"""Small view classes the kiosk layout uses (no I/O, no state of their own)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import ListProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.scrollview import ScrollView

from .pictograms import Pictogram
from ui_common.qr import qr_texture


class Choices:
    """Mixin for a layout of big buttons, one per item ``{key, text}`` of ``items``, made from
    ``button_class``; a press dispatches ``on_choose(key)``. An item's ``icon`` (a
    ``pictograms`` name) goes to the button's ``icon`` (``ServiceButton`` shows it)."""

    items = ListProperty([])
    button_class = StringProperty("ChoiceButton")

    def __init__(self, **kwargs: Any) -> None:
        self.register_event_type("on_choose")  # type: ignore[attr-defined]
        super().__init__(**kwargs)

    def on_items(self, *_: Any) -> None:
        self.clear_widgets()  # type: ignore[attr-defined]
        for item in self.items:
            button = getattr(Factory, self.button_class)(text=item["text"])
            if "icon" in item:  # a property of the .kv rule: it exists once the button is made
                button.icon = item["icon"]
            button.choice_key = item["key"]
            button.bind(on_release=lambda b: self.dispatch("on_choose", b.choice_key))  # type: ignore[attr-defined]
            self.add_widget(button)  # type: ignore[attr-defined]

    def on_button_class(self, *_: Any) -> None:
        self.on_items()

    def on_choose(self, key: str) -> None:
        pass


class ChoiceList(Choices, BoxLayout):
    """A column of big buttons (languages, services)."""


class KeyPad(Choices, GridLayout):
    """A pad of big keys (the phone number's digits, the booking code's characters), one per
    entry of ``keys``; the key "back" shows ``back_text`` and deletes."""

    keys = ListProperty([])
    back_text = StringProperty("←")

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("button_class", "PadButton")
        super().__init__(**kwargs)

    def on_keys(self, *_: Any) -> None:
        self.items = [{"key": k, "text": self.back_text if k == "back" else k} for k in self.keys]

    on_back_text = on_keys


class QRImage(Image):
    """Shows ``data`` as a QR code; empty data shows nothing."""

    data = StringProperty("")

    def on_data(self, *_: Any) -> None:
        self.texture = qr_texture(self.data) if self.data else None


class ScreenScroll(ScrollView):
    """A screen's content (its one child, a vertical layout): as tall as the screen, its
    spacers taking what is left, or as tall as its content needs and then scrollable, on a
    small screen, in a long language or with larger text, so that its top (the questions) and
    its bottom (Back) can both be reached. When it fits, touches go straight to the buttons,
    as without it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("do_scroll_x", False)
        kwargs.setdefault("always_overscroll", False)
        super().__init__(**kwargs)
        self.bind(height=self._fit)

    def add_widget(self, widget: Any, *args: Any, **kwargs: Any) -> None:
        super().add_widget(widget, *args, **kwargs)
        widget.size_hint_y = None
        widget.bind(minimum_height=self._fit)
        self._fit()

    def _fit(self, *_: Any) -> None:
        content = self.children[0] if self.children else None
        if content is not None:
            content.height = max(content.minimum_height, self.height)
        self.do_scroll_y = content is not None and content.height > self.height + 1
        if not self.do_scroll_y:
            self.scroll_y = 1.0

    def to_top(self) -> None:
        """Back to the top (a screen shown anew starts with its first question)."""
        self.scroll_y = 1.0


Factory.register("ChoiceList", cls=ChoiceList)
Factory.register("ScreenScroll", cls=ScreenScroll)
Factory.register("QRImage", cls=QRImage)
Factory.register("KeyPad", cls=KeyPad)
Factory.register("Pictogram", cls=Pictogram)
