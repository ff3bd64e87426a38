"""Benchmark: LAN replication between real `smartq node` processes in network namespaces
(needs root). Five devices (kiosk, display, three counters) find each other by mDNS.

Figures, written to bench/results/replication.json:
- call -> display stream: a counter node answers `call-next`; time from sending that request
  (inside the counter's namespace) until the display node's /api/v1/stream delivers the
  `ticket.called` event (inside the display's namespace). CLOCK_MONOTONIC is shared by all
  network namespaces, so the two times compare directly. p50/p99 over --calls calls.
- heal: the LAN is split (kiosk + counter-1 + counter-2 | display + counter-3) while about
  --events events accumulate on the two sides (tickets, then counter pause/open events, which
  take the same ingest path); time from `heal()` until every node's log holds every event,
  read from each node's SQLite heads (the projection commits in the same transaction, so the
  state hashes are equal then: checked through the API afterwards).
- discovery after link-up: measured by bench_discovery.py; copied from its results.

The nodes replicate over mutual TLS (the sample branch's local CA), as deployed; `--plain`
runs the same over plain HTTP (results in replication-plain.json) to show what TLS costs.

Run: .venv/bin/python -m bench.bench_replication [--calls 1000] [--events 10000] [--rounds 3] [--plain]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, latency_summary, percentile, write  # noqa: E402
from sync.db import connect  # noqa: E402
from sync.log import version_vector  # noqa: E402
from tests.branch.netns import Network, unavailable_reason  # noqa: E402
from tests.branch.replicated import (  # noqa: E402
    DEVICES, drive, drive_bg, finish, hashes, make_branch, start_nodes, wait_converged,
)

ENV = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
       "SMARTQ_LOG_LEVEL": "warning"}
PY = sys.executable


def call_latency(net: Network, nodes: dict[str, Any], calls: int) -> dict[str, Any]:
    drive(net, nodes["kiosk"], "issue", {"n": calls + 20, "services": ["general", "payments"]}, python=PY, env=ENV,
          timeout=600)
    wait_converged(net, nodes.values(), python=PY, env=ENV)
    watcher = drive_bg(net, nodes["display"], "stream", {"seconds": 900}, python=PY, env=ENV, name="bench-stream")
    time.sleep(1.0)
    sent = drive(net, nodes["counter-1"], "calls", {"counter": "c1", "n": calls}, python=PY, env=ENV,
                 timeout=900)["calls"]
    deadline = time.monotonic() + 10
    wanted = {ticket for ticket, *_ in sent}
    while time.monotonic() < deadline:
        seen = {line["data"]["event"]["payload"]["ticket"]: line["t"] for line in watcher.json_lines()
                if line.get("event") == "ticket.called" and line["data"]["event"]["origin"] == "counter-1"}
        if wanted <= set(seen):
            break
        time.sleep(0.2)
    watcher.stop()
    latencies = [seen[ticket] - t0 for ticket, t0, _ in sent if ticket in seen]
    answered = [t1 - t0 for _, t0, t1 in sent]
    after_answer = [seen[ticket] - t1 for ticket, _, t1 in sent if ticket in seen]
    return {"calls": len(sent), "seen_on_display": len(latencies), **latency_summary(latencies),
            "call_next_answered": latency_summary(answered),
            "answer_to_display_stream": latency_summary(after_answer)}


def heads(branch: Path, device: str) -> dict[str, int]:
    conn = connect(branch / "data" / device / "smartq.db", readonly=True)
    try:
        return version_vector(conn)
    finally:
        conn.close()


def heal_round(net: Network, nodes: dict[str, Any], branch: Path, events: int) -> dict[str, Any]:
    side_a = [nodes[d].host for d in ("kiosk", "counter-1", "counter-2")]
    side_b = [nodes[d].host for d in ("display", "counter-3")]
    before = {d: heads(branch, d) for d in DEVICES}
    net.partition(side_a, side_b)
    time.sleep(0.5)
    # About half the events on each side: some tickets, then counter status events.
    per_side = events // 2
    jobs = [
        drive_bg(net, nodes["kiosk"], "issue", {"n": 300, "services": ["documents"]}, python=PY, env=ENV,
                 name="heal-issue-a"),
        drive_bg(net, nodes["counter-1"], "toggle", {"n": per_side - 300 - 1, "concurrency": 4, "counter": "c1"},
                 python=PY, env=ENV, name="heal-toggle-a"),
        drive_bg(net, nodes["counter-3"], "issue", {"n": 90, "services": ["payments"]}, python=PY, env=ENV,
                 name="heal-issue-b"),
        drive_bg(net, nodes["counter-3"], "toggle", {"n": per_side - 90 - 1, "concurrency": 4, "counter": "c3"},
                 python=PY, env=ENV, name="heal-toggle-b"),
    ]
    for job in jobs:
        finish(job, timeout=900)
    # Let each side settle, so the figure is the heal alone.
    for group in (("kiosk", "counter-1", "counter-2"), ("display", "counter-3")):
        deadline = time.monotonic() + 120
        while len({json.dumps(heads(branch, d), sort_keys=True) for d in group}) > 1:
            assert time.monotonic() < deadline, "a side did not settle"
            time.sleep(0.2)
    accumulated = sum(
        sum(v for v in heads(branch, d).values()) - sum(v for v in before[d].values())
        for d in ("kiosk", "counter-3")
    )  # each side's full log grew by its own side's events
    union: dict[str, int] = {}
    for d in DEVICES:
        for origin, seq in heads(branch, d).items():
            union[origin] = max(union.get(origin, 0), seq)
    t0 = time.monotonic()
    net.heal()
    done: dict[str, float] = {}
    deadline = t0 + 120
    while len(done) < len(DEVICES):
        for d in DEVICES:
            if d not in done and heads(branch, d) == union:
                done[d] = time.monotonic() - t0
        assert time.monotonic() < deadline, f"no convergence: {done}"
        time.sleep(0.01)
    digests = hashes(net, nodes.values(), python=PY, env=ENV)
    assert len(set(digests.values())) == 1, digests
    return {"events_accumulated": accumulated, "heal_s": round(max(done.values()), 3),
            "per_node_s": {d: round(t, 3) for d, t in sorted(done.items())}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", action="store_true",
                        help="replicate over plain HTTP ([lan] tls = false): the baseline for the cost of mutual TLS")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench_replication: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-repl-") as tmp:
        branch = Path(tmp) / "branch"
        net = Network.create(Path(tmp) / "lan")
        try:
            lan = None
            if args.plain:
                from tests.branch.replicated import LAN_PORT, LAN_SECTION
                lan = LAN_SECTION.format(port=LAN_PORT) + "tls = false\n"
            configs = make_branch(branch, lan=lan)
            nodes = start_nodes(net, configs, DEVICES, python=PY, env=ENV)
            latency = call_latency(net, nodes, args.calls)
            heals = [heal_round(net, nodes, branch, args.events) for _ in range(args.rounds)]
        finally:
            net.close()
    discovery = {}
    path = RESULTS / "discovery.json"
    if path.exists():
        discovery = json.loads(path.read_text()).get("link_up_to_all_tables_complete", {})
    heal_times = [h["heal_s"] for h in heals]
    write("replication-plain" if args.plain else "replication", {
        "setup": "5 smartq nodes (kiosk, display, counter-1..3), one network namespace each, one bridge, mDNS; "
                 f"{'plain HTTP (tls = false)' if args.plain else 'mutual TLS 1.3 pinned to the org CA'}; "
                 "2-core machine shared with other work",
        "load_average": os.getloadavg(),
        "call_to_display_stream": latency,
        "targets": {"call_to_display_stream_p99_ms": 50, "heal_10000_events_s": 2.0},
        "heal": {"rounds": heals, "p50_s": percentile(heal_times, 50), "max_s": max(heal_times)},
        "discovery_link_up_s": {k: discovery.get(k) for k in ("n", "p50_s", "p90_s", "max_s")},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
