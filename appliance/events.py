"""The queue's event types (payloads are listed in docs/events.md)."""

from __future__ import annotations

TICKET_ISSUED = "ticket.issued"
TICKET_CALLED = "ticket.called"
TICKET_RECALLED = "ticket.recalled"
TICKET_STARTED = "ticket.started"
TICKET_COMPLETED = "ticket.completed"
TICKET_NO_SHOW = "ticket.no_show"
TICKET_REQUEUED = "ticket.requeued"
TICKET_TRANSFERRED = "ticket.transferred"
TICKET_CANCELLED = "ticket.cancelled"

COUNTER_OPENED = "counter.opened"
COUNTER_PAUSED = "counter.paused"
COUNTER_CLOSED = "counter.closed"

CONFIG_BRANCH = "config.branch"
CONFIG_SERVICE = "config.service"
CONFIG_COUNTER = "config.counter"
CONFIG_ROSTER = "config.roster"
#: Opening hours from HQ: {weekdays: {"0".."6": {opens, closes}}, closed_days: [{day, reason}]}.
CONFIG_HOURS = "config.hours"

# A wrong staff PIN at a counter: {counter, staff?}. Stored and replicated, not folded; every
# counter counts the branch's recent ones for its lock-out (appliance/staff.py).
STAFF_PIN_FAILED = "staff.pin_failed"

BOOKING_CREATED = "booking.created"
BOOKING_RESCHEDULED = "booking.rescheduled"
BOOKING_CANCELLED = "booking.cancelled"

TICKET_TYPES = frozenset({
    TICKET_ISSUED, TICKET_CALLED, TICKET_RECALLED, TICKET_STARTED, TICKET_COMPLETED,
    TICKET_NO_SHOW, TICKET_REQUEUED, TICKET_TRANSFERRED, TICKET_CANCELLED,
})
COUNTER_TYPES = {COUNTER_OPENED: "open", COUNTER_PAUSED: "paused", COUNTER_CLOSED: "closed"}
CONFIG_TYPES = frozenset({CONFIG_BRANCH, CONFIG_SERVICE, CONFIG_COUNTER, CONFIG_ROSTER, CONFIG_HOURS})
BOOKING_TYPES = frozenset({BOOKING_CREATED, BOOKING_RESCHEDULED, BOOKING_CANCELLED})

# The schema version this code folds; newer events are stored and forwarded, not folded.
SCHEMA = 1
KNOWN_TYPES = TICKET_TYPES | frozenset(COUNTER_TYPES) | CONFIG_TYPES | BOOKING_TYPES


def foldable(type_: str, schema: int) -> bool:
    return type_ in KNOWN_TYPES and schema <= SCHEMA
