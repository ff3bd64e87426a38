"""Drives one real Kivy app window by simulated touches (run as a subprocess under Xvfb).

``python -m tests.ui.drive kiosk|counter|display --node URL --out DIR --result FILE ...``

Each app is built exactly as its ``python -m`` entry point builds it; a script coroutine runs
on the same asyncio loop, touches widgets, saves screenshots into ``--out`` and writes what
it saw (and any layout problems found) as JSON into ``--result``. Exit status 0 = script ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ui_common.cli import configure_kivy

logger = logging.getLogger("drive")


async def wait_until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.05)


async def frames(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0.05)


async def tap(widget: Any) -> None:
    """A finger down and up on the widget's centre, through Kivy's input dispatch."""
    from kivy.tests.common import UnitTestTouch

    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    pressed: list[bool] = []
    unbind = widget.fbind("on_press", lambda *_: pressed.append(True)) if hasattr(widget, "on_press") else None
    touch.touch_down()
    await frames(1)
    touch.touch_up()
    await frames(2)
    logger.info("tap %r at %.0f,%.0f pressed=%s", getattr(widget, "text", widget), x, y, pressed)


def walk(widget: Any) -> list[Any]:
    out = [widget]
    for child in widget.children:
        out.extend(walk(child))
    return out


_FONT_TAG = re.compile(r"\[font=([^\]]+)\](.*?)\[/font\]", re.S)
_TAG = re.compile(r"\[/?[a-z]+(=[^\]]*)?\]")
_glyphs: dict[tuple[str, str], bool] = {}


def font_file(name: str, bold: bool = False) -> str | None:
    """The file Kivy draws ``font_name`` from (a registered family, or a resource name)."""
    from kivy.core.text import LabelBase
    from kivy.resources import resource_find

    family = LabelBase._fonts.get(name)
    if family:
        return str(family[2] if bold else family[0])
    return resource_find(name) or resource_find(name + ".ttf")


def has_glyph(path: str, ch: str) -> bool:
    """Whether the font draws ``ch`` (not its "missing" box: the glyph of a private-use
    character, which no UI font defines)."""
    key = (path, ch)
    if key not in _glyphs:
        from PIL import ImageFont

        font = ImageFont.truetype(path, 40)
        missing = font.getmask("\U000F0000")
        mask = font.getmask(ch)
        _glyphs[key] = not (mask.size == missing.size and bytes(mask) == bytes(missing))
    return _glyphs[key]


def missing_glyphs(label: Any) -> str:
    """Characters of a label's text its font has no glyph for (they show as boxes); with
    markup, ``[font=X]...[/font]`` spans are checked against X."""
    spans = [(label.font_name, label.text)]
    if label.markup:
        spans = [(m.group(1), m.group(2)) for m in _FONT_TAG.finditer(label.text)]
        spans.append((label.font_name, _TAG.sub("", _FONT_TAG.sub("", label.text))))
    out = []
    for name, text in spans:
        path = font_file(name, label.bold)
        if path is None:
            out.append(f"(font {name} not found)")
            continue
        out += [ch for ch in set(text) if not ch.isspace() and not has_glyph(path, ch)]
    return "".join(sorted(out))


def layout_problems(root: Any, where: str, *, shortened: bool = False) -> list[str]:
    """Labels whose rendered text is larger than the label or breaks a word across lines,
    anything drawn beyond the window's edge (unless clipped on purpose), and touch targets
    under 9 mm.
    With ``shortened``, a one-line label that Kivy shortens with "..." is a problem too
    (the display: a waiting room cannot read what was cut)."""
    from kivy.core.text import Label as CoreLabel
    from kivy.core.text.markup import MarkupLabel
    from kivy.metrics import mm
    from kivy.uix.behaviors import ButtonBehavior
    from kivy.uix.label import Label
    from kivy.uix.stencilview import StencilView
    from kivy.uix.textinput import TextInput

    problems = []
    rx, ry = root.to_window(root.x, root.y)
    # What a StencilView clips on purpose: a ScrollView's content (it can be scrolled to), the
    # display's ticker (its text runs past both edges).
    clipped = {id(c) for v in walk(root) if isinstance(v, StencilView) for c in walk(v)[1:]}
    for w in walk(root):
        if w.opacity == 0 or w.height <= 1 or w.width <= 1:
            continue
        # Drawn beyond the window's edge: cut off where nobody can see or reach it.
        wx, wy = w.to_window(w.x, w.y)
        if id(w) not in clipped and (wx < rx - 1 or wy < ry - 1 or wx + w.width > rx + root.width + 1
                                     or wy + w.height > ry + root.height + 1):
            problems.append(f"{where}: {type(w).__name__} {getattr(w, 'text', '')[:40]!r} is outside the "
                            f"window ({wx:.0f},{wy:.0f} {w.width:.0f}x{w.height:.0f} in {root.width:.0f}x{root.height:.0f})")
        if shortened and isinstance(w, Label) and w.text and w.shorten:
            core = (MarkupLabel if w.markup else CoreLabel)(text=w.text, font_size=w.font_size, font_name=w.font_name,
                             bold=w.bold, padding=w.padding, markup=w.markup)
            core.refresh()
            if core.texture.size[0] > w.width + 1:
                problems.append(f"{where}: {w.text!r} is cut ('...'): needs {core.texture.size[0]} px, "
                                f"has {w.width:.0f}")
        if isinstance(w, Label) and w.text and (missing := missing_glyphs(w)):
            problems.append(f"{where}: {w.text!r} has characters its font cannot draw: {missing!r}")
        if isinstance(w, Label) and w.text and not w.shorten:
            core = (MarkupLabel if w.markup else CoreLabel)(text=w.text, font_size=w.font_size, font_name=w.font_name,
                             bold=w.bold, italic=w.italic, text_size=w.text_size,
                             halign=w.halign, valign=w.valign, padding=w.padding,
                             line_height=w.line_height, markup=w.markup)
            core.refresh()
            tw, th = core.texture.size
            if tw > w.width + 1 or th > w.height + 1:
                problems.append(f"{where}: {w.text!r} needs {tw}x{th}, has {w.width:.0f}x{w.height:.0f}")
            # A word wider than the lines it wraps to is broken in two ("Efface" / "r").
            wrap = w.text_size[0] if w.text_size and w.text_size[0] else None
            words = set(_TAG.sub("", _FONT_TAG.sub(r"\2", w.text)).split()) if wrap else set()
            for word in (x for x in words if len(x) > 1):  # a single glyph cannot break
                one = CoreLabel(text=word, font_size=w.font_size, font_name=w.font_name, bold=w.bold,
                                italic=w.italic)
                one.refresh()
                if one.texture.size[0] > wrap + 1:
                    problems.append(f"{where}: the word {word!r} is broken across lines: needs "
                                    f"{one.texture.size[0]} px, lines of {wrap:.0f}")
        if isinstance(w, (ButtonBehavior, TextInput)) and not w.disabled:
            if min(w.width, w.height) < mm(9) - 0.5:
                problems.append(f"{where}: touch target {getattr(w, 'text', '')!r} "
                                f"{w.width:.0f}x{w.height:.0f} px < 9 mm ({mm(9):.0f} px)")
    return problems


def _shown(w: Any) -> bool:
    """Visible on screen: neither it nor an ancestor is transparent."""
    while w is not None:
        if getattr(w, "opacity", 1) == 0:
            return False
        w = w.parent if w.parent is not w else None
    return True


def contrast_problems(surface: Any, where: str, png: Path) -> list[str]:
    """Text whose colour has less than 4.5:1 contrast with the pixels actually drawn behind it.

    ``surface`` (the app's root, or a panel over it) is rendered into ``png`` as the window
    shows it; for each visible, enabled label the background is the commonest colour on a
    ring just inside its box (the text itself rarely reaches its edges), and the text colour
    is the label's own, blended over it."""
    from collections import Counter

    from kivy.core.window import Window
    from kivy.uix.label import Label
    from PIL import Image

    from ui_common.theme import contrast

    surface.export_to_png(str(png))
    image = Image.open(png).convert("RGBA")
    width, height = image.size
    pixels = image.load()
    clear = Window.clearcolor  # what shows through where nothing is drawn
    sx, sy = surface.to_window(surface.x, surface.y)

    def colour(x: int, y: int) -> tuple[float, float, float]:
        r, g, b, a = (c / 255 for c in pixels[x, y])
        return (r * a + clear[0] * (1 - a), g * a + clear[1] * (1 - a), b * a + clear[2] * (1 - a))

    problems = []
    for w in walk(surface):
        if not (isinstance(w, Label) and w.text.strip() and not w.disabled and w.width > 6 and w.height > 6
                and _shown(w)):
            continue
        wx, wy = w.to_window(w.x, w.y)
        x0, x1 = max(0, int(wx - sx) + 1), min(width - 1, int(wx - sx + w.width) - 2)
        top, bottom = max(0, int(height - (wy - sy + w.height)) + 1), min(height - 1, int(height - (wy - sy)) - 2)
        if x1 - x0 < 4 or bottom - top < 4:
            continue  # outside the surface (scrolled away)
        ring = [(x, top) for x in range(x0, x1)] + [(x, bottom) for x in range(x0, x1)]
        ring += [(x0, y) for y in range(top, bottom)] + [(x1, y) for y in range(top, bottom)]
        counts = Counter(tuple(round(c, 2) for c in colour(x, y)) for x, y in ring)
        fg_rgba = w.color
        alpha = fg_rgba[3] if len(fg_rgba) > 3 else 1.0
        candidates = [c for c, n in counts.most_common(3) if n >= len(ring) // 10]

        def blended(bg: tuple[float, ...]) -> tuple[float, ...]:
            return tuple(fg_rgba[i] * alpha + bg[i] * (1 - alpha) for i in range(3))

        # The ring's commonest colour is the background, unless it is the text's own colour
        # (big type touching its box): then the next common one.
        bg = next((c for c in candidates if contrast(blended(c), c) > 1.2), candidates[0] if candidates else None)
        if bg is None:
            continue
        ratio = contrast(blended(bg), bg)
        if ratio < 4.5:
            problems.append(f"{where}: {w.text[:40]!r} contrast {ratio:.2f}:1 < 4.5:1 "
                            f"(text {tuple(round(c, 2) for c in fg_rgba[:3])} on {bg})")
    return problems


def check(app: Any, surface: Any, where: str, *, shot: str | None = None, shortened: bool = False) -> list[str]:
    """Layout (labels fit, touch targets >= 9 mm, glyphs drawn) and contrast of what the window
    shows now; ``shot``: keep the rendering as that screenshot."""
    out = app.screenshot_dir
    png = out / f"_check-{os.getpid()}.png"  # the apps share the folder
    problems = layout_problems(surface, where, shortened=shortened) + contrast_problems(surface, where, png)
    if shot:
        png.replace(out / shot)
    return problems


async def enroll_panel_script(app: Any, prefix: str, result: dict[str, Any], *, shortened: bool = False) -> None:
    """``--data-dir`` with a pending enrollment: the panel covers the window, shows the code in
    every language (checked like every screen), swallows touches, and goes once enrolled."""
    from kivy.core.window import Window
    from kivy.uix.behaviors import ButtonBehavior

    from appliance.enroll import CODE_FILE, new_code, qr_text
    from ui_common.i18n import LANGUAGES

    vm = app.vm
    data = Path(tempfile.mkdtemp(prefix=f"smartq-{prefix}-enroll-"))
    code = new_code()
    (data / CODE_FILE).write_text(json.dumps({"code": code, "qr": qr_text(code)}), "utf-8")
    app.watch_enrollment(data, every=0.2)
    await wait_until(lambda: app._enroll_panel is not None, 10, "enroll panel shown")
    panel = app._enroll_panel
    await frames(4)
    # A touch on the screen (on its first enabled button, if it has one) never reaches it.
    target = next((w for w in walk(app.root) if isinstance(w, ButtonBehavior) and not w.disabled and _shown(w)),
                  app.root)
    pressed: list[bool] = []
    app.root.fbind("on_touch_down", lambda *_: pressed.append(True))
    await tap(target)
    problems: list[str] = []
    for lang in LANGUAGES:
        vm.language = lang
        await frames(4)
        problems += check(app, panel, f"{prefix}/{lang}/enroll", shot=f"{prefix}-{lang}-enroll.png",
                          shortened=shortened)
    vm.language = "en"
    texts = [w.text for w in walk(panel) if getattr(w, "text", "")]
    qr = [w for w in walk(panel) if type(w).__name__ == "EnrollQR"]
    qr_drawn = bool(qr) and qr[0].data == qr_text(code) and qr[0].texture is not None
    (data / CODE_FILE).unlink()
    await wait_until(lambda: app._enroll_panel is None, 10, "enroll panel gone once enrolled")
    data.rmdir()
    result["enroll"] = {"covers_window": list(panel.size) == list(Window.size), "code_shown": code in texts,
                        "qr": qr_drawn,
                        "touch_swallowed": not pressed, "gone_after": True, "layout_problems": problems}


# --- scripts ------------------------------------------------------------------------------

async def kiosk_script(app: Any, args: argparse.Namespace, result: dict[str, Any]) -> None:
    from kiosk_ui.i18n import LANGUAGES
    from kiosk_ui.viewmodels import PRINT_MESSAGES, SCREENS

    vm = app.vm
    out = Path(args.out)
    await wait_until(lambda: app.root is not None and vm.services, 30, "kiosk services")
    sm = app.root.ids.sm

    # The checker itself must catch a clipped label and a small button.
    from kivy.uix.button import Button
    from kivy.uix.label import Label

    probe = Label(text="A label far too long for its box", size=(40, 10), font_size=30)
    small = Button(text="x", size=(10, 10), font_size=5)
    boxed = Label(text="\u25cf Yes", size=(400, 100), font_size=20)  # Roboto has no ●
    drawn = Label(text="[font=DejaVuSans]\u25cf[/font] Yes", markup=True, size=(400, 100), font_size=20)
    broken = Label(text="Delete", text_size=(60, None), size=(200, 200), font_size=30)  # "Dele" / "te"
    result["checker_catches"] = [bool(layout_problems(probe, "probe")),
                                 bool(layout_problems(small, "probe")),
                                 bool(layout_problems(boxed, "probe")),
                                 not layout_problems(drawn, "probe"),
                                 bool(layout_problems(broken, "probe"))]

    # Every screen in every language: measure each label, check each touch target.
    problems: list[str] = []
    for lang in LANGUAGES:
        vm.language = lang
        vm.phone_error = vm.t("This phone number is not valid")
        vm.booking_error = vm.t("Unknown booking code")
        vm.error = vm.t("Cannot reach the queue system. Please wait or ask staff.")
        vm.offline = True
        vm.selected_service = vm.services[-1]["id"]
        vm.selected_service_name = max((s["name"] for s in vm.services), key=len)
        vm.ticket = {"id": "20260101-A000", "label": "A000", "people_ahead": 12,
                     "status_url": "https://hq.example.org/t/AAAAAAAAAAAAAAAAAAAAAA",
                     "estimated_wait_s": 3600}
        vm.ticket_label = "A000"
        vm._rebuild_ticket_lines()
        vm.phone = "+250788123456"
        vm.booking_code = "K7Q2MX8A"
        for large in (False, True):  # normal and large-text mode
            vm.large_text = large
            vm.priority = vm.want_sms = large
            # Large text with the longest closed notice (the hours say when it opens).
            vm.closed_text = vm.t("Closed. Opens {day} at {time}.", day="Wednesday", time="08:00") if large else ""
            for screen in SCREENS:
                vm.screen = screen
                # The confirmation in each state of the paper ticket (QR shown or not).
                # Large text: the longest paper-ticket message is enough on the confirmation.
                states = (["failed"] if large else list(PRINT_MESSAGES)) if screen == "confirm" else [""]
                for print_state in states:
                    vm._set_print_state(print_state)
                    await frames(4)
                    where = (f"{lang}/{screen}" + (f"/{print_state}" if print_state else "")
                             + ("/large" if large else ""))
                    # Every screen in every language kept as a screenshot (one per print state).
                    shot = (f"kiosk-{lang}-{screen}{'-' + print_state if print_state else ''}"
                            f"{'-large' if large else ''}.png")
                    problems += check(app, app.root, where, shot=shot)
                    problems += layout_problems(app.root.ids.offline_banner, f"{where}/banner")
        vm.large_text = vm.priority = vm.want_sms = False
        vm.phone = vm.booking_code = vm.closed_text = ""
    result["layout_problems"] = problems
    # After a good print nothing is left where the QR would be: no white box on the screen.
    from PIL import Image

    vm.offline, vm.error = False, ""
    vm.screen = "confirm"
    vm._set_print_state("printed")
    await frames(4)
    png = app.screenshot("kiosk-confirm-printed-clean.png")
    image = Image.open(png).convert("RGB")
    qr = app.root.ids.qr
    x, y = qr.to_window(qr.x, qr.y)
    box = (int(x), int(image.height - y - qr.height), int(x + qr.width), int(image.height - y))
    pixels = list(image.crop(box).getdata()) if qr.width > 1 and qr.height > 1 else [(0, 0, 0)]
    result["printed_white_share"] = sum(p == (255, 255, 255) for p in pixels) / len(pixels)
    vm.reset()
    await frames(4)
    app.screenshot("kiosk-start.png")

    # Each service button shows its pictogram, drawn, inside the button, left of the words.
    from kiosk_ui.pictograms import Pictogram

    vm.screen = "service"
    await frames(4)
    result["pictograms"] = {}
    for b in app.root.ids.services.children:
        pict = next(c for c in b.children if isinstance(c, Pictogram))
        inside = (b.x <= pict.x and pict.right <= b.right and b.y <= pict.y and pict.top <= b.top)
        left_of_words = pict.right <= b.x + b.padding[0]
        result["pictograms"][b.choice_key] = [pict.name, len(pict.canvas.children) > 2, inside, left_of_words]
    app.screenshot("kiosk-en-service-pictograms.png")
    vm.reset()
    await frames(2)

    # A citizen: English, first service, priority, take a ticket: all by touches.
    english = next(b for b in app.root.ids.languages.children if b.text == "English")
    await tap(english)
    await wait_until(lambda: vm.screen == "service", 10, "service screen")
    service_id = args.service
    # Priority: Yes, then one tap on the service takes the ticket.
    await tap(app.root.ids.priority_yes)
    await wait_until(lambda: vm.priority, 10, "priority chosen")
    button = next(b for b in app.root.ids.services.children if b.choice_key == service_id)
    await tap(button)
    await wait_until(lambda: vm.screen == "confirm", 15, "confirmation")
    result["taps_to_ticket"] = 3  # language, priority answer, service
    await frames(4)
    app.screenshot("kiosk-confirm-issued.png")
    result["ticket"] = dict(vm.ticket)
    result["printer_failed"] = vm.printer_failed
    vm.reset()
    await enroll_panel_script(app, "kiosk", result)


async def counter_script(app: Any, args: argparse.Namespace, result: dict[str, Any]) -> None:
    from counter_ui.i18n import LANGUAGES

    vm = app.vm
    await wait_until(lambda: app.root is not None and not vm.offline, 30, "counter connected")
    ids = app.root.ids
    await frames(4)
    problems: list[str] = []
    # The login screen in every language: as it opens, then with an error and the offline note.
    for lang in LANGUAGES:
        vm.language = lang
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/login", shot=f"counter-{lang}-login.png")
        vm.login_error = vm.t("Logged out here; the node could not be told.")
        vm.offline = True
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/login-error", shot=f"counter-{lang}-login-error.png")
        vm.login_error, vm.offline = "", False
    vm.language = "en"
    ids.pin.text = args.pin
    await frames(10)  # the offline banner folds away: let the layout settle before touching
    await tap(ids.login)
    await wait_until(lambda: vm.logged_in, 10, "login")
    await wait_until(lambda: not vm.busy, 10, "login finished")
    await frames(10)
    for lang in LANGUAGES:  # logged in, the counter still closed
        vm.language = lang
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/closed", shot=f"counter-{lang}-closed.png")
    vm.language = "en"
    await frames(4)
    await tap(ids.open)
    await wait_until(lambda: vm.status == "open" and not vm.busy, 10, "counter open")
    await wait_until(lambda: any(w["label"] == args.expect for w in vm.waiting), 30,
                     f"{args.expect} waiting at the counter")
    for lang in LANGUAGES:  # open, the queue shown, nobody called yet
        vm.language = lang
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/open", shot=f"counter-{lang}-open.png")
    vm.language = "en"
    await frames(4)
    app.screenshot("counter-open.png")
    await tap(ids.call_next)
    await wait_until(lambda: vm.current_label == args.expect and not vm.busy, 10, f"{args.expect} called")
    # A second tap at once (inside the guard time, unless this machine is very slow: then it
    # asks to confirm): nothing changes, the screen says why.
    await tap(ids.call_next)
    result["second_tap"] = {"label": vm.current_label, "status": vm.current_status, "notice": vm.notice}
    await frames(4)
    app.screenshot("counter-called.png")
    for lang in LANGUAGES:  # called: recall, start, no-show and undo offered
        vm.language = lang
        vm.notice = vm.t("{label} was just called.", label=vm.current_label)
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/called", shot=f"counter-{lang}-called.png")
    vm.language, vm.notice = "en", ""
    await frames(4)
    await tap(ids.start)
    await wait_until(lambda: vm.current_status == "serving", 10, "serving")
    await frames(4)
    app.screenshot("counter-serving.png")
    result["current"] = dict(vm.current)
    result["buttons"] = {name: not ids[name].disabled for name in
                         ("call_next", "recall", "start", "done", "no_show", "transfer", "undo")}
    for lang in LANGUAGES:  # serving: done and transfer
        vm.language = lang
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/serving", shot=f"counter-{lang}-serving.png")
    # Every language, with the longest notices and the transfer choices open.
    for lang in LANGUAGES:
        vm.language = lang
        # Online: the ticket's details, a no-show waiting for its confirmation, Undo offered.
        vm.current = {**vm.current, "booking_code": "K7Q2MX", "priority": 1, "language": "rw"}
        vm._undo = (vm.current["id"], "A000")
        vm.confirming = "no_show"
        vm.notice = vm.t("{label} has not come. Press Call next again to mark a no-show and call the next ticket.",
                         label="A000")
        vm._rebuild_controls()
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/confirm", shot=f"counter-{lang}-confirm-undo.png")
        vm.confirming, vm.notice, vm._undo = "", "", None
        vm._rebuild_controls()
        vm.error = vm.t("{what}: not allowed ({message}). Log in again.",
                        what=vm.t("Call next"), message=vm.t("staff session expired"))
        vm.superseded_notice = vm.t("{label} was called at {counter} first. Call next.",
                                    label="A000", counter="Counter 3")
        app.root.show_transfer = True
        vm.offline = True
        await frames(4)
        problems += check(app, app.root, f"counter/{lang}/transfer", shot=f"counter-{lang}-transfer.png")
        app.root.show_transfer = False
        vm.error, vm.superseded_notice, vm.offline = "", "", False
    vm.language = "en"
    await frames(4)
    result["layout_problems"] = problems
    await enroll_panel_script(app, "counter", result)


async def display_script(app: Any, args: argparse.Namespace, result: dict[str, Any]) -> None:
    from display_ui.i18n import LANGUAGES
    from display_ui.viewmodels import CROWD_TEXT

    vm = app.vm
    await wait_until(lambda: app.root is not None and not vm.offline, 30, "display connected")
    await frames(4)
    app.screenshot(f"display-{args.size}-waiting.png")
    await wait_until(lambda: vm.newest_label == args.expect, args.timeout, f"{args.expect} on display")
    await frames(6)
    app.screenshot(f"display-{args.size}-called.png")
    result.update(newest_label=vm.newest_label, newest_counter=vm.newest_counter,
                  flashing=vm.flashing, announced=list(vm.announcer.calls))
    # Every language: the call screen (with a direction hint, one recent call still awaited
    # and one being served), and the staff note of a display that lost its node.
    vm.directions = {"c1": "→ 1st floor, left", "c2": "← right"}
    vm._calls += [{"label": "B123", "counter": "c2", "counter_name": "Counter 2"},
                  {"label": "C045", "counter": "c1", "counter_name": "Counter 1"}]
    vm._status["B123"] = "serving"
    vm._rebuild_calls()
    # The branch's notices per language (branch.notices = { en = [...], ... }).
    notices = {lang: f"{lang}: " + vm.t("Staff: this screen is not linked to its device; retrying")
               for lang in LANGUAGES}
    vm._notices_by_language = {lang: [line] for lang, line in notices.items()}
    vm._compose_notices()
    problems: list[str] = []
    result["ticker"] = {}
    for lang in LANGUAGES:
        vm.language = lang
        result["ticker"][lang] = notices[lang] in vm.ticker_text
        for offline in (False, True):
            vm.set_connected(not offline)
            await frames(4)
            state = "offline" if offline else "called"
            result.setdefault("crowd_shown", {})[f"{lang}/{state}"] = (
                app.root.ids.crowd.text == vm.crowd_text == vm.t(CROWD_TEXT[vm.crowd]))
            problems += check(app, app.root, f"display-{args.size}/{lang}/{state}", shortened=True,
                              shot=f"display-{args.size}-{lang}-{state}.png")
    vm.language = "en"
    vm.set_connected(True)
    await frames(4)
    result["layout_problems"] = problems
    await enroll_panel_script(app, f"display-{args.size}", result, shortened=True)


SCRIPTS = {"kiosk": kiosk_script, "counter": counter_script, "display": display_script}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("app", choices=sorted(SCRIPTS))
    p.add_argument("--node", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--size", default="")
    p.add_argument("--service", default="general")
    p.add_argument("--counter", default="c1")
    p.add_argument("--pin", default="1234")
    p.add_argument("--expect", default="")
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    default_size = {"kiosk": "800x1280", "counter": "1280x800", "display": "1920x1080"}[args.app]
    args.size = args.size or default_size
    configure_kivy(False, args.size, args.app)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.app == "kiosk":
        from kiosk_ui.app import build, run

        app, client = build(args.node, screenshot_dir=out)
    elif args.app == "counter":
        from counter_ui.app import build, run  # type: ignore[assignment]

        app, client = build(args.node, args.counter, screenshot_dir=out)  # type: ignore[assignment]
    else:
        from display_ui.app import build, run  # type: ignore[assignment]

        app, client = build(args.node, screenshot_dir=out, notices=["Welcome - SmartQ UI test"])  # type: ignore[assignment]

    result: dict[str, Any] = {"ok": False}

    async def script() -> None:
        try:
            await SCRIPTS[args.app](app, args, result)
            result["ok"] = True
        except Exception:
            result["error"] = traceback.format_exc() + f"\nview-model error: {getattr(app.vm, 'error', '')!r} {getattr(app.vm, 'login_error', '')!r}"
        finally:
            Path(args.result).write_text(json.dumps(result, indent=1, default=str))
            app.stop()

    asyncio.run(run(app, client, script()))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
