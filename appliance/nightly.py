"""Per-day digests of an event set, computed the same way by a node and by HQ.

A day is the UTC day of an event's HLC time (unambiguous on both sides, whatever the branch's
time zone). digest(day) = SHA-256 over the lines "origin\\tseq\\thash\\n" of that day's events
sorted by (origin, seq). HQ's own events (origin "hq:...") are left out: they reach the branch
by pull and HQ never lacks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

HQ_PREFIX = "hq:"
DAY_MS = 86_400_000


def utc_day(hlc: int) -> str:
    return datetime.fromtimestamp((hlc >> 16) / 1000, timezone.utc).date().isoformat()


def day_bounds_hlc(day: str) -> tuple[int, int]:
    """[lo, hi) HLC values of a UTC day."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=timezone.utc)
    lo_ms = int(start.timestamp() * 1000)
    return lo_ms << 16, (lo_ms + DAY_MS) << 16


def days_between(first: str, last: str) -> list[str]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def digests(rows: Iterable[tuple[str, int, str, int]]) -> dict[str, dict[str, object]]:
    """rows of (origin, seq, hash, hlc) -> {day: {"count", "digest"}}; HQ origins skipped."""
    by_day: dict[str, list[tuple[str, int, str]]] = {}
    for origin, seq, hash_, hlc in rows:
        if origin.startswith(HQ_PREFIX):
            continue
        by_day.setdefault(utc_day(hlc), []).append((origin, seq, hash_))
    out: dict[str, dict[str, object]] = {}
    for day, items in by_day.items():
        items.sort()
        h = hashlib.sha256()
        for origin, seq, hash_ in items:
            h.update(f"{origin}\t{seq}\t{hash_}\n".encode())
        out[day] = {"count": len(items), "digest": h.hexdigest()}
    return out
