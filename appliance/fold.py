"""The ticket fold: a ticket's state is a pure function of the set of its events.

Events are applied in the total order (hlc, origin, seq). Any delivery order gives the same
result because a late event makes the ticket re-fold from its sorted events (see
projection.py). Conflicts that only a partition can create are resolved here, by the rules
in docs/conflicts.md:

- every counter that calls a ticket holds a *claim* in the ticket's current generation;
  a claim climbs levels called(1) < serving(2) < no_show(3) < completed(4);
- the ticket's status is the level of the winning claim: the highest level, ties broken by
  the earliest call (hlc, origin, seq); every other claim is *superseded*;
- a cancel is void once any counter has claimed the ticket (called/served wins);
- requeue and transfer open a new generation (claims cleared, arrival time kept); the last
  transfer in the total order decides the service.
"""

from __future__ import annotations

from typing import Any

from sync.envelope import Event
from sync.hlc import physical_ms

from appliance import events as ev

LEVELS = {ev.TICKET_CALLED: 1, ev.TICKET_STARTED: 2, ev.TICKET_NO_SHOW: 3, ev.TICKET_COMPLETED: 4}
STATUS_BY_LEVEL = {1: "called", 2: "serving", 3: "no_show", 4: "completed"}
ACTIVE = ("called", "serving")
TicketState = dict[str, Any]


def event_key(event: Event) -> list[Any]:
    return [event.hlc, event.origin, event.seq]


def new_ticket(event: Event) -> TicketState:
    p = event.payload
    issued_ms = physical_ms(event.hlc)
    return {
        "id": p["ticket"],
        "label": p["label"],
        "number": p["number"],
        "day": p["day"],
        "service": p["service"],
        "issue_service": p["service"],
        "priority": p.get("priority", 0),
        "language": p.get("language"),
        "status_token": p.get("status_token"),
        "booking": p.get("booking"),
        "issued_by": event.origin,
        "issued_ms": issued_ms,
        "effective_ms": p.get("effective_ms", issued_ms),
        "generation": 0,
        "claims": {},
        "cancelled": False,
        "cancel_ignored": False,
        "reserved_counter": None,
        "transfers": [],
        "history": [],
        "last_key": event_key(event),
    }


def winner(state: TicketState) -> tuple[str, dict[str, Any]] | None:
    claims = state["claims"]
    if not claims:
        return None
    return min(claims.items(), key=lambda kv: (-kv[1]["level"], kv[1]["call_key"]))


def status(state: TicketState, won: tuple[str, dict[str, Any]] | None | bool = False) -> str:
    """The ticket's status; pass `won` when the caller already has winner(state)."""
    if won is False:
        won = winner(state)
    if won:
        return STATUS_BY_LEVEL[won[1]["level"]]
    return "cancelled" if state["cancelled"] else "waiting"


def superseded(state: TicketState, won: tuple[str, dict[str, Any]] | None | bool = False) -> list[str]:
    if won is False:
        won = winner(state)
    if not won:
        return []
    return sorted(c for c in state["claims"] if c != won[0])


def apply(state: TicketState | None, event: Event) -> TicketState | None:
    """Apply one ticket event in total order. Returns the new state (None: no ticket yet)."""
    if event.type == ev.TICKET_ISSUED:
        return new_ticket(event) if state is None else state
    if state is None:
        return None  # an event about a ticket whose issue has not arrived yet
    state["last_key"] = event_key(event)
    p = event.payload
    now_ms = physical_ms(event.hlc)
    current = status(state)
    counter = p.get("counter")
    claims: dict[str, dict[str, Any]] = state["claims"]

    def note(outcome: str) -> None:
        state["history"].append([event.type, counter, now_ms, outcome])

    if current == "completed":
        note("ignored: already completed")
        return state
    if event.type == ev.TICKET_CALLED:
        if counter in claims:
            claims[counter]["recalls"] += 1
            claims[counter]["called_ms"] = now_ms
        else:
            claims[counter] = {"level": 1, "call_key": event_key(event), "recalls": 0,
                               "called_ms": now_ms, "first_called_ms": now_ms}
            if state["cancelled"]:
                state["cancelled"] = False
                state["cancel_ignored"] = True
        note("ok")
    elif event.type == ev.TICKET_RECALLED:
        if counter in claims and claims[counter]["level"] == 1:
            claims[counter]["recalls"] += 1
            claims[counter]["called_ms"] = now_ms
            note("ok")
        else:
            note("ignored: no call to repeat")
    elif event.type in (ev.TICKET_STARTED, ev.TICKET_NO_SHOW, ev.TICKET_COMPLETED):
        claim = claims.get(counter)
        if claim is None:
            note("ignored: counter has not called this ticket")
        else:
            level = LEVELS[event.type]
            if level > claim["level"]:
                claim["level"] = level
                claim["started_ms" if level == 2 else "finished_ms"] = now_ms
            note("ok")
    elif event.type == ev.TICKET_CANCELLED:
        if claims:
            state["cancel_ignored"] = True
            note("ignored: already called")
        else:
            state["cancelled"] = True
            note("ok")
    elif event.type == ev.TICKET_REQUEUED:
        if current == "cancelled":
            note("ignored: cancelled")
        else:
            _new_generation(state)
            note("ok")
    elif event.type == ev.TICKET_TRANSFERRED:
        if current == "cancelled":
            note("ignored: cancelled")
        else:
            state["transfers"].append({"from_service": state["service"], "to_service": p.get("to_service"),
                                       "to_counter": p.get("to_counter"), "counter": counter, "at_ms": now_ms})
            _new_generation(state)
            if p.get("to_service"):
                state["service"] = p["to_service"]
            state["reserved_counter"] = p.get("to_counter")
            note("ok")
    return state


def _new_generation(state: TicketState) -> None:
    state["generation"] += 1
    state["claims"] = {}
    state["reserved_counter"] = None


def refold(events: list[Event], *, presorted: bool = False) -> TicketState | None:
    """A ticket's state from all its events, in any order."""
    state: TicketState | None = None
    for event in events if presorted else sorted(events, key=lambda e: e.key):
        state = apply(state, event)
    return state
