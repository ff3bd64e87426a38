"""Kiosk view-model against real ``smartq node`` processes (and real printers on 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.client import NodeClient
from hardware.fake_network_printer import FakeNetworkPrinter
from kiosk_ui.i18n import KIOSK, LANGUAGES
from ui_common.i18n import used_msgids
from kiosk_ui.viewmodels import (
    PRINT_MESSAGES,
    PRINT_MESSAGES_NO_QR,
    KioskViewModel,
    SilentSpeaker,
    normalize_phone,
    print_outcome,
    print_state_of_reply,
)
from tests.appliance.procs import NodeProcess

from .conftest import (
    PUBLIC_URL,
    Nodes,
    free_port,
    network_printer,
    set_hardware,
    staff_client,
    wait_for,
    with_public_url,
)

KIOSK_DIR = Path(__file__).resolve().parents[2] / "kiosk_ui"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_vm(client: NodeClient, clock: FakeClock, **kw: object) -> KioskViewModel:
    return KioskViewModel(client, clock=clock, speaker=SilentSpeaker(), phone_region="RW",
                          print_poll_s=0.1, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def vm(client: NodeClient, clock: FakeClock) -> KioskViewModel:
    vm = make_vm(client, clock)
    await vm.refresh()
    return vm


async def test_services_show_waiting_count_and_estimate(vm: KioskViewModel, client: NodeClient) -> None:
    before = {s["id"]: s["waiting"] for s in vm.services}
    await client.issue_ticket("documents")
    await client.issue_ticket("documents")
    await vm.refresh()
    docs = next(s for s in vm.services if s["id"] == "documents")
    assert docs["waiting"] == before["documents"] + 2
    assert docs["waiting_text"] == f"Waiting: {docs['waiting']}"
    # No counter serving documents is open: no promise of "No wait".
    assert docs["wait_text"] == "No counter open now" and not docs["open"]
    staff = await staff_client(client.base_url, "c2", "2345")
    try:
        await staff.set_counter_status("c2", "open")
        await vm.refresh()
        docs = next(s for s in vm.services if s["id"] == "documents")
        assert docs["open"] and docs["wait_text"].startswith("About ") and docs["wait_text"].endswith(" min")
    finally:
        await staff.set_counter_status("c2", "close")
        await staff.close()


async def test_walk_in_with_priority_and_phone_is_issued_in_the_chosen_language(
    vm: KioskViewModel, client: NodeClient
) -> None:
    vm.choose_language("fr")
    assert vm.screen == "service"
    assert vm.services[0]["name"] == "Renseignements généraux"
    vm.choose_service("general")
    vm.set_priority(True)
    vm.set_phone("0788 123 456")
    assert await vm.issue()
    assert vm.screen == "confirm" and vm.ticket_label.startswith("A")
    issued = await client.ticket(vm.ticket["id"])
    assert issued["priority"] == 1 and issued["language"] == "fr"
    assert vm.ticket_lines[0] == "Veuillez attendre d'être appelé"


async def test_a_ticket_the_printer_confirmed_hides_the_qr(vm: KioskViewModel) -> None:
    """The shared node's sample printer takes every job: "queued", then printed."""
    vm.choose_language("en")
    vm.choose_service("payments")
    assert await vm.issue()
    assert vm.ticket["print"]["status"] == "queued"
    # Until the printer confirms, the number and its QR stay on screen.
    # The QR is the ticket's status page at HQ, the link printed on the paper too.
    assert vm.ticket["status_url"].startswith(PUBLIC_URL + "/t/")
    assert vm.print_state == "checking" and vm.show_qr and vm.qr_payload == vm.ticket["status_url"]
    await wait_for(lambda: vm.print_state != "checking", what="print outcome")
    assert vm.print_state == "printed"
    assert not vm.show_qr and not vm.printer_failed and vm.qr_payload == ""
    assert vm.print_message == "Please take your printed ticket."


async def test_invalid_phone_is_refused_before_anything_is_sent(vm: KioskViewModel, client: NodeClient) -> None:
    vm.choose_language("en")
    vm.choose_service("payments")
    waiting = len((await client.state())["waiting"])
    vm.set_phone("12")
    assert not await vm.issue()
    assert vm.phone_error == "This phone number is not valid"
    assert len((await client.state())["waiting"]) == waiting and vm.screen == "details"


