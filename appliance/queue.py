"""Queue rules (DESIGN §5): who is called next, ticket numbers, wait estimates.

Pure functions over plain rows; the current time is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from appliance.config import MAX_DIGITS, QueueRules


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


def own_range(numbers: tuple[int, int], digits: int = 3) -> tuple[int, int]:
    """A device's roster range (within 1-999) at `digits` digits: each number n stands for
    the block n x 10^(digits-3) ... (so 4 digits make "1-599" into 1-5999)."""
    f = 10 ** (digits - 3)
    low, high = numbers
    return (1 if low <= 1 else low * f), high * f + f - 1


def ticket_number(last: int | None, numbers: tuple[int, int], digits: int = 3) -> int:
    """The next number of this device for one service and day; never runs out.

    Each issuing device owns a disjoint range of the roster within one cycle of 10^digits
    numbers (1-599 of 1-999). Past its range, a device goes on in the same range of the next
    cycle (1001-1599, then 2001-2599, ...): every device owns an infinite sequence disjoint
    from every other device's, decided by its own range alone, so a device cut off from all
    its peers keeps issuing and no two devices ever give the same number.
    """
    digits = min(max(digits, 3), MAX_DIGITS)  # rules from the log are not trusted blindly
    low, high = own_range(numbers, digits)
    cycle = 10 ** digits
    if last is None or last < low:
        return low
    turn, n = divmod(last, cycle)
    if n < low:
        return turn * cycle + low
    if n < high:
        return last + 1
    return (turn + 1) * cycle + low


def ticket_label(letter: str, number: int, digits: int = 3) -> str:
    """A042 (3 digits), A0042 (4); past the first cycle the number shows whole (A1042)."""
    return f"{letter}{number:0{digits}d}"


def ticket_id(day: str, label: str) -> str:
    return f"{day.replace('-', '')}-{label}"
