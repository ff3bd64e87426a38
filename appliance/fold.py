"""The ticket fold: a ticket's state is a pure function of the set of its events.

Events are applied in the total order (hlc, origin, seq). Any delivery order gives the same
result because a late event makes the ticket re-fold from its sorted events (see
projection.py). Conflicts that only a partition can create are resolved here, by the rules
in docs/conflicts.md; none is decided by clock order alone:

- every counter that calls a ticket holds a *claim* in the ticket's current generation;
  a claim climbs levels called(1) < serving(2) < no_show(3) < completed(4);
- the ticket's status is the level of the winning claim: the highest level, ties broken by
  the earliest call (hlc, origin, seq); every other claim is *superseded*, and so is every
  counter whose call was overtaken by a requeue or transfer it did not know of (`lost`);
- *concurrent* means made without knowing of each other: each action event says which of the
  ticket's events its device had folded (payload `seen`, {origin: highest seq}; events from
  before that field count as having seen everything earlier in the total order);
- a requeue or transfer opens a new generation (claims cleared, arrival time kept; the last
  one in the total order decides the service), unless it is concurrent with a start, no-show
  or completion: a counter had the citizen, so the requeue or transfer is void; a completed
  ticket is never reopened;
- a cancel is void once any counter has claimed the ticket or called it concurrently
  (called/served wins); so is HQ's move of the ticket to another branch (`ticket.moved`), which
  otherwise closes it like a cancel, with the status "moved".
"""

from __future__ import annotations

from typing import Any

from sync.envelope import Event
from sync.hlc import physical_ms

from appliance import events as ev

LEVELS = {ev.TICKET_CALLED: 1, ev.TICKET_STARTED: 2, ev.TICKET_NO_SHOW: 3, ev.TICKET_COMPLETED: 4}
STATUS_BY_LEVEL = {1: "called", 2: "serving", 3: "no_show", 4: "completed"}
ACTIVE = ("called", "serving")
# A counter had the citizen: these void a concurrent requeue or transfer.
PROGRESS = frozenset({ev.TICKET_STARTED, ev.TICKET_NO_SHOW, ev.TICKET_COMPLETED})
OPENERS = frozenset({ev.TICKET_REQUEUED, ev.TICKET_TRANSFERRED})
# The ticket leaves the line without being served: void against a concurrent call.
CLOSERS = frozenset({ev.TICKET_CANCELLED, ev.TICKET_MOVED})
TicketState = dict[str, Any]
Key = list[Any]  # [hlc, origin, seq]


class _Refold:
    """Returned by apply() when the event changes how earlier events fold (it voids a
    requeue, transfer or cancel applied before it): re-fold the ticket from all its events."""

    def __repr__(self) -> str:
        return "REFOLD"


REFOLD = _Refold()


def event_key(event: Event) -> list[Any]:
    return [event.hlc, event.origin, event.seq]


def saw(event: Event, key: Key) -> bool:
    """Had `event`'s device folded the event with `key` when it made `event`?

    Events carry `seen` ({origin: highest seq of this ticket's events folded there}); an
    origin's events are stored without gaps, so the highest seq covers all before it. An
    event without `seen` (made before the field existed) counts as having seen every event
    before it in the total order, which is how those events always folded."""
    hlc, origin, seq = key
    if origin == event.origin:
        return seq < event.seq
    seen = event.payload.get("seen")
    if not isinstance(seen, dict):
        return (hlc, origin, seq) < (event.hlc, event.origin, event.seq)
    have = seen.get(origin)
    return isinstance(have, int) and have >= seq


def concurrent(a: Event, b: Event) -> bool:
    return not saw(a, event_key(b)) and not saw(b, event_key(a))


def _missed(event: Event, heads: dict[str, int]) -> bool:
    """Did `event` miss any of the events summarised by `heads` ({origin: highest seq})?
    Those events all precede `event` in the total order."""
    seen = event.payload.get("seen")
    if not isinstance(seen, dict):
        return False
    for origin, seq in heads.items():
        if origin != event.origin:
            have = seen.get(origin)
            if not isinstance(have, int) or have < seq:
                return True
    return False


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
        "opener": None,
        "claims": {},
        "lost": [],
        "calls": {},
        "progress": {},
        "openers": [],
        "cancels": [],
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
    if state["cancelled"]:
        return "moved" if state.get("moved") else "cancelled"
    return "waiting"


