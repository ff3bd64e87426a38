"""The event contract: every event type and its payload, imported by the branch devices and
by HQ alike (docs/events.md explains each). HQ emits the `config.*`, `booking.*` and
`trust.revoked` events (HQ_TYPES); a device folds what `foldable` says and stores and forwards
the rest. The payload shapes are `TypedDict`s: what a writer must put in, what a reader may rely
on; readers still check values, since a signed payload is not a well-formed one.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

TICKET_ISSUED = "ticket.issued"
TICKET_CALLED = "ticket.called"
TICKET_RECALLED = "ticket.recalled"
TICKET_STARTED = "ticket.started"
TICKET_COMPLETED = "ticket.completed"
TICKET_NO_SHOW = "ticket.no_show"
TICKET_REQUEUED = "ticket.requeued"
TICKET_TRANSFERRED = "ticket.transferred"
TICKET_CANCELLED = "ticket.cancelled"
#: HQ moved a waiting ticket to another branch (the console's reassign, docs/console.md): it leaves
#: this branch's line; the receiving branch checks it in as a booking ({ticket, to_branch, to_service, booking}).
TICKET_MOVED = "ticket.moved"

COUNTER_OPENED = "counter.opened"
COUNTER_PAUSED = "counter.paused"
COUNTER_CLOSED = "counter.closed"

CONFIG_BRANCH = "config.branch"
CONFIG_SERVICE = "config.service"
CONFIG_COUNTER = "config.counter"
CONFIG_ROSTER = "config.roster"
#: Opening hours from HQ: {weekdays: {"0".."6": {opens, closes}}, closed_days: [{day, reason}]}.
CONFIG_HOURS = "config.hours"
#: HQ's staff list sealed to the branch's counter key: {sealed}. Not folded; counters open it.
CONFIG_STAFF = "config.staff"
#: An HQ-signed revocation: {device, serials, crl, after_seq}. Not folded; every node applies it.
TRUST_REVOKED = "trust.revoked"

# A wrong staff PIN at a counter: {counter, staff?}. Stored and replicated, not folded; every
# counter counts the branch's recent ones for its lock-out (appliance/staff.py).
STAFF_PIN_FAILED = "staff.pin_failed"

BOOKING_CREATED = "booking.created"
BOOKING_RESCHEDULED = "booking.rescheduled"
BOOKING_CANCELLED = "booking.cancelled"

TICKET_TYPES = frozenset({
    TICKET_ISSUED, TICKET_CALLED, TICKET_RECALLED, TICKET_STARTED, TICKET_COMPLETED,
    TICKET_NO_SHOW, TICKET_REQUEUED, TICKET_TRANSFERRED, TICKET_CANCELLED, TICKET_MOVED,
})
COUNTER_TYPES = {COUNTER_OPENED: "open", COUNTER_PAUSED: "paused", COUNTER_CLOSED: "closed"}
CONFIG_TYPES = frozenset({CONFIG_BRANCH, CONFIG_SERVICE, CONFIG_COUNTER, CONFIG_ROSTER, CONFIG_HOURS})
BOOKING_TYPES = frozenset({BOOKING_CREATED, BOOKING_RESCHEDULED, BOOKING_CANCELLED})

#: What HQ signs and ships to a branch (its chain "hq:<branch>").
HQ_TYPES = frozenset({CONFIG_BRANCH, CONFIG_SERVICE, CONFIG_COUNTER, CONFIG_ROSTER, CONFIG_HOURS, CONFIG_STAFF,
                      TRUST_REVOKED, TICKET_MOVED}) | BOOKING_TYPES

# The schema version this code folds; newer events are stored and forwarded, not folded.
SCHEMA = 1
KNOWN_TYPES = TICKET_TYPES | frozenset(COUNTER_TYPES) | CONFIG_TYPES | BOOKING_TYPES


def foldable(type_: str, schema: int) -> bool:
    return type_ in KNOWN_TYPES and schema <= SCHEMA


# -- payloads (docs/events.md) ----------------------------------------------------------------
class TicketIssued(TypedDict):
    ticket: str
    service: str
    number: int
    label: str
    day: str
    priority: int
    language: NotRequired[str]
    booking: NotRequired[str]
    effective_ms: NotRequired[int]
    status_token: NotRequired[str]
    phone_sealed: NotRequired[str]
    #: the wait shown at issue, seconds: {p50} and, once a model is trained, {p10, p90}
    estimate: NotRequired[dict[str, int]]


class TicketAction(TypedDict):
    """called, recalled, started, completed, no_show, requeued, transferred, cancelled."""
    ticket: str
    counter: NotRequired[str]
    seen: NotRequired[dict[str, int]]
    reason: NotRequired[str]
    to_service: NotRequired[str]
    to_counter: NotRequired[str]


class ConfigService(TypedDict):
    """config.service: one service of the branch (HQ's catalogue or the device file)."""
    id: str
    letter: str
    names: dict[str, str]
    rules: dict[str, int]
    order: int
    icon: NotRequired[str]  # the kiosk's pictogram (appliance.config.SERVICE_ICONS)
    enabled: NotRequired[bool]  # False: withdrawn from this branch; kiosks stop offering it


class TicketMoved(TypedDict):
    """ticket.moved (from HQ, in the chain hq:<from branch>): the ticket leaves this branch's line,
    unless a counter here called it concurrently (docs/conflicts.md). The receiving branch gets a
    booking.created with code ``booking`` and start = the ticket's effective time, so it keeps its
    place there when the citizen checks in."""
    ticket: str
    to_branch: str
    to_service: str
    booking: str


class CounterStatus(TypedDict):
    counter: str
    staff: NotRequired[str | None]


class Span(TypedDict):
    opens: str
    closes: str


class ClosedDay(TypedDict):
    day: str
    reason: NotRequired[str]


class ConfigHours(TypedDict):
    weekdays: dict[str, Span]
    closed_days: list[ClosedDay]


class ConfigStaff(TypedDict):
    sealed: str


class RosterDevice(TypedDict):
    id: str
    role: Literal["kiosk", "display", "counter"]
    public_key: str
    numbers: NotRequired[str | None]


class ConfigRoster(TypedDict):
    devices: list[RosterDevice]


class TrustRevoked(TypedDict):
    device: str
    serials: list[str]
    crl: str
    after_seq: int


class Booking(TypedDict):
    code: str
    service: str
    start: int
    end: int
    status: str
    language: NotRequired[str]
    source: NotRequired[str]
    #: booking.created of a booking or ticket moved here from another branch: that branch's id.
    moved_from: NotRequired[str]
    #: booking.cancelled of a booking moved to another branch: that branch's id.
    moved_to: NotRequired[str]