def test_phone_numbers_are_normalized_to_e164() -> None:
    assert normalize_phone("0788 123 456", "RW") == "+250788123456"
    assert normalize_phone("+33 6 12 34 56 78", "RW") == "+33612345678"
    assert normalize_phone("hello", "RW") is None


async def test_400_and_409_replies_are_messages_not_crashes(nodes: Nodes, clock: FakeClock) -> None:
    """A misconfigured device: its branch offers only en and fr (the kiosk offers five
    languages: 400), and it has no ticket number range (it is the display: 409)."""

    def two_languages(config: Path) -> None:
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('languages = ["en", "fr", "rw", "sw", "es"]',
                                       'languages = ["en", "fr"]'), encoding="utf-8")

    node = nodes.start("display", edit=two_languages)
    async with NodeClient(node.url) as client:
        vm = make_vm(client, clock)
        await vm.refresh()
        vm.choose_language("es")
        vm.choose_service("general")
        assert not await vm.issue()
        assert vm.error == "Algo salió mal. Pregunte al personal." and vm.screen == "details"
        vm.reset()
        vm.choose_language("fr")
        vm.choose_service("general")
        assert not await vm.issue()
        assert vm.error == "Un problème est survenu. Demandez au personnel." and vm.screen == "details"


async def test_unknown_service_404_is_a_message(vm: KioskViewModel) -> None:
    vm.choose_language("en")
    vm.selected_service = "closed-service"
    assert not await vm.issue()
    assert vm.error == "Something went wrong. Please ask staff." and vm.screen != "confirm"


async def test_unknown_booking_code(vm: KioskViewModel) -> None:
    vm.choose_language("en")
    vm.go("booking")
    vm.set_booking_code("nope1")
    assert vm.booking_code == "NOPE1"
    assert not await vm.issue_booking()
    assert vm.booking_error == "Unknown booking code" and vm.screen == "booking"


