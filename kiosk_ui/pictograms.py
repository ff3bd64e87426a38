"""The kiosk's service pictograms, drawn as vector shapes on the canvas (no image files): each
a few lines and shapes in a unit square, scaled to the widget, in the colour of the text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kivy.graphics import Color, Ellipse, Line, Rectangle
from kivy.properties import ListProperty, StringProperty
from kivy.uix.widget import Widget

from appliance.config import SERVICE_ICONS

#: Draws into the unit square through ``p(x, y)`` (a point) and ``s(v)`` (a length); ``w`` is the stroke.
Draw = Callable[[Callable[[float, float], tuple[float, float]], Callable[[float], float], float], None]


def _person(p: Any, s: Any, w: float) -> None:
    Ellipse(pos=p(0.34, 0.56), size=(s(0.32), s(0.32)))
    Line(ellipse=(*p(0.14, -0.30), s(0.72), s(0.72), -90, 90), width=w)  # shoulders


def _money(p: Any, s: Any, w: float) -> None:
    Line(rounded_rectangle=(*p(0.04, 0.22), s(0.92), s(0.56), s(0.06)), width=w)
    Line(circle=(*p(0.5, 0.5), s(0.14)), width=w)
    Ellipse(pos=p(0.12, 0.46), size=(s(0.08), s(0.08)))
    Ellipse(pos=p(0.80, 0.46), size=(s(0.08), s(0.08)))


def _document(p: Any, s: Any, w: float) -> None:
    Line(points=[*p(0.2, 0.04), *p(0.8, 0.04), *p(0.8, 0.74), *p(0.62, 0.96), *p(0.2, 0.96)], close=True, width=w)
    for y in (0.66, 0.50, 0.34, 0.18):
        Line(points=[*p(0.32, y), *p(0.68, y)], width=w * 0.8)


def _id_card(p: Any, s: Any, w: float) -> None:
    Line(rounded_rectangle=(*p(0.02, 0.18), s(0.96), s(0.64), s(0.06)), width=w)
    Ellipse(pos=p(0.14, 0.48), size=(s(0.18), s(0.18)))
    Line(ellipse=(*p(0.10, 0.22), s(0.26), s(0.30), -90, 90), width=w)
    for y in (0.62, 0.48, 0.34):
        Line(points=[*p(0.46, y), *p(0.86, y)], width=w * 0.8)


def _health(p: Any, s: Any, w: float) -> None:
    Rectangle(pos=p(0.38, 0.08), size=(s(0.24), s(0.84)))
    Rectangle(pos=p(0.08, 0.38), size=(s(0.84), s(0.24)))


def _info(p: Any, s: Any, w: float) -> None:
    Line(circle=(*p(0.5, 0.5), s(0.46)), width=w)
    Ellipse(pos=p(0.44, 0.66), size=(s(0.12), s(0.12)))
    Rectangle(pos=p(0.45, 0.2), size=(s(0.10), s(0.38)))


def _mail(p: Any, s: Any, w: float) -> None:
    Line(rectangle=(*p(0.04, 0.2), s(0.92), s(0.6)), width=w)
    Line(points=[*p(0.04, 0.8), *p(0.5, 0.42), *p(0.96, 0.8)], width=w)


def _calendar(p: Any, s: Any, w: float) -> None:
    Line(rectangle=(*p(0.06, 0.06), s(0.88), s(0.78)), width=w)
    Rectangle(pos=p(0.06, 0.66), size=(s(0.88), s(0.18)))
    Line(points=[*p(0.28, 0.76), *p(0.28, 0.96)], width=w)
    Line(points=[*p(0.72, 0.76), *p(0.72, 0.96)], width=w)
    for x in (0.18, 0.42, 0.66):
        for y in (0.42, 0.18):
            Rectangle(pos=p(x, y), size=(s(0.14), s(0.12)))


PICTOGRAMS: dict[str, Draw] = {
    "person": _person, "money": _money, "document": _document, "id-card": _id_card,
    "health": _health, "info": _info, "mail": _mail, "calendar": _calendar,
}
assert set(PICTOGRAMS) == set(SERVICE_ICONS), "every configurable icon is drawn"


class Pictogram(Widget):
    """One of ``PICTOGRAMS`` (by ``name``; unknown or "" draws nothing), in ``color``, fitted in
    the largest square of the widget."""

    name = StringProperty("")
    color = ListProperty([1, 1, 1, 1])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bind(pos=self.redraw, size=self.redraw, name=self.redraw, color=self.redraw)

    def redraw(self, *_: Any) -> None:
        self.canvas.clear()
        draw = PICTOGRAMS.get(self.name)
        if draw is None:
            return
        side = min(self.width, self.height)
        x0, y0 = self.center_x - side / 2, self.center_y - side / 2

        def p(x: float, y: float) -> tuple[float, float]:
            return x0 + x * side, y0 + y * side

        def s(v: float) -> float:
            return v * side

        with self.canvas:
            Color(*self.color)
            draw(p, s, max(1.0, side * 0.045))
