"""Kiosk view-model against a real HTTP server speaking the node's contract."""

from __future__ import annotations

import pytest

from appliance.client import NodeClient
from kiosk_ui.i18n import LANGUAGES, load_messages, template_ids
from kiosk_ui.viewmodels import KioskViewModel, SilentSpeaker, normalize_phone

from .contract_node import ContractNode


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def vm(client: NodeClient, clock: FakeClock) -> KioskViewModel:
    vm = KioskViewModel(client, clock=clock, speaker=SilentSpeaker(), phone_region="RW")
    await vm.refresh()
    return vm


async def test_services_show_waiting_count_and_estimate(vm: KioskViewModel, node: ContractNode) -> None:
    node.issue("general")
    node.issue("general")
    await vm.refresh()
    general = vm.services[0]
    assert general["waiting"] == 2
    assert general["waiting_text"] == "Waiting: 2"
    assert general["wait_text"] == "About 8 min"
    assert vm.services[1]["wait_text"] == "No wait"


async def test_walk_in_with_priority_and_phone_is_issued_in_the_chosen_language(
    vm: KioskViewModel, node: ContractNode
) -> None:
    vm.choose_language("fr")
    assert vm.screen == "service"
    assert vm.services[0]["name"] == "Renseignements"
    vm.choose_service("general")
    vm.set_priority(True)
    vm.set_phone("0788 123 456")
    assert await vm.issue()
    assert vm.screen == "confirm"
    assert vm.ticket_label == "A001"
    issued = node.tickets[vm.ticket["id"]]
    assert issued["priority"] == 1 and issued["language"] == "fr"
    assert vm.ticket_lines[0] == "Veuillez attendre d'être appelé"
    assert not vm.printer_failed and vm.qr_payload == ""


async def test_invalid_phone_is_refused_before_anything_is_sent(vm: KioskViewModel, node: ContractNode) -> None:
    vm.choose_language("en")
    vm.choose_service("payments")
    vm.set_phone("12")
    assert not await vm.issue()
    assert vm.phone_error == "This phone number is not valid"
    assert node.tickets == {} and vm.screen == "details"


def test_phone_numbers_are_normalized_to_e164() -> None:
    assert normalize_phone("0788 123 456", "RW") == "+250788123456"
    assert normalize_phone("+33 6 12 34 56 78", "RW") == "+33612345678"
    assert normalize_phone("hello", "RW") is None


async def test_printer_failure_shows_the_ticket_with_a_qr_code(vm: KioskViewModel, node: ContractNode) -> None:
    node.printer_ok = False
    vm.choose_language("sw")
    vm.choose_service("general")
    assert await vm.issue()
    assert vm.printer_failed
    assert vm.qr_payload == vm.ticket["id"]


async def test_booking_check_in_and_unknown_code(vm: KioskViewModel, node: ContractNode) -> None:
    vm.choose_language("en")
    vm.go("booking")
    vm.set_booking_code("nope1")
    assert not await vm.issue_booking()
    assert vm.booking_error == "Unknown booking code" and vm.screen == "booking"
    vm.set_booking_code(" bk7q2 ")
    assert await vm.issue_booking()
    assert vm.screen == "confirm" and vm.ticket["booking_code"] == "BK7Q2"


async def test_node_unreachable_is_shown_and_nothing_crashes(dead_client: NodeClient, clock: FakeClock) -> None:
    vm = KioskViewModel(dead_client, clock=clock)
    await vm.refresh()
    assert vm.offline
    vm.selected_service = "general"
    assert not await vm.issue()
    assert vm.error.startswith("Cannot reach the queue system")


async def test_a_4xx_reply_is_a_message_not_a_crash(vm: KioskViewModel, node: ContractNode) -> None:
    vm.choose_language("es")
    vm.choose_service("general")
    node.fail_next["/tickets"] = (409, "closed")
    assert not await vm.issue()
    assert vm.error == "Algo salió mal. Pregunte al personal."
    assert vm.screen == "details"


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


def test_every_language_translates_every_message() -> None:
    ids = template_ids()
    for lang in LANGUAGES:
        missing = [i for i in ids if i not in load_messages(lang)]
        assert not missing, (lang, missing)


def test_print_status_decides_whether_the_ticket_is_shown_on_screen() -> None:
    from kiosk_ui.viewmodels import printer_failed

    assert not printer_failed({"print": {"status": "printed"}}, None)
    assert printer_failed({"print": {"status": "no_printer"}}, None)
    assert printer_failed({"print": {"status": "paper_out"}}, {"printer": "ok"})
    assert printer_failed({}, {"printer": {"ok": False}})
    assert not printer_failed({}, {})
