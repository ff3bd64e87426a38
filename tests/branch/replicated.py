"""A replicating sample branch in network namespaces: configs, nodes, and driving them.

    configs = make_branch(tmp_path / "branch")                   # 5 devices, [lan] by mDNS
    nodes = start_nodes(lan, configs, ["kiosk", "display"], python=python, env=python_env)
    result = drive(lan, nodes["kiosk"], "issue", {"n": 10, "services": ["general"]}, ...)
    digest = wait_converged(lan, nodes.values(), python=python)

`make_branch` starts from `smartq init` and adds what the sample lacks: a third counter
device (counter-3, counter c3, ticket numbers 500-599 taken from the kiosk's 1-599), and a
[lan] section for a real LAN: listen on 0.0.0.0:8441 in every namespace, mDNS on, no static
peers (devices find each other by mDNS alone).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sync.keys import load_or_create_key, public_key_text

from appliance.sample import issue_local_cert, write_sample

from .netns import Network, Proc
from .nodes import NodeProc, spawn_node

DRIVER = Path(__file__).with_name("driver.py")
LAN_PORT = 8441
API = "127.0.0.1:8401"  # every namespace has its own loopback
DEVICES = ("kiosk", "display", "counter-1", "counter-2", "counter-3")
LAN_SECTION = """
[lan]
listen = "0.0.0.0:{port}"
mdns = true
anti_entropy_s = 1.0
"""


def make_branch(directory: Path, *, staff_login: bool = False, lan: str | None = None) -> dict[str, Path]:
    """Write the five-device branch; returns {device: config path}."""
    write_sample(directory, branch_id="b1")
    key = public_key_text(load_or_create_key(directory / "data" / "counter-3").public_key())
    issue_local_cert(directory, "counter-3", "counter", "b1")
    lan_text = lan if lan is not None else LAN_SECTION.format(port=LAN_PORT)
    for path in directory.glob("*.toml"):
        text = path.read_text()
        text = _replace_section(text, "lan", lan_text)
        text = text.replace('numbers = "1-599"', 'numbers = "1-499"')
        text += f'\n[[roster]]\nid = "counter-3"\nrole = "counter"\npublic_key = "{key}"\nnumbers = "500-599"\n'
        if not staff_login:
            text = text.replace("require_staff_login = true", "require_staff_login = false")
        if path.stem == "counter-2":
            text = text.replace('counters = ["c2", "c3"]', 'counters = ["c2"]')
        path.write_text(text)
    c2 = (directory / "counter-2.toml").read_text()
    c3 = (c2.replace('id = "counter-2"\nrole = "counter"\ndata_dir = "data/counter-2"',
                     'id = "counter-3"\nrole = "counter"\ndata_dir = "data/counter-3"', 1)
            .replace('counters = ["c2"]', 'counters = ["c3"]'))
    assert 'data_dir = "data/counter-3"' in c3
    (directory / "counter-3.toml").write_text(c3)
    return {d: directory / f"{d}.toml" for d in DEVICES}


def _replace_section(text: str, name: str, new: str) -> str:
    """Replace the `[name]` table (up to the next table header) with `new`."""
    match = re.search(rf"^\[{name}\]\n(?:(?!\[).*\n)*", text, flags=re.M)
    assert match is not None, f"no [{name}] in config"
    return text[: match.start()] + new.lstrip("\n") + "\n" + text[match.end():]


def start_nodes(net: Network, configs: dict[str, Path], devices: Iterable[str], *, python: str,
                env: dict[str, str]) -> dict[str, NodeProc]:
    """One namespace (named after the device) and one `smartq node` per device."""
    nodes = {}
    for device in devices:
        host = net.hosts.get(_host_name(device)) or net.add_host(_host_name(device))
        nodes[device] = spawn_node(net, host, configs[device], python=python, env=env, listen=API)
    return nodes


def restart_node(net: Network, node: NodeProc, config: Path, *, python: str, env: dict[str, str]) -> NodeProc:
    return spawn_node(net, node.host, config, python=python, env=env, listen=API)


def _host_name(device: str) -> str:
    return device.replace("counter-", "c").replace("display", "disp")[:8]


def drive(net: Network, node: NodeProc, op: str, args: dict[str, Any] | None = None, *, python: str,
          env: dict[str, str], timeout: float = 120) -> Any:
    """Run one driver op inside the node's namespace and return its result."""
    result = net.run(node.host, [python, str(DRIVER), node.url, op, json.dumps(args or {})], timeout=timeout,
                     env=env)
    return _result(result.stdout)


def drive_bg(net: Network, node: NodeProc, op: str, args: dict[str, Any], *, python: str, env: dict[str, str],
             name: str) -> Proc:
    """Start a driver op in the background (concurrent load); `finish(proc)` collects its result."""
    return net.spawn(node.host, [python, str(DRIVER), node.url, op, json.dumps(args)], env=env, name=name)


def finish(proc: Proc, timeout: float = 180) -> Any:
    found = proc.wait_for(lambda lines: next(([line["result"]] for line in lines if isinstance(line, dict)
                                              and "result" in line), None), timeout, "driver result")
    return found[0]


def _result(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and "result" in parsed:
            return parsed["result"]
    raise AssertionError(f"driver printed no result: {stdout[-2000:]}")


def state(net: Network, node: NodeProc, *, python: str, env: dict[str, str]) -> dict[str, Any]:
    status, body = drive(net, node, "state", python=python, env=env)
    assert status == 200, body
    return body


def hashes(net: Network, nodes: Iterable[NodeProc], *, python: str, env: dict[str, str]) -> dict[str, str]:
    return {n.proc.name: state(net, n, python=python, env=env)["state_hash"] for n in nodes}


def wait_converged(net: Network, nodes: Iterable[NodeProc], *, python: str, env: dict[str, str],
                   timeout: float = 60) -> str:
    """Poll until every node reports the same state hash; returns it (fails with the hashes)."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout
    while True:
        seen = hashes(net, nodes, python=python, env=env)
        if len(set(seen.values())) == 1:
            return next(iter(seen.values()))
        if time.monotonic() > deadline:
            raise AssertionError(f"no convergence after {timeout}s: {seen}")
        time.sleep(0.5)
