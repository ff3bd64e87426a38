"""The full-screen "Enroll this device" panel the three screens share.

While ``smartq enroll`` waits for an admin, the app started with ``--data-dir`` shows the
one-time code in large type and as a QR over its normal screen (the view-model's
``enrolling``, ``enroll_code`` and ``enroll_qr``); it goes away once the code file is gone
and the node answers. Texts come from the app's own catalog (``vm.tr._``)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.lang import Builder
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.image import Image

from .qr import qr_texture


class EnrollQR(Image):
    """``data`` as a QR code; empty data shows nothing."""

    data = StringProperty("")

    def on_data(self, *_: Any) -> None:
        self.texture = qr_texture(self.data) if self.data else None


class EnrollPanel(FloatLayout):
    """Covers the window and swallows every touch while it is shown."""

    vm = ObjectProperty(None)

    def on_touch_down(self, touch: Any) -> bool:
        return True

    def on_touch_move(self, touch: Any) -> bool:
        return True

    def on_touch_up(self, touch: Any) -> bool:
        return True


Factory.register("EnrollQR", cls=EnrollQR)
Factory.register("EnrollPanel", cls=EnrollPanel)

Builder.load_string("""
#:import sp kivy.metrics.sp
<EnrollPanel>:
    canvas.before:
        Color:
            rgba: 0.08, 0.1, 0.14, 1
        Rectangle:
            pos: self.pos
            size: self.size
    BoxLayout:
        orientation: "vertical"
        padding: "32dp"
        spacing: "16dp"
        Label:
            text: root.vm.tr._('Enroll this device') if root.vm else ''
            font_size: "40sp"
            bold: True
            size_hint_y: 0.15
            text_size: self.width, None  # wraps on a narrow window (a portrait kiosk)
            halign: "center"
        Label:
            text: root.vm.enroll_code if root.vm else ''
            font_size: min(sp(96), self.width / 6)  # the nine characters fit a narrow window too
            bold: True
            size_hint_y: 0.25
        EnrollQR:
            data: root.vm.enroll_qr if root.vm else ''
            fit_mode: "contain"
            size_hint_y: 0.45
        Label:
            text: root.vm.tr._('An administrator enters this code at HQ.') if root.vm else ''
            font_size: "24sp"
            size_hint_y: 0.15
            text_size: self.width, None
            halign: "center"
""")
