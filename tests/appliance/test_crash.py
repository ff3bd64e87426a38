"""kill -9 never loses an acknowledged ticket, and every hash chain still verifies."""

from __future__ import annotations

import random
import threading
import time

import pytest

from appliance.config import load_config
from sync.db import connect
from sync.keys import parse_public_key
from sync.log import verify_chains

from .conftest import copy_branch
from .procs import NodeProcess

pytestmark = pytest.mark.slow
KILLS = 22


def issue_until_dead(node: NodeProcess, acked: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            status, body = node.request("POST", "/api/v1/tickets", {"service": random.choice(["general", "payments"])},
                                        timeout=5)
        except OSError:
            return  # the node is gone
        if status == 201:
            acked.append(body["id"])


def test_sigkill_at_random_moments_loses_no_acknowledged_ticket(sample_template, tmp_path):
    paths = copy_branch(sample_template, tmp_path / "b")
    config = load_config(paths["kiosk"])
    keys = {r.id: parse_public_key(r.public_key) for r in config.roster}
    rnd = random.Random(20261122)
    acked: list[str] = []
    for round_ in range(KILLS):
        node = NodeProcess(paths["kiosk"], log_path=tmp_path / "node.log")
        try:
            # Everything acknowledged before every earlier kill is still here.
            _, state = node.request("GET", "/api/v1/state")
            for ticket_id in rnd.sample(acked, k=min(len(acked), 30)) + acked[-20:]:
                status, _ = node.request("GET", f"/api/v1/tickets/{ticket_id}")
                assert status == 200, f"round {round_}: acknowledged ticket {ticket_id} lost"
            stop = threading.Event()
            clients = [threading.Thread(target=issue_until_dead, args=(node, acked, stop)) for _ in range(3)]
            for c in clients:
                c.start()
            time.sleep(rnd.uniform(0.05, 0.5))
        finally:
            node.kill()  # SIGKILL, mid-write
        stop.set()
        for c in clients:
            c.join(timeout=10)
        conn = connect(config.data_dir / "smartq.db")
        try:
            assert verify_chains(conn, keys.get) == []
            stored = {r[0] for r in conn.execute("SELECT id FROM tickets")}
        finally:
            conn.close()
        missing = set(acked) - stored
        assert not missing, f"round {round_}: {len(missing)} acknowledged tickets lost: {sorted(missing)[:5]}"
    assert len(acked) > KILLS  # the clients really were issuing when the kills came
    labels = [t.split("-")[1] for t in acked]
    assert len(labels) == len(set(labels))
