"""Opening hours at the node: is the branch open now, and when does it open next?

The hours come from HQ as a ``config.hours`` event (``{weekdays: {"0".."6": {opens, closes}},
closed_days: [{day, reason}]}``, weekday 0 = Monday, times "HH:MM" in the branch's time zone),
folded like the other ``config.*`` events; until one has arrived, the device file's ``[hours]``
table (same shape) stands in. No hours at all means always open: the kiosk never says
"closed" from a guess.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_hours(raw: Any, where: str = "hours") -> dict[str, Any]:
    """Check and normalise an hours table (HQ's payload or the device file's ``[hours]``).
    Raises ValueError naming the bad key."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = set(raw) - {"weekdays", "closed_days"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    weekdays: dict[str, dict[str, str]] = {}
    for key, span in (raw.get("weekdays") or {}).items():
        if str(key) not in {str(i) for i in range(7)}:
            raise ValueError(f"{where}.weekdays: keys are \"0\" (Monday) to \"6\" (Sunday), got {key!r}")
        if not isinstance(span, dict) or not all(_HHMM.match(str(span.get(k, ""))) for k in ("opens", "closes")):
            raise ValueError(f"{where}.weekdays.{key}: expected {{ opens = \"08:00\", closes = \"17:00\" }}")
        if span["opens"] >= span["closes"]:
            raise ValueError(f"{where}.weekdays.{key}: opens must be before closes")
        weekdays[str(key)] = {"opens": span["opens"], "closes": span["closes"]}
    closed: list[dict[str, str]] = []
    for item in raw.get("closed_days") or []:
        day = item.get("day") if isinstance(item, dict) else item
        try:
            date.fromisoformat(str(day))
        except ValueError:
            raise ValueError(f"{where}.closed_days: expected dates like \"2026-12-25\", got {day!r}") from None
        reason = item.get("reason", "") if isinstance(item, dict) else ""
        closed.append({"day": str(day), "reason": str(reason or "")})
    return {"weekdays": weekdays, "closed_days": closed}


def _span(hours: dict[str, Any], day: date) -> tuple[time, time] | None:
    if any(c["day"] == day.isoformat() for c in hours.get("closed_days") or []):
        return None
    span = (hours.get("weekdays") or {}).get(str(day.weekday()))
    if not span:
        return None
    return time.fromisoformat(span["opens"]), time.fromisoformat(span["closes"])


def status(hours: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """``{open, opens_at, closes_at}`` at ``now`` (branch-local): ``opens_at`` the next opening
    (ISO, branch-local) while closed, ``closes_at`` today's closing while open. ``hours`` None or
    without any weekday: always open (nothing known)."""
    if not hours or not hours.get("weekdays"):
        return {"open": True, "opens_at": None, "closes_at": None, "known": False}
    today = _span(hours, now.date())
    if today and today[0] <= now.time().replace(tzinfo=None) < today[1]:
        closes = datetime.combine(now.date(), today[1], now.tzinfo)
        return {"open": True, "opens_at": None, "closes_at": closes.isoformat(timespec="minutes"), "known": True}
    for ahead in range(0, 15):
        day = now.date() + timedelta(days=ahead)
        span = _span(hours, day)
        if span is None:
            continue
        opens = datetime.combine(day, span[0], now.tzinfo)
        if opens > now:
            return {"open": False, "opens_at": opens.isoformat(timespec="minutes"), "closes_at": None, "known": True}
    return {"open": False, "opens_at": None, "closes_at": None, "known": True}
