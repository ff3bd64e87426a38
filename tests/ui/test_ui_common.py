"""The shared UI base: an observable translation that ``.kv`` rules follow, and the base
view-model's language switch."""

from __future__ import annotations

import gc

from kivy.lang import Builder
from kivy.properties import StringProperty
from kivy.uix.widget import Widget

from counter_ui.i18n import CATALOGS as COUNTER
from display_ui.viewmodels import DisplayViewModel
from ui_common.i18n import Translation


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