async def test_booking_qr_checks_in_offline_with_the_hq_key(nodes: Nodes, clock: FakeClock) -> None:
    """HQ is unreachable (nothing listens at its URL); the kiosk checks in a booking from its
    signed QR token, which must reach the node exactly as scanned (its case is signed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.keys import public_key_text
    from sync.tokens import sign_token

    hq = Ed25519PrivateKey.generate()

    def with_hq(config: Path) -> None:
        with config.open("a", encoding="utf-8") as fh:
            fh.write(f'\n[hq]\nurl = "http://127.0.0.1:{free_port()}"\n'
                     f'public_key = "{public_key_text(hq.public_key())}"\nnightly = false\n')

    node = nodes.start("kiosk", edit=with_hq)
    start = int(time.time()) + 600
    token = sign_token(hq, {"typ": "booking", "code": "ABCD-2345", "branch": "kigali-main",
                            "service": "payments", "start": start, "end": start + 900,
                            "exp": start + 3600})
    async with NodeClient(node.url) as client:
        vm = make_vm(client, clock)
        await vm.refresh()
        vm.choose_language("en")
        vm.go("booking")
        vm.set_booking_code(f"  {token}\n")
        assert await vm.issue_booking()
        assert vm.screen == "confirm"
        assert vm.ticket["booking_code"] == "ABCD-2345" and vm.ticket["service"] == "payments"
        vm.reset()
        vm.go("booking")
        vm.set_booking_code(token)
        assert not await vm.issue_booking()  # already checked in: 409
        assert vm.booking_error == "Unknown booking code"


async def test_node_unreachable_is_shown_and_nothing_crashes(dead_client: NodeClient, clock: FakeClock) -> None:
    vm = KioskViewModel(dead_client, clock=clock)
    await vm.refresh()
    assert vm.offline
    vm.selected_service = "general"
    assert not await vm.issue()
    assert vm.error.startswith("Cannot reach the queue system")


async def test_a_stopped_node_shows_offline_and_keeps_what_it_knew(nodes: Nodes, clock: FakeClock) -> None:
    node = nodes.start("kiosk")
    async with NodeClient(node.url, timeout=2.0) as client:
        vm = make_vm(client, clock)
        await vm.refresh()
        assert not vm.offline and vm.services
        node.stop()
        vm.choose_language("en")
        vm.choose_service("general")
        assert not await vm.issue()
        assert vm.offline and vm.screen == "details"
        assert vm.services  # what it knew stays on screen


async def test_idle_kiosk_returns_to_the_start(vm: KioskViewModel, clock: FakeClock) -> None:
    vm.choose_language("rw")
    vm.choose_service("general")
    vm.set_phone("0788")
    clock.now += 30
    assert not vm.check_idle()
    clock.now += 20
    assert vm.check_idle()
    assert vm.screen == "language" and vm.phone == "" and vm.language == "en"


async def test_audio_guidance_speaks_each_option(vm: KioskViewModel) -> None:
    speaker = vm.speaker
    assert isinstance(speaker, SilentSpeaker)
    vm.toggle_audio()
    assert [t for t, _ in speaker.said] == list(LANGUAGES.values())
    speaker.said.clear()
    vm.choose_language("fr")
    said = [t for t, _ in speaker.said]
    assert said[0] == "Choisissez un service"
    assert any(s.startswith("Renseignements") for s in said)
    assert all(lang == "fr" for _, lang in speaker.said)


# --- the paper ticket against printers that misbehave -----------------------------------------

async def issue_one(node: NodeProcess, clock: FakeClock, language: str = "en", **kw: object) -> KioskViewModel:
    client = NodeClient(node.url)
    vm = make_vm(client, clock, **kw)
    await vm.refresh()
    vm.choose_language(language)
    vm.choose_service("general")
    assert await vm.issue()
    return vm


@pytest.mark.slow
async def test_a_printer_that_jams_after_queued_leaves_the_ticket_on_screen(nodes: Nodes, clock: FakeClock) -> None:
    """The printer answers its status (so the job is "queued"), then stops reading mid-ticket."""
    with FakeNetworkPrinter(port=0, hang_after=60) as jammed:
        node = nodes.start("kiosk", edit=lambda c: (set_hardware(c, network_printer(jammed.port)),
                                                     with_public_url(c)))
        vm = await issue_one(node, clock, "fr", print_watch_s=15)
        try:
            assert vm.ticket["print"]["status"] == "queued"
            assert vm.print_state == "checking" and vm.show_qr
            await wait_for(lambda: vm.print_state != "checking", 20, "print outcome")
            assert vm.print_state == "failed" and vm.printer_failed
            assert vm.show_qr and vm.qr_payload == vm.ticket["status_url"]
            assert vm.print_message == ("L'imprimante ne fonctionne pas. "
                                        "Notez votre numéro ou scannez ce code.")
            # The node now knows: the next ticket is refused at once (201 "failed").
            vm.reset()
            vm.choose_language("en")
            vm.choose_service("general")
            assert await vm.issue()
            assert vm.ticket["print"]["status"] == "failed" and vm.print_state == "failed"
        finally:
            await vm.client.close()


@pytest.mark.slow
async def test_a_refusing_printer_leaves_the_ticket_on_screen(nodes: Nodes, clock: FakeClock) -> None:
    """Nothing listens at the printer's address (unplugged, switched off)."""
    port = free_port()
    node = nodes.start("kiosk", edit=lambda c: (set_hardware(c, network_printer(port)), with_public_url(c)))
    vm = await issue_one(node, clock, print_watch_s=15)
    try:
        assert vm.ticket["print"]["status"] in ("queued", "failed")
        await wait_for(lambda: vm.print_state != "checking", 20, "print outcome")
        assert vm.print_state == "failed" and vm.show_qr and vm.qr_payload == vm.ticket["status_url"]
    finally:
        await vm.client.close()


