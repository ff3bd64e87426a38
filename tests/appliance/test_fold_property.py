"""Property: any delivery order of the same events, with duplicates, folds to one state.

Random command sequences run on three simulated devices that replicate only when the
sequence says so (partitions); then every device and a fresh observer receive all events in
shuffled, duplicated batches and must agree on the state hash, with no ticket active at two
counters and no number given twice.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from appliance.config import load_config
from appliance.projection import state_hash

from .conftest import Device, ManualClock, copy_branch

ISSUERS = ["kiosk", "counter-1", "counter-2"]
COUNTERS = {"c1": "counter-1", "c2": "counter-2", "c3": "counter-2"}
SERVICES = ["general", "payments", "documents"]

issue = st.tuples(st.just("issue"), st.sampled_from(ISSUERS), st.sampled_from(SERVICES), st.integers(0, 1))
call = st.tuples(st.just("call"), st.sampled_from(sorted(COUNTERS)))
act = st.tuples(st.sampled_from(["start", "start", "complete", "no-show", "recall", "requeue"]),
                st.sampled_from(sorted(COUNTERS)))
sync = st.one_of(st.tuples(st.just("sync"), st.sampled_from(ISSUERS), st.sampled_from(ISSUERS)),
                st.tuples(st.just("broadcast"), st.sampled_from(ISSUERS)))
# Repeated alternatives weight the mix towards what makes conflicts: issue, sync, call, act.
command = st.one_of(
    issue, issue, call, call, act, act, sync, sync,
    st.tuples(st.just("transfer"), st.sampled_from(sorted(COUNTERS)), st.sampled_from(SERVICES)),
    st.tuples(st.just("cancel"), st.sampled_from(ISSUERS)),
    st.tuples(st.just("tick"), st.integers(1, 120_000)),
)


def run(devices: dict[str, Device], clock: ManualClock, commands) -> None:
    for cmd in commands:
        clock.ms += 7
        kind = cmd[0]
        if kind == "issue":
            _, dev, service, priority = cmd
            devices[dev].try_do(lambda c: devices[dev].node.branch.issue(c, {"service": service, "priority": priority}))
        elif kind == "call":
            counter = cmd[1]
            d = devices[COUNTERS[counter]]
            d.try_do(lambda c: d.node.branch.call_next(c, counter))
        elif kind in ("start", "complete", "no-show", "recall", "requeue", "transfer"):
            counter = cmd[1]
            d = devices[COUNTERS[counter]]
            current = d.do(lambda c: d.node.branch.counter(c, counter))["current"]
            if current is None:
                continue
            body = {"to_service": cmd[2]} if kind == "transfer" else {}
            d.try_do(lambda c: d.node.branch.act(c, counter, current["id"], kind, body))
        elif kind == "cancel":
            d = devices[cmd[1]]
            waiting = d.do(lambda c: d.node.branch.state(c))["waiting"]
            if waiting:
                d.try_do(lambda c: d.node.branch.cancel(c, waiting[-1]["id"]))
        elif kind == "sync":
            src, dst = devices[cmd[1]], devices[cmd[2]]
            if src is not dst:
                dst.ingest(src.events())
        elif kind == "broadcast":
            src = devices[cmd[1]]
            for dst in devices.values():
                if dst is not src:
                    dst.ingest(src.events())
        elif kind == "tick":
            clock.ms += cmd[1]


def deliver(device: Device, events, rnd) -> None:
    batch = [e.to_dict() for e in events] + [e.to_dict() for e in rnd.sample(events, k=min(len(events), 5))]
    rnd.shuffle(batch)
    while batch:
        size = rnd.randint(1, 8)
        chunk, batch = batch[:size], batch[size:]
        result = device.ingest(chunk)
        assert result.rejected == []


def check_invariants(device: Device) -> None:
    state = device.do(lambda c: device.node.branch.state(c))
    active = [c["current"]["id"] for c in state["counters"] if c["current"]]
    assert len(active) == len(set(active)), "one ticket active at two counters"
    rows = device.do(lambda c: c.execute(
        "SELECT counter, count(*) FROM tickets WHERE status IN ('called','serving') GROUP BY counter").fetchall())
    assert all(n == 1 for _, n in rows), "a counter holds two active tickets"
    issued = [e for e in device.events() if e.type == "ticket.issued"]
    labels = Counter((e.payload["day"], e.payload["label"]) for e in issued)
    assert all(n == 1 for n in labels.values()), "a ticket number was given twice"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(command, min_size=10, max_size=80), rnd=st.randoms(use_true_random=False),
       seed_tickets=st.lists(st.sampled_from(SERVICES), min_size=1, max_size=8),
       skews=st.tuples(*[st.integers(-90_000, 90_000)] * 3))
def test_every_delivery_order_gives_the_same_state(sample_template, commands, rnd, seed_tickets, skews):
    with tempfile.TemporaryDirectory() as tmp:
        paths = copy_branch(sample_template, Path(tmp) / "b")
        clock = ManualClock()
        devices = {name: Device(load_config(paths[name]), clock.skewed(skew)) for name, skew in zip(ISSUERS, skews)}
        observer = Device(load_config(paths["display"]), clock)
        try:
            for counter, dev in COUNTERS.items():
                devices[dev].do(lambda c: devices[dev].node.branch.set_counter(c, counter, "open", None))
            # Every device starts from the same queue, then they go their own ways.
            run(devices, clock, [("issue", "kiosk", s, 0) for s in seed_tickets] + [("broadcast", "kiosk")])
            run(devices, clock, commands)
            everything = {(e.origin, e.seq): e for d in devices.values() for e in d.events()}
            events = list(everything.values())
            for d in [*devices.values(), observer]:
                deliver(d, events, rnd)
            hashes = {name: d.do(state_hash) for name, d in {**devices, "observer": observer}.items()}
            assert len(set(hashes.values())) == 1, hashes
            # A whole re-fold from the log gives the same state as the incremental fold.
            observer.do(observer.node.projection.rebuild)
            assert observer.do(state_hash) == hashes["observer"]
            for d in [*devices.values(), observer]:
                check_invariants(d)
            # Steer generation towards partitions that really conflict.
            conflicts = observer.do(lambda c: c.execute(
                "SELECT count(*) FROM tickets WHERE superseded IS NOT NULL").fetchone()[0])
            target(float(conflicts), label="tickets called concurrently at two counters")
            event(f"conflicting calls: {min(conflicts, 3)}{'+' if conflicts > 3 else ''}")
        finally:
            for d in [*devices.values(), observer]:
                d.close()
