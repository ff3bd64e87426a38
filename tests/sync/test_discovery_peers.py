"""PeerInfo parsing and the merged peer table, without sockets (mDNS itself runs in tests/branch)."""

from __future__ import annotations

import pytest

from sync.discovery import Discovery, DiscoveryError, _label
from sync.peers import (
    InvalidPeerRecord,
    PeerChange,
    PeerInfo,
    PeerTable,
    StaticPeer,
    encode_txt,
    peer_from_txt,
)


class FakeClock:
    """Injected time: tests move it by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def txt(**overrides: object) -> dict[bytes, bytes | None]:
    fields = {"branch": "b1", "role": "counter", "id": "counter-1", "pv": "1", "fp": "ab12"}
    fields.update({k: v for k, v in overrides.items()})  # type: ignore[misc]
    return {k.encode(): (None if v is None else str(v).encode()) for k, v in fields.items()}


def mdns_peer(device_id: str = "counter-1", branch: str = "b1", addresses=("10.0.0.2",), now=1.0, **kw):
    return peer_from_txt(txt(id=device_id, branch=branch, **kw), addresses=addresses, port=8443, now=now)


def test_txt_record_becomes_an_immutable_peer_info() -> None:
    peer = peer_from_txt(txt(), addresses=["10.0.0.2", "fe80::1", "10.0.0.2"], port=8443, now=5.0)
    assert peer == PeerInfo(
        device_id="counter-1", branch="b1", role="counter", addresses=("10.0.0.2", "fe80::1"),
        port=8443, protocol_version=1, fingerprint="ab12", last_seen=5.0, source="mdns",
    )
    with pytest.raises(AttributeError):
        peer.port = 1  # type: ignore[misc]
    assert peer.endpoints == (("10.0.0.2", 8443), ("fe80::1", 8443))


def test_txt_keys_and_values_may_be_str_and_keys_any_case() -> None:
    peer = peer_from_txt({"ID": "k", "Branch": "b1", "role": "kiosk", "pv": "2"}, addresses=[], port=1, now=0)
    assert (peer.device_id, peer.role, peer.protocol_version, peer.fingerprint) == ("k", "kiosk", 2, "")


@pytest.mark.parametrize(
    ("overrides", "port", "message"),
    [
        ({"id": None}, 8443, "lacks 'id'"),
        ({"branch": ""}, 8443, "lacks 'branch'"),
        ({"pv": "one"}, 8443, "not an integer"),
        ({"pv": "-1"}, 8443, "negative"),
        ({"id": "x" * 300}, 8443, "longer than"),
        ({}, None, "no usable port"),
        ({}, 70000, "no usable port"),
    ],
)
def test_bad_txt_records_are_rejected_with_a_reason(overrides, port, message) -> None:
    with pytest.raises(InvalidPeerRecord, match=message):
        peer_from_txt(txt(**overrides), addresses=["10.0.0.2"], port=port, now=0)


def test_non_utf8_txt_value_is_rejected_not_crashing() -> None:
    props = txt()
    props[b"role"] = b"\xff\xfe"
    with pytest.raises(InvalidPeerRecord, match="UTF-8"):
        peer_from_txt(props, addresses=[], port=1, now=0)


def test_unparsable_addresses_are_dropped() -> None:
    peer = peer_from_txt(txt(), addresses=["nonsense", "10.0.0.9"], port=1, now=0)
    assert peer.addresses == ("10.0.0.9",)


def test_announced_txt_round_trips_and_holds_no_secret_fields() -> None:
    announced = encode_txt(branch="b1", device_id="kiosk", role="kiosk", protocol_version=1, fingerprint="f" * 64)
    assert set(announced) == {"branch", "role", "id", "pv", "fp"}
    peer = peer_from_txt(announced, addresses=["10.0.0.1"], port=8401, now=0)
    assert (peer.device_id, peer.branch, peer.role, peer.protocol_version, peer.fingerprint) == (
        "kiosk", "b1", "kiosk", 1, "f" * 64,
    )
    with pytest.raises(ValueError):
        encode_txt(branch="", device_id="k", role="kiosk", protocol_version=1, fingerprint="")


def test_table_ignores_other_branches_and_itself() -> None:
    table = PeerTable(branch="b1", device_id="kiosk", clock=FakeClock())
    assert not table.upsert_mdns("x._smartq._tcp.local.", mdns_peer("kiosk"))
    assert not table.upsert_mdns("y._smartq._tcp.local.", mdns_peer("counter-9", branch="b2"))
    assert table.upsert_mdns("z._smartq._tcp.local.", mdns_peer("counter-1"))
    assert [p.device_id for p in table.peers()] == ["counter-1"]


def test_rediscovery_updates_address_and_last_seen_but_not_identity() -> None:
    table = PeerTable(branch="b1", device_id="kiosk", clock=FakeClock())
    changes: list[PeerChange] = []
    table.subscribe(changes.append)
    name = "b1-counter-1._smartq._tcp.local."
    table.upsert_mdns(name, mdns_peer(addresses=("10.0.0.2",), now=1.0))
    table.upsert_mdns(name, mdns_peer(addresses=("10.0.0.12",), now=2.0))
    # Same device id, different fingerprint: a spoof or a re-keyed device; the known one stays.
    assert not table.upsert_mdns("other._smartq._tcp.local.", mdns_peer(addresses=("10.0.0.66",), fp="evil"))
    peer = table.get("counter-1")
    assert peer is not None
    assert (peer.addresses, peer.last_seen, peer.fingerprint) == (("10.0.0.12",), 2.0, "ab12")
    assert [(c.kind, c.peer.addresses) for c in changes] == [
        ("added", ("10.0.0.2",)),
        ("updated", ("10.0.0.12",)),
    ]


def test_removal_drops_the_peer_and_notifies() -> None:
    table = PeerTable(branch="b1", device_id="kiosk", clock=FakeClock())
    changes: list[PeerChange] = []
    table.subscribe(changes.append)
    table.upsert_mdns("n", mdns_peer())
    table.remove_mdns("n")
    table.remove_mdns("never-seen")
    assert table.peers() == []
    assert [c.kind for c in changes] == ["added", "removed"]


def test_unsubscribe_stops_notifications_and_a_failing_listener_does_not_break_others() -> None:
    table = PeerTable(branch="b1", device_id="kiosk", clock=FakeClock())
    seen: list[str] = []

    def broken(change: PeerChange) -> None:
        raise RuntimeError("listener bug")

    table.subscribe(broken)
    unsubscribe = table.subscribe(lambda c: seen.append(c.peer.device_id))
    table.upsert_mdns("a", mdns_peer("counter-1"))
    unsubscribe()
    unsubscribe()  # idempotent
    table.upsert_mdns("b", mdns_peer("counter-2", addresses=("10.0.0.3",)))
    assert seen == ["counter-1"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("10.0.0.5:8443", StaticPeer("10.0.0.5", 8443)),
        (" display@10.0.0.6:8402 ", StaticPeer("10.0.0.6", 8402, "display")),
        ("[fd00::5]:8443", StaticPeer("fd00::5", 8443)),
        ("kiosk.branch.lan:8401", StaticPeer("kiosk.branch.lan", 8401)),
    ],
)
def test_static_peer_entries_parse(entry: str, expected: StaticPeer) -> None:
    assert StaticPeer.parse(entry) == expected


@pytest.mark.parametrize("entry", ["10.0.0.5", "10.0.0.5:http", ":80", "h:0", "@h:80", "fd00::5:80", "[fd00::5]80"])
def test_bad_static_peer_entries_give_a_clear_error(entry: str) -> None:
    with pytest.raises(InvalidPeerRecord, match="static peer"):
        StaticPeer.parse(entry)


def test_static_peers_merge_and_are_shadowed_by_mdns_peers_at_the_same_endpoint() -> None:
    clock = FakeClock(50.0)
    table = PeerTable(
        branch="b1", device_id="kiosk", clock=clock,
        static_peers=["10.0.0.2:8443", "display@10.0.0.7:8402", "kiosk@10.0.0.1:8401"],
    )
    assert [(p.device_id, p.source, p.addresses, p.port) for p in table.peers()] == [
        ("display", "static", ("10.0.0.7",), 8402),
        ("static:10.0.0.2:8443", "static", ("10.0.0.2",), 8443),
    ]
    changes: list[PeerChange] = []
    table.subscribe(changes.append)
    table.upsert_mdns("n", mdns_peer("counter-1", addresses=("10.0.0.2",)))
    assert [(p.device_id, p.source) for p in table.peers()] == [("counter-1", "mdns"), ("display", "static")]
    assert [(c.kind, c.peer.device_id) for c in changes] == [("added", "counter-1"), ("removed", "static:10.0.0.2:8443")]
    # mDNS loses the peer: the configured fallback comes back.
    table.remove_mdns("n")
    assert [p.device_id for p in table.peers()] == ["display", "static:10.0.0.2:8443"]
    # A static entry with a known device id is replaced by that device's mDNS record.
    table.upsert_mdns("d", mdns_peer("display", addresses=("10.0.0.8",), role="display"))
    display = table.get("display")
    assert display is not None and (display.source, display.addresses) == ("mdns", ("10.0.0.8",))


def test_discovery_validates_settings_before_touching_the_network() -> None:
    with pytest.raises(DiscoveryError, match="port"):
        Discovery(branch="b1", device_id="k", role="kiosk", port=0)
    with pytest.raises(DiscoveryError, match="branch"):
        Discovery(branch="", device_id="k", role="kiosk", port=8401)
    with pytest.raises(DiscoveryError, match="static peer"):
        Discovery(branch="b1", device_id="k", role="kiosk", port=8401, static_peers=["nope"])
    d = Discovery(branch="b1", device_id="k", role="kiosk", port=8401, static_peers=["10.0.0.2:8402"])
    assert not d.running
    assert [p.device_id for p in d.peers()] == ["static:10.0.0.2:8402"]
    assert d.service_name == "b1-k._smartq._tcp.local."


def test_instance_labels_are_dns_safe_and_bounded() -> None:
    assert _label("Branch 7/Kiosk.1") == "branch-7-kiosk-1"
    assert len(_label("x" * 100)) == 63
    assert _label("***") == "device"
