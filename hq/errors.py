"""API errors: raised anywhere in a handler, rendered as {"error": {"code", "message"}}."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(message: str = "not allowed") -> ApiError:
    return ApiError(403, "forbidden", message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise bad_request(f"{field} must be 1-40 characters a-z, 0-9, '-' or '_'")
    return value


def check_str(value: Any, field: str, *, max_len: int = 200, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if isinstance(value, str):
        from sync.text import clean_text
        value = clean_text(value)  # NFC, no control or bidi characters
    if not isinstance(value, str) or (required and not value) or len(value) > max_len:
        raise bad_request(f"{field} must be a non-empty string of at most {max_len} characters")
    return value


def check_int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad_request(f"{field} must be an integer from {lo} to {hi}")
    return value


def check_obj(value: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be a JSON object")
    return value


# The dates and instants HQ accepts. Every conversion HQ makes (to a branch's local time, offsets
# up to +-14 h; "the next day"; a booking horizon of days) then stays inside Python's years 1-9999,
# so an out-of-range date is a 400 here instead of an OverflowError deep in a handler.
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(9998, 12, 31)
MIN_TS = 0
MAX_TS = int(datetime(MAX_DATE.year, MAX_DATE.month, MAX_DATE.day, tzinfo=timezone.utc).timestamp())
DATE_RANGE = f"{MIN_DATE.isoformat()} to {MAX_DATE.isoformat()}"


def check_date(value: Any, field: str = "day") -> date:
    """A calendar date YYYY-MM-DD inside :data:`MIN_DATE`..:data:`MAX_DATE`."""
    if not isinstance(value, str) or len(value) != 10:
        raise bad_request(f"{field} must be a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(value)
    except ValueError as err:
        raise bad_request(f"{field} must be a date YYYY-MM-DD") from err
    if not MIN_DATE <= day <= MAX_DATE:
        raise bad_request(f"{field} is out of range ({DATE_RANGE})")
    return day


def check_instant(ts: int, field: str = "start") -> int:
    """Unix seconds inside the accepted range (see :data:`MAX_TS`)."""
    if not MIN_TS <= ts <= MAX_TS:
        raise bad_request(f"{field} is out of range ({DATE_RANGE})")
    return ts
