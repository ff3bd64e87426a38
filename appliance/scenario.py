"""The branch-day scenario format (a contract: docs/simulation.md), parsed and checked.

Errors are ScenarioError with a one-line message naming the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LETTER_RE = re.compile(r"^[A-Z]{1,2}$")
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class ScenarioError(ValueError):
    """The scenario cannot be simulated; the message says which field and why."""


@dataclass(frozen=True)
class Spread:
    """A lognormal distribution given by its mean and coefficient of variation."""

    mean: float
    cv: float


@dataclass(frozen=True)
class ServiceSpec:
    id: str
    letter: str
    service_minutes: Spread
    arrivals_per_hour: tuple[float, ...]
    weekday_factor: tuple[float, ...]
    priority_share: float
    booking_share: float
    no_show_share: float
    abandon_after_minutes: Spread | None


@dataclass(frozen=True)
class CounterSpec:
    id: str
    services: tuple[str, ...]
    shifts: tuple[tuple[int, int], ...]  # minutes after midnight
    speed: float


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    timezone: str
    start_date: date
    train_days: int
    eval_days: int
    open_min: int
    close_min: int
    services: tuple[ServiceSpec, ...]
    counters: tuple[CounterSpec, ...]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def minutes(text: Any, where: str) -> int:
    if not isinstance(text, str) or not HHMM_RE.match(text):
        raise ScenarioError(f"{where}: expected \"HH:MM\", got {text!r}")
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def _get(table: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ScenarioError(f"{where}.{key}: missing")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ScenarioError(f"{where}.{key}: wrong type {type(value).__name__}")
    return value


def _share(table: dict[str, Any], key: str, where: str) -> float:
    value = float(_get(table, key, (int, float), where, 0.0))
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{where}.{key}: a share between 0 and 1, got {value}")
    return value


def _spread(value: Any, where: str) -> Spread:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected {{mean, cv}}")
    mean = float(_get(value, "mean", (int, float), where))
    cv = float(_get(value, "cv", (int, float), where))
    if mean <= 0 or cv < 0 or cv > 5:
        raise ScenarioError(f"{where}: mean must be > 0 and cv between 0 and 5")
    return Spread(mean, cv)


def _numbers(value: Any, where: str, length: int | None = None) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ScenarioError(f"{where}: expected a list of numbers")
    if length is not None and len(value) != length:
        raise ScenarioError(f"{where}: expected {length} numbers, got {len(value)}")
    if any(v < 0 for v in value):
        raise ScenarioError(f"{where}: numbers must not be negative")
    return tuple(float(v) for v in value)


def parse_scenario(raw: dict[str, Any]) -> Scenario:
    name = _get(raw, "name", str, "scenario")
    seed = _get(raw, "seed", int, "scenario")
    timezone = _get(raw, "timezone", str, "scenario")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ScenarioError(f"scenario.timezone: unknown time zone {timezone!r}") from err
    start = _get(raw, "start_date", (str, date), "scenario")
    try:
        start_date = start if isinstance(start, date) else date.fromisoformat(start)
    except ValueError as err:
        raise ScenarioError(f"scenario.start_date: expected YYYY-MM-DD, got {start!r}") from err
    train_days = _get(raw, "train_days", int, "scenario")
    eval_days = _get(raw, "eval_days", int, "scenario")
    if train_days < 0 or eval_days < 1 or train_days + eval_days > 400:
        raise ScenarioError("scenario: train_days >= 0, eval_days >= 1, at most 400 days in all")
    open_min = minutes(raw.get("open"), "scenario.open")
    close_min = minutes(raw.get("close"), "scenario.close")
    if close_min <= open_min:
        raise ScenarioError("scenario.close: must be after open")
    hours = math_ceil((close_min - open_min) / 60)

    services: list[ServiceSpec] = []
    for i, item in enumerate(_get(raw, "services", list, "scenario")):
        where = f"services[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: expected a table")
        sid = _get(item, "id", str, where)
        if not ID_RE.match(sid):
            raise ScenarioError(f"{where}.id: lowercase letters, digits, - and _, got {sid!r}")
        letter = _get(item, "letter", str, where)
        if not LETTER_RE.match(letter):
            raise ScenarioError(f"{where}.letter: one or two capital letters, got {letter!r}")
        abandon = item.get("abandon_after_minutes")
        services.append(ServiceSpec(
            id=sid, letter=letter,
            service_minutes=_spread(item.get("service_minutes"), f"{where}.service_minutes"),
            arrivals_per_hour=_numbers(item.get("arrivals_per_hour"), f"{where}.arrivals_per_hour", hours),
            weekday_factor=_numbers(item.get("weekday_factor", [1.0] * 7), f"{where}.weekday_factor", 7),
            priority_share=_share(item, "priority_share", where),
            booking_share=_share(item, "booking_share", where),
            no_show_share=_share(item, "no_show_share", where),
            abandon_after_minutes=_spread(abandon, f"{where}.abandon_after_minutes") if abandon is not None else None,
        ))
    if not services:
        raise ScenarioError("scenario.services: at least one service")
    for attr in ("id", "letter"):
        values = [getattr(s, attr) for s in services]
        if len(set(values)) != len(values):
            raise ScenarioError(f"services: duplicate {attr}")
    known = {s.id for s in services}

    counters: list[CounterSpec] = []
    for i, item in enumerate(_get(raw, "counters", list, "scenario")):
        where = f"counters[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(f"{where}: expected a table")
        cid = _get(item, "id", str, where)
        if not ID_RE.match(cid):
            raise ScenarioError(f"{where}.id: lowercase letters, digits, - and _, got {cid!r}")
        serves = _get(item, "services", list, where)
        if not serves or any(s not in known for s in serves):
            raise ScenarioError(f"{where}.services: a non-empty list of known service ids")
        shifts = []
        for j, shift in enumerate(_get(item, "shifts", list, where)):
            if not isinstance(shift, list) or len(shift) != 2:
                raise ScenarioError(f"{where}.shifts[{j}]: expected [\"HH:MM\", \"HH:MM\"]")
            a, b = minutes(shift[0], f"{where}.shifts[{j}]"), minutes(shift[1], f"{where}.shifts[{j}]")
            if b <= a:
                raise ScenarioError(f"{where}.shifts[{j}]: ends before it starts")
            shifts.append((a, b))
        shifts.sort()
        if any(b[0] < a[1] for a, b in zip(shifts, shifts[1:])):
            raise ScenarioError(f"{where}.shifts: overlapping shifts")
        speed = float(_get(item, "speed", (int, float), where, 1.0))
        if not 0.05 <= speed <= 20:
            raise ScenarioError(f"{where}.speed: between 0.05 and 20")
        counters.append(CounterSpec(cid, tuple(serves), tuple(shifts), speed))
    if not counters:
        raise ScenarioError("scenario.counters: at least one counter")
    if len({c.id for c in counters}) != len(counters):
        raise ScenarioError("counters: duplicate id")
    return Scenario(name, seed, timezone, start_date, train_days, eval_days, open_min, close_min,
                    tuple(services), tuple(counters))


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


def load_scenario(path: Path | str) -> Scenario:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(f"cannot read {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML: {err}") from err
    return parse_scenario(raw)
