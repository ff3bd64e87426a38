"""List widgets the counter and display layouts share."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import ListProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout


class RowList(BoxLayout):
    """One ``row_class`` widget per item of ``items``; item keys set the row's matching
    properties. Rows dispatch nothing themselves: their buttons call back
    ``row.owner.dispatch("on_pick", key)`` (rows with an ``owner`` property get this list)."""

    items = ListProperty([])
    row_class = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        self.register_event_type("on_pick")
        super().__init__(**kwargs)

    def on_items(self, *_: Any) -> None:
        self.clear_widgets()
        for item in self.items:
            row = getattr(Factory, self.row_class)()
            for key, value in item.items():
                if row.property(key, quiet=True) is not None:
                    setattr(row, key, value)
            if row.property("owner", quiet=True) is not None:
                row.owner = self
            self.add_widget(row)

    def on_pick(self, key: str) -> None:
        pass


Factory.register("RowList", cls=RowList)
