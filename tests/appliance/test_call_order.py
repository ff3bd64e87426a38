"""Call-next and positions read from indexes agree with the queue rules (appliance.queue).

queue.next_for_counter and queue.service_line are the plain statement of the call order
(DESIGN §5); the node answers from index seeks instead (Queries.next_waiting and the position
count). Random lines of a real SQLite projection, with priority classes, promotion by age,
ties on effective time, transfers to a named counter and other days, must give the same
choice and the same positions."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import queue as q
from appliance.config import load_config
from appliance.node import Node
from appliance.projection import TICKET_UPSERT

from .conftest import START_MS, ManualClock, copy_branch

SERVICES = ["general", "payments", "documents"]
COUNTERS = ["c1", "c2", "c3"]
TODAY = "2026-11-18"
PROMOTE_MS = 1800 * 1000  # the sample's promote_after_s

ticket = st.tuples(
    st.sampled_from(SERVICES),
    st.integers(0, 1),                                   # priority class
    st.integers(-2 * PROMOTE_MS, 0),                     # effective time relative to now
    st.sampled_from([None, None, None, None, "c1", "c3"]),  # transferred to a named counter
    st.sampled_from([TODAY, TODAY, TODAY, "2026-11-17"]),
)
lines = st.lists(ticket, min_size=0, max_size=40)


def _row(i: int, service: str, priority: int, effective_ms: int, reserved: str | None, day: str) -> tuple:
    return (f"t{i:03d}", day, f"X{i:03d}", i, service, service, "kiosk", "waiting", priority, effective_ms,
            effective_ms, None, reserved, None, None, None, 0, None, None, "{}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tickets=lines, coarse=st.booleans())
def test_index_call_order_equals_the_queue_rules(sample_template: Path, tickets, coarse: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = copy_branch(sample_template, Path(tmp) / "b")
        clock = ManualClock(START_MS + 10 * 3600 * 1000)
        node = Node(load_config(paths["kiosk"]), clock=clock)
        node.open()
        try:
            now = clock.ms
            rows = []
            for i, (service, priority, offset, reserved, day) in enumerate(tickets):
                if coarse:
                    offset = offset // 600_000 * 600_000  # many ties on effective time
                rows.append(_row(i, service, priority, now + offset, reserved, day))

            def check(conn) -> None:
                conn.executemany(TICKET_UPSERT, rows)
                m = node.branch.model(conn, writer=True)
                waiting = [q.Waiting(r[0], r[4], r[8], r[9], r[12]) for r in rows if r[1] == TODAY]
                rules = {s: m.rules_for(s) for s in m.services}
                for counter in COUNTERS:
                    expected = q.next_for_counter(waiting, counter, m.counters[counter].services, rules, now)
                    got = node.branch.next_waiting(conn, m, counter, TODAY, now)
                    assert got == (expected.id if expected else None), counter
                for service in SERVICES:
                    for position, t in enumerate(q.service_line(waiting, service, rules[service], now), 1):
                        view = node.branch.ticket(conn, t.id, model=m)
                        assert view["position"] == position, (service, t.id)

            node.writer.call(check)
        finally:
            node.close()
