"""API errors: raised anywhere in a handler, rendered as {"error": {"code", "message"}}."""

from __future__ import annotations

import re
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