@pytest.mark.slow
async def test_a_print_not_confirmed_in_time_is_not_promised(nodes: Nodes, clock: FakeClock) -> None:
    """A jam the node detects only after the kiosk stopped watching: "unconfirmed"."""
    with FakeNetworkPrinter(port=0, hang_after=60) as jammed:
        def slow_jam(config: Path) -> None:
            # The node gives up on a silent printer after these timeouts: long after the
            # kiosk stopped watching. (Stopping the printer at the end ends the job.)
            slow = network_printer(jammed.port).replace("write_timeout = 1.0", "write_timeout = 30.0")
            set_hardware(config, slow.replace("status_timeout = 0.5", "status_timeout = 30.0"))
            with_public_url(config)

        node = nodes.start("kiosk", edit=slow_jam)
        vm = await issue_one(node, clock, print_watch_s=0.5)
        try:
            assert vm.print_state == "checking"
            assert await vm._print_watch == "unconfirmed"  # type: ignore[misc]
            assert vm.printer_failed and vm.show_qr
            assert vm.print_message == "If no ticket came out, note your number or scan this code."
        finally:
            await vm.client.close()


async def test_a_kiosk_without_a_printer_shows_the_ticket(nodes: Nodes, clock: FakeClock) -> None:
    """No printer and no status page configured: the number alone, no QR, no "scan this"."""
    node = nodes.start("kiosk", edit=lambda c: set_hardware(c, ""))
    vm = await issue_one(node, clock, "sw")
    try:
        assert vm.ticket["print"]["status"] == "no_printer" and vm.ticket["status_url"] is None
        assert vm.print_state == "no_printer" and vm.printer_failed and not vm.show_qr
        assert vm.qr_payload == "" and vm.ticket_label
        assert vm.print_message == vm.t("Please note your number.") != "Please note your number."
        vm.reset()
        assert vm.print_state == "" and not vm.show_qr and vm.print_message == ""
    finally:
        await vm.client.close()


def test_print_verdicts_from_the_reply_and_from_state() -> None:
    assert print_state_of_reply({"print": {"status": "queued", "job": "j1"}}) == "checking"
    assert print_state_of_reply({"print": {"status": "no_printer"}}) == "no_printer"
    assert print_state_of_reply({"print": {"status": "failed", "message": "offline"}}) == "failed"
    assert print_state_of_reply({}) == "failed"  # a node that does not say: no promise
    ok = {"status": "ok", "last_job": {"job": "j1", "ok": True}, "last_failed_job": None}
    assert print_outcome({"printer": ok}, "j1") == "printed"
    assert print_outcome({"printer": ok}, "j2") is None  # still queued behind j1
    jam = {"status": "error", "last_job": {"job": "j1", "ok": True}, "last_failed_job": None}
    assert print_outcome({"printer": jam}, "j2") == "failed"
    lost = {"status": "ok", "last_job": {"job": "j3", "ok": True},
            "last_failed_job": {"job": "j2", "ok": False}}
    assert print_outcome({"printer": lost}, "j2") == "failed"
    assert print_outcome({"printer": None}, "j2") == "failed"


def test_every_language_translates_every_message() -> None:
    ids = KIOSK.template_ids()
    for lang in LANGUAGES:
        missing = [i for i in ids if i not in KIOSK.messages(lang)]
        assert not missing, (lang, missing)


def test_every_message_the_kiosk_shows_is_in_the_template() -> None:
    used = used_msgids(KIOSK_DIR / "kiosk.kv", KIOSK_DIR / "viewmodels.py") | set(PRINT_MESSAGES.values()) | set(PRINT_MESSAGES_NO_QR.values())
    assert used - set(KIOSK.template_ids()) == set()


async def test_one_tap_on_a_service_takes_a_ticket_with_the_priority_answer(
    vm: KioskViewModel, client: NodeClient
) -> None:
    vm.choose_language("en")
    vm.set_priority(True)  # "Priority ...?" answered Yes on the same screen
    assert await vm.tap_service("general")
    assert vm.screen == "confirm" and vm.ticket["priority"] == 1 and vm.ticket["service"] == "general"
    vm.reset()
    assert not vm.priority and not vm.want_sms and not vm.large_text


