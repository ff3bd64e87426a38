"""Real mDNS between separate processes, each in its own network namespace on one bridge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .netns import Host, Network, Proc

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HELPER = Path(__file__).with_name("discovery_peer.py")
FOUND_TIMEOUT = 20.0  # generous: the machine is shared; speed is measured in bench/


def start_peer(
    lan: Network, host: Host, python: str, env: dict[str, str], *, branch: str = "b1",
    role: str = "counter", port: int = 8443, extra: tuple[str, ...] = (),
) -> Proc:
    argv = [
        python, str(HELPER), "--branch", branch, "--id", f"dev-{host.name}", "--role", role,
        "--port", str(port), "--fp", f"fp-{host.name}", *extra,
    ]
    return lan.spawn(host, argv, env=env, name=f"peer-{host.name}")


def latest_peers(lines: list[Any]) -> dict[str, dict[str, Any]]:
    tables = [line["peers"] for line in lines if line.get("event") in ("peers", "started")]
    return {p["device_id"]: p for p in tables[-1]} if tables else {}


def sees(expected: dict[str, str]):
    """Predicate: the latest table holds exactly these device ids, at these addresses."""

    def check(lines: list[Any]) -> dict[str, dict[str, Any]] | None:
        table = latest_peers(lines)
        got = {device: peer["addresses"] for device, peer in table.items()}
        want = {device: [address] for device, address in expected.items()}
        return table if got == want else None

    return check


def test_three_devices_find_each_other_by_mdns_and_ignore_another_branch(lan, python, python_env) -> None:
    a, b, c, other = (lan.add_host(n) for n in ("a", "b", "c", "x"))
    roles = {"a": "kiosk", "b": "display", "c": "counter"}
    procs = {h.name: start_peer(lan, h, python, python_env, role=roles[h.name], port=8400 + i)
             for i, h in enumerate((a, b, c), start=1)}
    foreign = start_peer(lan, other, python, python_env, branch="b2")

    for me, proc in procs.items():
        expected = {f"dev-{h.name}": h.ip for h in (a, b, c) if h.name != me}
        table = proc.wait_for(sees(expected), FOUND_TIMEOUT, f"{me} to see {sorted(expected)}")
        for i, h in enumerate((a, b, c), start=1):
            if h.name == me:
                continue
            peer = table[f"dev-{h.name}"]
            assert peer == {
                "device_id": f"dev-{h.name}", "branch": "b1", "role": roles[h.name],
                "addresses": [h.ip], "port": 8400 + i, "protocol_version": 1,
                "fingerprint": f"fp-{h.name}", "last_seen": peer["last_seen"], "source": "mdns",
            }
    # The b2 device was announcing the whole time on the same LAN: nobody of b1 lists it, and
    # it lists nobody of b1, even though its mDNS packets reached everyone.
    assert all("dev-x" not in latest_peers(p.json_lines()) for p in procs.values())
    assert latest_peers(foreign.json_lines()) == {}

    # A clean stop says goodbye: the others drop the device at once.
    assert procs["c"].stop() == 0
    assert [l["event"] for l in procs["c"].json_lines()[-2:]] == ["stopped", "exit"]
    assert procs["c"].json_lines()[-1]["threads"] == []
    assert "Traceback" not in procs["c"].stderr() and "destroyed" not in procs["c"].stderr()
    procs["a"].wait_for(sees({"dev-b": b.ip}), FOUND_TIMEOUT, "a to drop c after its goodbye")


def test_unplugged_device_that_returns_with_a_new_address_is_rediscovered(lan, python, python_env) -> None:
    a, b, c = (lan.add_host(n) for n in ("a", "b", "c"))
    procs = {h.name: start_peer(lan, h, python, python_env) for h in (a, c)}
    # b binds by interface name: its socket set must follow the address change too.
    procs["b"] = start_peer(lan, b, python, python_env, extra=("--interface", "eth0"))
    procs["a"].wait_for(sees({"dev-b": b.ip, "dev-c": c.ip}), FOUND_TIMEOUT, "initial discovery")

    lan.cut(b)
    new_ip = lan.readdress(b, 42)  # a new DHCP lease while unplugged
    lan.reconnect(b)

    for name in ("a", "c"):
        other = c if name == "a" else a
        procs[name].wait_for(
            sees({"dev-b": new_ip, f"dev-{other.name}": other.ip}),
            FOUND_TIMEOUT, f"{name} to see b at {new_ip} only",
        )
    procs["b"].wait_for(sees({"dev-a": a.ip, "dev-c": c.ip}), FOUND_TIMEOUT, "b to keep a and c")


def test_device_started_while_unplugged_is_found_once_plugged_in(lan, python, python_env) -> None:
    a, b, c = (lan.add_host(n) for n in ("a", "b", "c"))
    lan.cut(c)
    procs = {h.name: start_peer(lan, h, python, python_env) for h in (a, b, c)}
    procs["a"].wait_for(sees({"dev-b": b.ip}), FOUND_TIMEOUT, "a and b to meet")
    procs["c"].wait_for(lambda lines: any(l["event"] == "started" for l in lines), FOUND_TIMEOUT, "c to start")
    assert latest_peers(procs["c"].json_lines()) == {}

    lan.reconnect(c)

    procs["a"].wait_for(sees({"dev-b": b.ip, "dev-c": c.ip}), FOUND_TIMEOUT, "a to find c")
    procs["b"].wait_for(sees({"dev-a": a.ip, "dev-c": c.ip}), FOUND_TIMEOUT, "b to find c")
    procs["c"].wait_for(sees({"dev-a": a.ip, "dev-b": b.ip}), FOUND_TIMEOUT, "c to find a and b")


def test_static_peers_fill_in_where_mdns_cannot_reach(lan, python, python_env) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    lan.partition([a], [b])  # separate segments: mDNS cannot cross, like two VLANs
    pa = start_peer(lan, a, python, python_env, extra=("--static", f"dev-b@{b.ip}:8443"))
    pb = start_peer(lan, b, python, python_env)
    table = pa.wait_for(sees({"dev-b": b.ip}), FOUND_TIMEOUT, "a to list its static peer")
    assert table["dev-b"]["source"] == "static"
    pb.wait_for(lambda lines: any(l["event"] == "started" for l in lines), FOUND_TIMEOUT, "b to start")
    assert latest_peers(pb.json_lines()) == {}

    lan.heal()  # same segment again: the mDNS record takes over the static entry
    table = pa.wait_for(
        lambda lines: (t := sees({"dev-b": b.ip})(lines)) and t["dev-b"]["source"] == "mdns" and t,
        FOUND_TIMEOUT, "mDNS to replace the static entry",
    )
    assert table["dev-b"]["fingerprint"] == "fp-b"
