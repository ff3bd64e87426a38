"""Replication between real `smartq node` processes, each in its own network namespace,
finding each other by mDNS alone (no static peers): a busy day, a partition, crashes and
a new device, a rogue device on the LAN, and remote changes on the local stream."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from .replicated import (
    drive,
    drive_bg,
    finish,
    make_branch,
    start_nodes,
    state,
    wait_converged,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_a_busy_day_on_five_devices_converges_to_one_state(lan, python, python_env, tmp_path) -> None:
    configs = make_branch(tmp_path / "branch")
    nodes = start_nodes(lan, configs, ["kiosk", "display", "counter-1", "counter-2", "counter-3"],
                        python=python, env=python_env)
    env = python_env
    # The display watches its own stream: calls made at the counters must show up there.
    watcher = drive_bg(lan, nodes["display"], "stream", {"seconds": 300}, python=python, env=env, name="display-stream")
    issuers = [
        drive_bg(lan, nodes["kiosk"], "issue", {"n": 120, "services": ["general", "payments", "documents"]},
                 python=python, env=env, name="issue-kiosk"),
        drive_bg(lan, nodes["counter-1"], "issue", {"n": 40, "services": ["general", "payments"]},
                 python=python, env=env, name="issue-c1"),
        drive_bg(lan, nodes["counter-2"], "issue", {"n": 40, "services": ["documents", "general"]},
                 python=python, env=env, name="issue-c2"),
    ]
    servers = [drive_bg(lan, nodes[f"counter-{i}"], "serve", {"counter": f"c{i}", "idle_s": 4.0},
                        python=python, env=env, name=f"serve-c{i}") for i in (1, 2, 3)]
    issued = [t for proc in issuers for t in finish(proc)["issued"]]
    served = [finish(proc) for proc in servers]
    assert len(issued) == 200
    assert len({t["label"] for t in issued}) == 200, "ticket numbers must be unique across issuing devices"
    assert all(not s["errors"] for s in served), served
    digest = wait_converged(lan, nodes.values(), python=python, env=env)

    # Every ticket ends completed exactly once on every node; counters each took a share.
    tickets = drive(lan, nodes["display"], "tickets", {"ids": [t["id"] for t in issued]}, python=python, env=env)
    statuses = Counter(body["status"] for status, body in tickets.values())
    assert statuses == {"completed": 200}, statuses
    done_by = Counter(body["counter"] for _, body in tickets.values())
    assert set(done_by) == {"c1", "c2", "c3"}
    counted = {t for s in served for t in s["served"]}
    assert counted <= {t["id"] for t in issued}
    for name, node in nodes.items():
        assert state(lan, node, python=python, env=env)["state_hash"] == digest, name

    # Remote calls appeared on the display's own stream as they committed.
    watcher.stop()
    streamed = [line for line in watcher.json_lines() if line.get("event") == "ticket.called"]
    origins = {line["data"]["event"]["origin"] for line in streamed}
    assert {"counter-1", "counter-2", "counter-3"} <= origins
    # The peers view: every other device found by mDNS and reachable.
    peers = state(lan, nodes["display"], python=python, env=env)["peers"]
    assert {p["id"] for p in peers} == {"kiosk", "counter-1", "counter-2", "counter-3"}
    assert all(p["status"] == "ok" and p["source"] == "mdns" and p["behind"] == 0 for p in peers), json.dumps(peers)