async def test_an_sms_alert_asks_for_the_phone_on_a_number_pad(vm: KioskViewModel) -> None:
    vm.choose_language("en")
    vm.set_sms(True)
    assert not await vm.tap_service("payments")
    assert vm.screen == "details" and vm.selected_service == "payments"
    for key in "+25078812345":
        vm.press_key("phone", key)
    vm.press_key("phone", "9")
    vm.press_key("phone", "back")
    vm.press_key("phone", "6")
    assert vm.phone == "+250788123456"
    assert await vm.issue()
    assert vm.screen == "confirm"


def test_the_booking_pad_types_the_code_and_large_text_scales() -> None:
    vm = KioskViewModel(None, clock=lambda: 0.0)  # type: ignore[arg-type]
    for key in "k7q2":
        vm.press_key("booking", key)
    vm.press_key("booking", "back")
    assert vm.booking_code == "K7Q"
    assert vm.text_scale == 1.0
    vm.toggle_large_text()
    assert vm.large_text and vm.text_scale > 1.3
    vm.reset()
    assert vm.text_scale == 1.0


async def test_a_closed_branch_says_when_it_opens_and_takes_no_ticket(nodes: Nodes, clock: FakeClock) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo("Africa/Kigali")).date().isoformat()

    def closed_today(config: Path) -> None:
        week = "".join(f'"{d}" = {{ opens = "08:00", closes = "17:00" }}\n' for d in range(7))
        with config.open("a", encoding="utf-8") as fh:
            fh.write(f'\n[hours]\nclosed_days = ["{today}"]\n[hours.weekdays]\n{week}')

    node = nodes.start("kiosk", edit=closed_today)
    client = NodeClient(node.url, timeout=5.0)
    try:
        vm = make_vm(client, clock, language="fr")
        await vm.refresh()
        assert vm.closed and vm.closed_text == "Fermé. Ouvre demain à 08:00."
        assert all(s["wait_text"] == "Fermé" for s in vm.services)
        vm.choose_language("fr")
        assert not await vm.tap_service("general")
        assert vm.error == vm.closed_text and vm.screen == "service"
        vm.language = "en"
        assert vm.closed_text == "Closed. Opens tomorrow at 08:00."
    finally:
        await client.close()


async def test_each_service_has_a_pictogram_from_its_words_or_its_configuration(
        nodes: Nodes, clock: FakeClock) -> None:
    """The sample's services name no icon: the kiosk chooses one from their words. A service
    that names one (here documents: ``icon = "mail"``) gets it through the node's /state."""
    from kiosk_ui.pictograms import PICTOGRAMS

    def documents_by_mail(config: Path) -> None:
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('letter = "C"\n', 'letter = "C"\nicon = "mail"\n'), encoding="utf-8")

    for edit, documents_icon in ((None, "document"), (documents_by_mail, "mail")):
        node = nodes.start("kiosk", edit=edit)
        async with NodeClient(node.url) as client:
            vm = make_vm(client, clock)
            await vm.refresh()
            icons = {s["id"]: s["icon"] for s in vm.services}
            assert icons == {"general": "info", "payments": "money", "documents": documents_icon}
            assert all(icon in PICTOGRAMS for icon in icons.values())
            state = await client.state()
            assert [s.get("icon") for s in state["services"]] == [None, None, None if edit is None else "mail"]
        node.stop()


def test_an_unknown_icon_is_a_one_line_configuration_error(ui_sample: Path, tmp_path: Path) -> None:
    from appliance.config import ConfigError, load_config, service_icon

    config = tmp_path / "kiosk.toml"
    text = (ui_sample / "kiosk.toml").read_text(encoding="utf-8")
    config.write_text(text.replace('letter = "B"\n', 'letter = "B"\nicon = "coin"\n'), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value) == ("services[1].icon: one of person, money, document, id-card, health, info, "
                              "mail, calendar, got 'coin'")
    # Words choose by whole word or prefix: "id" is an identity card, "idle" is not.
    assert [service_icon(i, {"en": n}) for i, n in [("id", ""), ("idle", ""), ("x", "Passport renewal"),
                                                    ("x", "Vaccinations"), ("x", "Appointments")]] == [
        "id-card", "person", "id-card", "health", "calendar"]
    assert service_icon("payments", {}, "calendar") == "calendar"
