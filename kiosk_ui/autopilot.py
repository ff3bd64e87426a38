"""A simulated citizen who uses the real kiosk window by touches (the demo's ``--autopilot``).

Every so often, when the kiosk is back at its first screen, it picks a language and a
service and takes a ticket exactly as a person would: synthetic touches dispatched through
Kivy's input loop at the centre of the buttons on screen, a pause on each screen, and
*Finish* on the confirmation. The demo's screenshots then show every screen of the flow.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from kivy.base import EventLoop
from kivy.input.motionevent import MotionEvent

logger = logging.getLogger(__name__)


class Finger(MotionEvent):
    """One synthetic touch at window coordinates (x, y)."""

    def __init__(self, x: float, y: float) -> None:
        win = EventLoop.window
        super().__init__("autopilot", 1, {"x": x / max(1.0, win.width - 1.0),
                                          "y": y / max(1.0, win.height - 1.0)},
                         is_touch=True, type_id="touch")
        self.profile = ["pos"]

    def depack(self, args: dict[str, float]) -> None:
        self.sx, self.sy = args["x"], args["y"]
        super().depack(args)


async def tap(widget: Any) -> None:
    """Press and release at the widget's centre, a frame apart; on a screen taller than the
    window, scrolled into view first, as a person would."""
    from kivy.uix.scrollview import ScrollView

    view = widget.parent
    while view is not None and not isinstance(view, ScrollView):
        view = view.parent if view.parent is not view else None  # the window is its own parent
    if view is not None and view.do_scroll_y:
        view.scroll_to(widget, padding=20, animate=False)
        await asyncio.sleep(0.1)
    finger = Finger(*widget.to_window(*widget.center))
    EventLoop.post_dispatch_input("begin", finger)
    await asyncio.sleep(0.12)
    EventLoop.post_dispatch_input("end", finger)
    await asyncio.sleep(0.1)


class Autopilot:
    """Takes a ticket by touches every ``every_s`` seconds on average (exponential gaps); the
    first citizen comes ``first_s`` after the services show, so whoever starts the demo sees
    the kiosk used at once rather than after a random wait."""

    def __init__(self, app: Any, every_s: float, *, rng: random.Random | None = None,
                 dwell_s: float = 2.5, first_s: float = 1.0) -> None:
        self.app = app
        self.every_s = every_s
        self.rng = rng or random.Random()
        self.dwell_s = dwell_s
        self.first_s = first_s
        self.tickets = 0

    async def run(self) -> None:
        while self.app.root is None or not self.app.vm.services:
            await asyncio.sleep(0.5)
        gap = self.first_s
        while True:
            await asyncio.sleep(gap)
            gap = self.rng.expovariate(1 / self.every_s)
            try:
                if self.app.vm.screen == "language" and not self.app.vm.busy:
                    await self.citizen()
            except Exception:  # a demo helper: never take the kiosk down
                logger.exception("autopilot citizen failed")

    async def citizen(self) -> None:
        vm, ids = self.app.vm, self.app.root.ids
        await tap(self.rng.choice(list(ids.languages.children)))
        for _ in range(6):  # at most a few screens to a ticket, whatever the flow
            await asyncio.sleep(self.dwell_s)
            screen = vm.screen
            if screen == "service":
                buttons = [b for b in ids.services.children if not b.disabled]
                if not buttons:
                    await tap(ids.back_service)
                    return
                await tap(self.rng.choice(buttons))
            elif screen == "details":
                if self.rng.random() < 0.3 and "priority_yes" in ids:
                    await tap(ids.priority_yes)
                    await asyncio.sleep(0.5)
                await tap(ids.take)
            elif screen == "confirm":
                self.tickets += 1
                logger.info("autopilot citizen took %s by touch", vm.ticket_label)
                await asyncio.sleep(self.dwell_s * 2)
                if vm.screen == "confirm":
                    await tap(ids.finish)
                return
            else:
                return
