"""Replication between real `smartq node` processes, each in its own network namespace,
finding each other by mDNS alone (no static peers): a busy day, a partition, crashes and
a new device, a rogue device on the LAN, and remote changes on the local stream."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from sync.db import connect
from sync.keys import load_or_create_key
from sync.log import all_events
from sync.protocol import PREFIX, encode, sign_headers

from .replicated import (
    LAN_PORT,
    drive,
    drive_bg,
    finish,
    make_branch,
    restart_node,
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


def test_a_partition_heals_to_one_state_with_the_documented_winner(lan, python, python_env, tmp_path) -> None:
    env = python_env
    configs = make_branch(tmp_path / "branch")
    nodes = start_nodes(lan, configs, ["kiosk", "display", "counter-1", "counter-2", "counter-3"],
                        python=python, env=env)
    first = drive(lan, nodes["kiosk"], "issue", {"n": 10, "services": ["general"]}, python=python, env=env)["issued"]
    for i in (1, 2, 3):
        assert drive(lan, nodes[f"counter-{i}"], "open", {"counter": f"c{i}"}, python=python, env=env)[0] == 200
    wait_converged(lan, nodes.values(), python=python, env=env)

    # Cut the display and counter-3 off from the rest.
    side_a = [nodes[d].host for d in ("kiosk", "counter-1", "counter-2")]
    side_b = [nodes[d].host for d in ("display", "counter-3")]
    lan.partition(side_a, side_b)
    contested = first[0]["id"]

    # Side B: counter-3 issues and serves its own tickets, then calls the contested ticket first.
    b_issued = drive(lan, nodes["counter-3"], "issue", {"n": 5, "services": ["documents"]}, python=python,
                     env=env)["issued"]
    b_served = drive(lan, nodes["counter-3"], "serve", {"counter": "c3", "idle_s": 0.5, "max": 3},
                     python=python, env=env)
    status, body = drive(lan, nodes["counter-3"], "call", {"counter": "c3", "ticket": contested},
                         python=python, env=env)
    assert status == 200 and body["counter"] == "c3", body
    # Side A: counter-1 calls the same ticket later (it cannot know), the kiosk keeps issuing,
    # counter-2 keeps serving.
    status, body = drive(lan, nodes["counter-1"], "call", {"counter": "c1", "ticket": contested},
                         python=python, env=env)
    assert status == 200 and body["counter"] == "c1", body
    a_issued = drive(lan, nodes["kiosk"], "issue", {"n": 10, "services": ["general"]}, python=python,
                     env=env)["issued"]
    a_served = drive(lan, nodes["counter-2"], "serve", {"counter": "c2", "idle_s": 0.5, "max": 6},
                     python=python, env=env)
    assert len(b_served["served"]) == 3 and len(a_served["served"]) == 6
    assert contested not in a_served["served"] + b_served["served"]
    # Both sides really were apart: the display has not seen side A's new tickets.
    display_state = state(lan, nodes["display"], python=python, env=env)
    assert not {t["id"] for t in a_issued} & {t["id"] for t in display_state["waiting"]}

    lan.heal()
    digest = wait_converged(lan, nodes.values(), python=python, env=env)

    every = first + b_issued + a_issued
    assert len({t["label"] for t in every}) == len(every), "every number unique"
    tickets = drive(lan, nodes["display"], "tickets", {"ids": [t["id"] for t in every]}, python=python, env=env)
    assert all(status == 200 for status, _ in tickets.values()), "no ticket lost"
    # Earliest call wins (neither counter went further): counter-3's, made first on side B.
    won = tickets[contested][1]
    assert (won["status"], won["counter"], won["superseded"]) == ("called", "c3", ["c1"])
    final = state(lan, nodes["counter-1"], python=python, env=env)
    assert final["state_hash"] == digest
    c1 = next(c for c in final["counters"] if c["id"] == "c1")
    assert [s["ticket"] for s in c1["superseded"]] == [contested]
    assert c1["superseded"][0]["by_counter"] == "c3"
    # None served twice: each side served different tickets, each completed once, by its counter.
    served = a_served["served"] + b_served["served"]
    assert len(served) == len(set(served))
    for ticket in served:
        assert tickets[ticket][1]["status"] == "completed"
        assert tickets[ticket][1]["superseded"] == []
    # The losing counter is told so when it tries to go on with the ticket.
    status, body = drive(lan, nodes["counter-1"], "act", {"counter": "c1", "ticket": contested, "action": "start"},
                         python=python, env=env)
    assert status == 409 and body["error"]["code"] == "superseded", body


def test_a_killed_node_and_a_new_node_with_an_empty_store_catch_up(lan, python, python_env, tmp_path) -> None:
    env = python_env
    configs = make_branch(tmp_path / "branch")
    nodes = start_nodes(lan, configs, ["kiosk", "display", "counter-1", "counter-2"], python=python, env=env)
    drive(lan, nodes["kiosk"], "issue", {"n": 10, "services": ["general"]}, python=python, env=env)
    wait_converged(lan, nodes.values(), python=python, env=env)

    os.killpg(nodes["counter-2"].proc.pid, signal.SIGKILL)  # no goodbye, no clean shutdown
    nodes["counter-2"].proc.popen.wait(10)
    drive(lan, nodes["kiosk"], "issue", {"n": 15, "services": ["general", "payments"]}, python=python, env=env)
    served = drive(lan, nodes["counter-1"], "serve", {"counter": "c1", "idle_s": 0.5, "max": 5},
                   python=python, env=env)
    assert len(served["served"]) == 5

    nodes["counter-2"] = restart_node(lan, nodes["counter-2"], configs["counter-2"], python=python, env=env)
    nodes.update(start_nodes(lan, configs, ["counter-3"], python=python, env=env))  # empty store, new device
    digest = wait_converged(lan, nodes.values(), python=python, env=env)
    # Both are full members again: what they do reaches everyone.
    assert len(drive(lan, nodes["counter-3"], "serve", {"counter": "c3", "idle_s": 0.5, "max": 2},
                     python=python, env=env)["served"]) == 2
    assert len(drive(lan, nodes["counter-2"], "serve", {"counter": "c2", "idle_s": 0.5, "max": 2},
                     python=python, env=env)["served"]) == 2
    assert wait_converged(lan, nodes.values(), python=python, env=env) != digest


def test_a_rogue_device_gets_nothing_accepted_and_reads_nothing(lan, python, python_env, tmp_path) -> None:
    env = python_env
    branch = tmp_path / "branch"
    configs = make_branch(branch)
    nodes = start_nodes(lan, configs, ["kiosk", "display", "counter-1"], python=python, env=env)
    drive(lan, nodes["kiosk"], "issue", {"n": 5, "services": ["general"]}, python=python, env=env)
    before = wait_converged(lan, nodes.values(), python=python, env=env)

    # What a rogue could have got hold of: genuine signed events, and a genuine request that
    # counter-1 sent to the kiosk (delivered once, as it should be).
    conn = connect(branch / "data" / "kiosk" / "smartq.db", readonly=True)
    try:
        genuine = [e.to_dict() for e in all_events(conn)[:20]]
    finally:
        conn.close()
    c1_key = load_or_create_key(branch / "data" / "counter-1")
    body = encode({"vv": {}, "limit": 1000})
    headers = sign_headers(c1_key, device="counter-1", branch="b1", method="POST", path=f"{PREFIX}/pull",
                           body=body, to="kiosk")
    kiosk_lan = f"https://{nodes['kiosk'].host.ip}:{LAN_PORT}"
    delivered = lan.run(nodes["counter-1"].host, [python, "-c", DELIVER, kiosk_lan + f"{PREFIX}/pull",
                                                  json.dumps(headers), body.decode(),
                                                  str(branch / "data" / "counter-1")], env=env)
    assert delivered.stdout.strip() == "200", delivered.stdout + delivered.stderr
    attack = tmp_path / "attack.json"
    attack.write_text(json.dumps({"genuine_events": genuine,
                                  "captured": {"path": f"{PREFIX}/pull", "body": body.decode(), "headers": headers}}))

    rogue_host = lan.add_host("rogue")
    proc = lan.spawn(rogue_host, [python, str(Path(__file__).with_name("rogue.py")), "--branch", "b1",
                                  "--port", str(LAN_PORT), "--input", str(attack)], env=env, name="rogue")
    report = finish(proc, timeout=90)
    assert {"kiosk", "display"} <= set(report["discovered"])  # mDNS is public: it can find us
    assert {a["way"] for a in report["attempts"]} == {"self-signed", "other-org", "no-cert", "plain-http"}
    for a in report["attempts"]:
        # Mutual TLS: no certificate of the org CA, no HTTP answer at all: nothing to read.
        assert a["status"] is None, a
        assert not a.get("leaked_events"), a

    # Nothing changed anywhere, and every node logged the refusals and ignored the announcements.
    time.sleep(2)
    assert wait_converged(lan, nodes.values(), python=python, env=env) == before
    for name, node in nodes.items():
        peers = state(lan, node, python=python, env=env)["peers"]
        assert "rogue" not in {p["id"] for p in peers}, name
        err = node.proc.stderr()
        assert "ignoring peer rogue" in err, name
        # A roster id announced by the rogue: tried, but it has no certificate of the org.
        assert all(p["status"] != "ok" for p in peers if p["id"] == "counter-2"), (name, peers)
    for node in nodes.values():
        node.proc.stop()
    for device in nodes:
        conn = connect(branch / "data" / device / "smartq.db", readonly=True)
        try:
            origins = {row[0] for row in conn.execute("SELECT DISTINCT origin FROM events")}
            forged = conn.execute("SELECT count(*) FROM events WHERE payload LIKE '%\"ticket\":\"x\"%'").fetchone()[0]
        finally:
            conn.close()
        assert "rogue" not in origins and forged == 0, device


DELIVER = r"""
import json, ssl, sys, urllib.request
url, headers, body, data = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(data + "/ca.pem")
ctx.load_cert_chain(data + "/device.crt", data + "/device.key")
with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=10,
                            context=ctx) as r:
    print(r.status)
"""