def superseded(state: TicketState, won: tuple[str, dict[str, Any]] | None | bool = False) -> list[str]:
    """Counters whose call lost: other claims than the winner's, and counters whose call a
    requeue or transfer overtook without knowing of it."""
    if won is False:
        won = winner(state)
    lost = state.get("lost") or ()
    if not won:
        return list(lost)
    return sorted({*state["claims"], *lost} - {won[0]})


def apply(state: TicketState | None, event: Event, *, void: bool = False,
          refolding: bool = False) -> TicketState | None | _Refold:
    """Apply one ticket event in total order. Returns the new state (None: no ticket yet),
    or REFOLD when the ticket must be re-folded from all its events (see _Refold).

    `void`: the re-fold found the event void (see voided()); `refolding`: never ask for
    REFOLD (the re-fold already knows every event)."""
    if event.type == ev.TICKET_ISSUED:
        return new_ticket(event) if state is None else state
    if state is None:
        return None  # an event about a ticket whose issue has not arrived yet
    if "lost" not in state:
        _upgrade(state)
    type_ = event.type
    key = [event.hlc, event.origin, event.seq]
    # Record what later events are checked against, and spot the (rare) event that voids
    # one applied before it.
    if type_ == ev.TICKET_CALLED:
        if state["cancels"] and not refolding and any(not saw(event, k) for k in state["cancels"]):
            return REFOLD
        heads = state["calls"]
        if heads.get(event.origin, 0) < event.seq:
            heads[event.origin] = event.seq
    elif type_ in PROGRESS:
        if state["openers"] and not refolding and any(not saw(event, k) for k in state["openers"]):
            return REFOLD
        heads = state["progress"]
        if heads.get(event.origin, 0) < event.seq:
            heads[event.origin] = event.seq
    elif type_ in OPENERS:
        state["openers"].append(key)
        void = void or _missed(event, state["progress"])
    elif type_ in CLOSERS:
        state["cancels"].append(key)
        void = void or _missed(event, state["calls"])
    state["last_key"] = key
    p = event.payload
    now_ms = physical_ms(event.hlc)
    current = status(state)
    counter = p.get("counter")
    claims: dict[str, dict[str, Any]] = state["claims"]

    def note(outcome: str) -> None:
        state["history"].append([type_, counter, now_ms, outcome])

    if void:
        if type_ in CLOSERS:
            state["cancel_ignored"] = True
        note("void: a counter had the citizen meanwhile" if type_ in OPENERS
             else "void: a counter called the ticket meanwhile")
        return state
    if type_ in (ev.TICKET_CALLED, ev.TICKET_RECALLED) and state["opener"] is not None \
            and not saw(event, state["opener"]):
        # Made in a generation a requeue or transfer has closed, without knowing of it.
        if type_ == ev.TICKET_CALLED:
            _lose(state, counter)
            note("lost: the ticket was requeued or transferred meanwhile")
        else:
            note("ignored: the ticket was requeued or transferred meanwhile")
        return state
    if type_ == ev.TICKET_CALLED:
        if counter in claims:
            claims[counter]["recalls"] += 1
            claims[counter]["called_ms"] = now_ms
        else:
            claims[counter] = {"level": 1, "call_key": key, "recalls": 0,
                               "called_ms": now_ms, "first_called_ms": now_ms}
            if state["cancelled"]:
                state["cancelled"] = False
                state["cancel_ignored"] = True
                if state.get("moved"):
                    state["moved"] = None
        note("ok" if current != "completed" else "superseded: already completed")
    elif type_ == ev.TICKET_RECALLED:
        if counter in claims and claims[counter]["level"] == 1:
            claims[counter]["recalls"] += 1
            claims[counter]["called_ms"] = now_ms
            note("ok")
        else:
            note("ignored: no call to repeat")
    elif type_ in PROGRESS:
        claim = claims.get(counter)
        if claim is None:
            note("ignored: counter has not called this ticket")
        else:
            level = LEVELS[type_]
            if level > claim["level"]:
                claim["level"] = level
                claim["started_ms" if level == 2 else "finished_ms"] = now_ms
            note("ok")
    elif type_ in CLOSERS:
        if claims:
            state["cancel_ignored"] = True
            note("ignored: already called")
        else:
            state["cancelled"] = True
            if type_ == ev.TICKET_MOVED:
                state["moved"] = {"to_branch": p.get("to_branch"), "to_service": p.get("to_service"),
                                  "booking": p.get("booking")}
            note("ok")
    elif current in ("cancelled", "completed", "moved"):  # requeue, transfer
        note(f"ignored: {current}")
    elif type_ == ev.TICKET_REQUEUED:
        _new_generation(state, event)
        note("ok")
    elif type_ == ev.TICKET_TRANSFERRED:
        state["transfers"].append({"from_service": state["service"], "to_service": p.get("to_service"),
                                   "to_counter": p.get("to_counter"), "counter": counter, "at_ms": now_ms})
        _new_generation(state, event)
        if p.get("to_service"):
            state["service"] = p["to_service"]
        state["reserved_counter"] = p.get("to_counter")
        note("ok")
    return state


