"""Queue rules (DESIGN §5): who is called next, ticket numbers, wait estimates.

Pure functions over plain rows; the current time is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from appliance.config import QueueRules


@dataclass(frozen=True, slots=True)
class Waiting:
    """The columns of a waiting ticket that ordering needs."""

    id: str
    service: str
    priority: int
    effective_ms: int
    reserved_counter: str | None


def rules_for(defaults: QueueRules, overrides: dict[str, int] | None) -> QueueRules:
    if not overrides:
        return defaults
    known = {k: v for k, v in overrides.items() if k in QueueRules.__dataclass_fields__}
    return QueueRules(**{**defaults.__dict__, **known})


def effective_priority(ticket: Waiting, rules: QueueRules, now_ms: int) -> int:
    """Priority class, raised to the top class once the ticket has waited too long."""
    if rules.promote_after_s > 0 and now_ms - ticket.effective_ms >= rules.promote_after_s * 1000:
        return max(ticket.priority, rules.max_priority)
    return ticket.priority


def order_key(ticket: Waiting, rules: QueueRules, now_ms: int, service_rank: int = 0) -> tuple[int, int, int, str]:
    return (-effective_priority(ticket, rules, now_ms), ticket.effective_ms, service_rank, ticket.id)


def next_for_counter(
    waiting: Iterable[Waiting],
    counter_id: str,
    services: Sequence[str],
    rules_by_service: dict[str, QueueRules],
    now_ms: int,
) -> Waiting | None:
    """Across the counter's services: highest priority class, then earliest effective time,
    then the counter's service order. Tickets transferred to a named counter wait only for it."""
    rank = {s: i for i, s in enumerate(services)}
    best: tuple[tuple[int, int, int, str], Waiting] | None = None
    for ticket in waiting:
        if ticket.reserved_counter is not None:
            if ticket.reserved_counter != counter_id:
                continue
        elif ticket.service not in rank:
            continue
        key = order_key(ticket, rules_by_service[ticket.service], now_ms, rank.get(ticket.service, -1))
        if best is None or key < best[0]:
            best = (key, ticket)
    return best[1] if best else None


def service_line(waiting: Iterable[Waiting], service: str, rules: QueueRules, now_ms: int) -> list[Waiting]:
    """The waiting tickets of one service in the order they will be called."""
    line = [t for t in waiting if t.service == service]
    line.sort(key=lambda t: order_key(t, rules, now_ms))
    return line


def estimate_wait_s(people_ahead: int, open_counters: int, mean_service_s: float) -> int:
    """People ahead, shared among the open counters serving the service, times the recent mean."""
    return int(math.ceil(people_ahead * mean_service_s / max(open_counters, 1)))


def mean_service_s(durations_ms: Sequence[int], default_s: int) -> float:
    usable = [d for d in durations_ms if d is not None and d >= 0]
    if not usable:
        return float(default_s)
    return sum(usable) / len(usable) / 1000.0


def business_day(ms: int, tz: ZoneInfo) -> str:
    """The branch-local day a moment belongs to, as YYYY-MM-DD."""
    return datetime.fromtimestamp(ms / 1000, tz).date().isoformat()


def ticket_number(last: int | None, numbers: tuple[int, int], overflow_slot: int) -> int:
    """The next number of this device for one service and day.

    Each device issues from its own range of the roster, so devices cut off from each other
    never give the same number. Past the end of its range a device continues in an overflow
    block of its own (1000 * (slot + 1) onwards), still disjoint from every other device.
    """
    low, high = numbers
    overflow_start = 1000 * (overflow_slot + 1)
    if last is None or last < low:
        return low
    if last < high:
        return last + 1
    if last < overflow_start:
        return overflow_start
    if last + 1 >= overflow_start + 1000:
        raise OverflowError("this device has issued 1000 overflow numbers today")
    return last + 1


def ticket_label(letter: str, number: int) -> str:
    return f"{letter}{number:03d}"


def ticket_id(day: str, label: str) -> str:
    return f"{day.replace('-', '')}-{label}"
