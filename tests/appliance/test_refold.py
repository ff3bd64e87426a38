"""A whole re-fold gives the state the log folds to, whatever the projection held before:
rows that differ are rewritten, rows that should not exist are dropped, an empty projection
is bulk loaded and keeps every index and trigger, and the per-minute line counts stay true."""

from __future__ import annotations

import gc

from appliance.projection import state_hash

from .test_conflicts import act, call_next, issue, open_counter


def _indexes(d) -> set[tuple[str, str]]:
    return set(d.do(lambda c: c.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tickets'").fetchall()))


def _counts_agree(d) -> bool:
    """The per-minute line counts the triggers keep equal a count of the waiting tickets."""
    def read(conn):
        kept = set(map(tuple, conn.execute("SELECT service, day, priority, minute, n FROM line_counts WHERE n != 0")))
        fresh = set(map(tuple, conn.execute("SELECT service, day, priority, effective_ms / 60000, count(*) FROM tickets"
                                 " WHERE status = 'waiting' GROUP BY 1, 2, 3, 4")))
        return kept == fresh and bool(fresh)
    return d.do(read)


def test_refold_repairs_changed_and_stray_rows_and_refills_an_empty_projection(branch):
    d = branch["kiosk"]
    open_counter(d, "c1")
    for i in range(150):
        issue(d, ("general", "payments")[i % 2], priority=int(i % 7 == 0))
        branch["clock"].ms += 20_000
        if i % 3 == 0:
            t = call_next(d, "c1")
            act(d, "c1", t["id"], "start")
            if i % 2:
                act(d, "c1", t["id"], "complete")
    good = d.do(state_hash)
    indexes = _indexes(d)
    assert _counts_agree(d)

    def tamper(conn) -> None:
        conn.execute("UPDATE tickets SET status = 'completed', state = '{}' WHERE id = (SELECT min(id) FROM tickets)")
        conn.execute("INSERT INTO tickets SELECT 'stray', day, 'Z999', number, service, issue_service, issued_by,"
                     " status, priority, effective_ms, issued_ms, counter, reserved_counter, called_ms, started_ms,"
                     " finished_ms, recalls, booking, superseded, state FROM tickets LIMIT 1")
        conn.execute("DELETE FROM counter_status")

    d.do(tamper)
    assert d.do(state_hash) != good
    d.do(d.node.projection.rebuild)
    assert d.do(state_hash) == good
    assert _counts_agree(d)

    d.do(lambda conn: conn.execute("DELETE FROM tickets"))
    d.do(d.node.projection.rebuild)
    assert d.do(state_hash) == good
    assert _indexes(d) == indexes and _counts_agree(d)
    # and the commands after it keep them
    for _ in range(5):
        issue(d, "payments")
        branch["clock"].ms += 90_000
    t = call_next(d, "c1")
    act(d, "c1", t["id"], "start")
    act(d, "c1", t["id"], "transfer", to_service="documents")
    assert _counts_agree(d)
    assert gc.isenabled()