def _lose(state: TicketState, counter: Any) -> None:
    if isinstance(counter, str) and counter not in state["lost"]:
        state["lost"] = sorted([*state["lost"], counter])


def _new_generation(state: TicketState, event: Event) -> None:
    """Close the current generation: its claims go; a counter whose call lost, or whose
    call the requeue/transfer did not know of, is told (superseded); never the counter that
    made the requeue/transfer."""
    won = winner(state)
    mover = event.payload.get("counter")
    for counter, claim in state["claims"].items():
        if counter != mover and (won is None or counter != won[0] or not saw(event, claim["call_key"])):
            _lose(state, counter)
    state["generation"] += 1
    state["opener"] = event_key(event)
    state["claims"] = {}
    state["reserved_counter"] = None


def _upgrade(state: TicketState) -> None:
    """A state folded before the causal rules (the projection migration re-folds them all;
    this only keeps a stray old state foldable)."""
    for name, empty in (("opener", None), ("lost", []), ("calls", {}), ("progress", {}),
                        ("openers", []), ("cancels", [])):
        state.setdefault(name, empty)


def voided(events: list[Event]) -> set[tuple[str, int]]:
    """(origin, seq) of the events the causal rules void, from all of a ticket's events:
    a requeue or transfer concurrent with a start, no-show or completion; a cancel
    concurrent with a call. apply() finds the same one event at a time: an event voided by
    one before it is void on arrival (`_missed`); one that voids an event before it asks
    for REFOLD, and the re-fold passes this set."""
    openers = [e for e in events if e.type in OPENERS]
    cancels = [e for e in events if e.type in CLOSERS]
    out: set[tuple[str, int]] = set()
    if openers:
        progress = [e for e in events if e.type in PROGRESS]
        out.update((g.origin, g.seq) for g in openers if any(concurrent(g, p) for p in progress))
    if cancels:
        calls = [e for e in events if e.type == ev.TICKET_CALLED]
        out.update((k.origin, k.seq) for k in cancels if any(concurrent(k, c) for c in calls))
    return out


def refold(events: list[Event], *, presorted: bool = False) -> TicketState | None:
    """A ticket's state from all its events, in any order.

    Folded as they would arrive one by one in total order; only when an event voids one
    before it (apply says REFOLD) is the void set computed from all events and the ticket
    folded again with it. Both give the same state: see voided()."""
    ordered = events if presorted else sorted(events, key=lambda e: e.key)
    state: TicketState | None = None
    for event in ordered:
        result = apply(state, event)
        if result is REFOLD:
            break
        state = result  # type: ignore[assignment]
    else:
        return state
    void = voided(ordered)
    state = None
    for event in ordered:
        state = apply(state, event, void=(event.origin, event.seq) in void, refolding=True)  # type: ignore[assignment]
    return state
