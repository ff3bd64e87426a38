"""Independent mDNS software (avahi, confined to a namespace) and our discovery understand each other."""

from __future__ import annotations

import time

import pytest

from .avahi import avahi_missing, parse_txt_field, start_avahi
from .test_discovery_netns import FOUND_TIMEOUT, sees, start_peer

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _need_avahi() -> None:
    reason = avahi_missing()
    if reason is not None:
        pytest.skip(reason)


def test_avahi_browse_shows_our_announcement_with_its_txt_records(lan, python, python_env, tmp_path) -> None:
    a, av = lan.add_host("a"), lan.add_host("av")
    peer = start_peer(lan, a, python, python_env, role="kiosk", port=8401)
    peer.wait_for(lambda lines: any(l["event"] == "started" for l in lines), FOUND_TIMEOUT, "a to announce")
    avahi = start_avahi(lan, av, tmp_path / "avahi")

    deadline = time.monotonic() + FOUND_TIMEOUT
    entries: list[list[str]] = []
    while not entries and time.monotonic() < deadline:
        entries = [e for e in avahi.browse("_smartq._tcp") if e[3] == "b1-dev-a"]
    assert entries, "avahi-browse never resolved b1-dev-a"
    _, interface, family, name, service_type, domain, host_name, address, port, txt = entries[0]
    assert (interface, family, service_type, domain) == ("eth0", "IPv4", "_smartq._tcp", "local")
    assert (host_name, address, port) == ("sq-dev-a.local", a.ip, "8401")
    assert parse_txt_field(txt) == {"branch": "b1", "role": "kiosk", "id": "dev-a", "pv": "1", "fp": "fp-a"}


def test_our_discovery_finds_a_service_published_by_avahi(lan, python, python_env, tmp_path) -> None:
    a, av = lan.add_host("a"), lan.add_host("av")
    avahi = start_avahi(lan, av, tmp_path / "avahi")
    peer = start_peer(lan, a, python, python_env)
    avahi.publish("b1-dev-av", "_smartq._tcp", 8499,
                  {"branch": "b1", "role": "display", "id": "dev-av", "pv": "1", "fp": "ff00"})
    avahi.publish("other-branch", "_smartq._tcp", 8498,
                  {"branch": "b2", "role": "display", "id": "dev-b2", "pv": "1", "fp": "ee00"})
    table = peer.wait_for(sees({"dev-av": av.ip}), FOUND_TIMEOUT, "a to find avahi's service")
    assert (table["dev-av"]["role"], table["dev-av"]["port"], table["dev-av"]["fingerprint"]) == ("display", 8499, "ff00")
