"""The shared UI base: an observable translation that ``.kv`` rules follow, and the base
view-model's language switch."""

from __future__ import annotations

import gc
import json
from pathlib import Path

from kivy.lang import Builder
from kivy.properties import StringProperty
from kivy.uix.widget import Widget

from counter_ui.i18n import CATALOGS as COUNTER
from display_ui.viewmodels import DisplayViewModel
from appliance.enroll import CODE_FILE, new_code, qr_text
from display_ui.i18n import CATALOGS as DISPLAY
from kiosk_ui.i18n import CATALOGS as KIOSK
from ui_common import enroll as enroll_panel
from ui_common.i18n import LANGUAGES, Translation, used_msgids


class Holder(Widget):
    text = StringProperty("")
    tr = None


Builder.load_string("""
<Holder>:
    text: self.tr._('Log in') + ' / ' + self.tr._('{n} waiting', n=3)
""")


def test_a_kv_rule_bound_to_the_translation_follows_a_language_switch() -> None:
    Holder.tr = Translation(COUNTER, "en")
    try:
        w = Holder()
        assert w.text == "Log in / 3 waiting"
        Holder.tr.switch("fr")
        assert w.text.split(" / ")[0] == COUNTER.translator("fr")("Log in") != "Log in"
        Holder.tr.switch("en")
        assert w.text.startswith("Log in")
    finally:
        Holder.tr = None


def test_rules_of_widgets_that_are_gone_are_dropped_on_the_next_switch() -> None:
    tr = Translation(COUNTER, "en")
    Holder.tr = tr
    try:
        w = Holder()
        assert tr.observers == 1  # one per rule, however many names it reads
        del w
        gc.collect()
        tr.switch("sw")
        assert tr.observers == 0
    finally:
        Holder.tr = None


def test_view_model_language_switch_translates_its_own_rows() -> None:
    vm = DisplayViewModel(clock=lambda: 0.0, language="en")
    vm.apply_state({"services": [{"id": "general", "letter": "A", "names": {"en": "General", "fr": "Général"}}],
                    "counters": [], "waiting": []})
    assert vm.services[0]["name"] == "General" and vm.crowd_text == "Low"
    vm.language = "fr"
    assert vm.services[0]["name"] == "Général"
    assert vm.tr.language == "fr" and vm.crowd_text == vm.t("Low") != "Low"


def test_the_view_model_shows_the_enroll_code_while_the_file_is_there(tmp_path: Path) -> None:
    """``--data-dir``: the code ``smartq enroll`` writes is shown until the file is gone and
    the node answers."""
    vm = DisplayViewModel(clock=lambda: 0.0, language="en")
    vm.poll_enrollment(tmp_path)
    assert vm.enroll_code == "" and not vm.enrolling
    code = new_code()
    (tmp_path / CODE_FILE).write_text(json.dumps({"code": code, "qr": qr_text(code)}), "utf-8")
    event = vm.watch_enrollment(tmp_path, every=2.0)  # polls now, then on the Kivy clock
    try:
        assert vm.enroll_code == code and vm.enroll_qr == qr_text(code) and vm.enrolling
        (tmp_path / CODE_FILE).unlink()
        vm.poll_enrollment(tmp_path)
        assert vm.enroll_code == "" and vm.enroll_qr == ""
        assert vm.enrolling  # the node is not up yet: keep the panel
        vm.set_connected(True)
        assert not vm.enrolling
    finally:
        event.cancel()


def test_the_enroll_panel_texts_are_in_every_apps_catalogs() -> None:
    used = used_msgids(Path(enroll_panel.__file__))
    assert used == {"Enroll this device", "An administrator enters this code at HQ."}
    for catalogs in (COUNTER, DISPLAY, KIOSK):
        assert used <= set(catalogs.template_ids())
        for lang in LANGUAGES:
            assert used <= set(catalogs.messages(lang)), (catalogs.domain, lang)


def test_the_enroll_panel_shows_the_code_in_the_screens_language() -> None:
    vm = DisplayViewModel(clock=lambda: 0.0, language="fr")
    vm.enroll_code = "7KQ2-M9XD"
    panel = enroll_panel.EnrollPanel(vm=vm)
    texts = [w.text for w in panel.walk() if hasattr(w, "text")]
    assert texts == [DISPLAY.translator("fr")("Enroll this device"), "7KQ2-M9XD",
                     DISPLAY.translator("fr")("An administrator enters this code at HQ.")]
    assert texts[0] != "Enroll this device"
    vm.language = "sw"
    assert [w.text for w in panel.walk() if hasattr(w, "text")][0] == "Sajili kifaa hiki"
