"""HQ's ticket.moved (the console's reassign between offices, docs/conflicts.md): the ticket leaves
the branch's line with status "moved", like a cancel; a counter's call the move did not know of
wins (the move is void), whatever order the events arrive in; a cancel and a move together end
"moved"; a transfer never brings a moved ticket back."""

from __future__ import annotations

import copy
import itertools

from sync.envelope import Event

from appliance import events as ev
from appliance import fold

T = "20300107-A007"


def e(origin: str, seq: int, ms: int, type_: str, **payload: object) -> Event:
    return Event(origin, seq, ms << 16, type_, 1, {"ticket": T, **payload}, "b", "")


ISSUED = e("kiosk", 1, 1_000, ev.TICKET_ISSUED, service="general", number=7, label="A007", day="20300107", priority=0)
MOVE = {"to_branch": "east", "to_service": "general", "booking": "ABCD-EFGH"}


def every_order(events: list[Event]) -> set[str]:
    """The status for every arrival order, folded as the projection folds arrivals
    (appliance/projection.py: apply in total order, else re-fold from all the ticket's events)."""
    out = set()
    for order in itertools.permutations(events):
        arrived: list[Event] = []
        state = None
        for event in order:
            arrived.append(event)
            if state is not None and event.key > tuple(state["last_key"]) and \
                    (step := fold.apply(copy.deepcopy(state), event)) is not fold.REFOLD:
                state = step
            elif state is None and event.type != ev.TICKET_ISSUED:
                continue  # folded when the issue arrives
            else:
                state = fold.refold(arrived)
        assert state == fold.refold(events), [x.type for x in order]
        out.add(fold.status(state))
    return out


def test_a_moved_ticket_leaves_the_line_and_says_where_it_went():
    moved = e("hq:b", 1, 5_000, ev.TICKET_MOVED, seen={"kiosk": 1}, **MOVE)
    state = fold.refold([ISSUED, moved])
    assert fold.status(state) == "moved" and state["moved"] == MOVE
    assert every_order([ISSUED, moved]) == {"moved"}


def test_a_call_the_move_did_not_know_of_wins_in_every_order():
    call = e("counter-1", 1, 4_000, ev.TICKET_CALLED, counter="c1", seen={"kiosk": 1})
    # HQ moved at 5.0 s without having the call (seen: only the issue); the counter called at
    # 4.0 s without having the move: concurrent, the call wins.
    moved = e("hq:b", 1, 5_000, ev.TICKET_MOVED, seen={"kiosk": 1}, **MOVE)
    assert every_order([ISSUED, call, moved]) == {"called"}
    state = fold.refold([ISSUED, moved, call])
    assert state["cancel_ignored"] and not state.get("moved")
    # The same when the move sorts first by the clock.
    early = e("hq:b", 1, 3_000, ev.TICKET_MOVED, seen={"kiosk": 1}, **MOVE)
    assert every_order([ISSUED, call, early]) == {"called"}


def test_a_cancel_and_a_move_end_moved_and_a_transfer_does_not_reopen_it():
    cancel = e("kiosk", 2, 4_000, ev.TICKET_CANCELLED)
    moved = e("hq:b", 1, 5_000, ev.TICKET_MOVED, seen={"kiosk": 1}, **MOVE)
    assert every_order([ISSUED, cancel, moved]) == {"moved"}
    transfer = e("counter-1", 1, 6_000, ev.TICKET_TRANSFERRED, counter="c1", to_service="payments",
                 seen={"kiosk": 1})
    assert every_order([ISSUED, moved, transfer]) == {"moved"}
