"""Strict reading of a driver's config dict (one TOML table per driver).

Every ``build_*_from_config`` reads its dict through :class:`ConfigReader`, which checks types
and rejects unknown keys, so a typo in a device's TOML is a clear error at start-up instead
of a printer that silently never prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import HardwareConfigError

_MISSING = object()


class ConfigReader:
    """Typed, strict accessor over one config section; call :meth:`finish` at the end."""

    def __init__(self, section: str, data: Mapping[str, Any] | None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise HardwareConfigError(f"[{section}] must be a table/dict, got {type(data).__name__}")
        self.section = section
        self._data = dict(data)
        self._used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self._used.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise HardwareConfigError(f"[{self.section}] missing required key {key!r}")
            return default
        return value

    def _bad(self, key: str, want: str, value: Any) -> HardwareConfigError:
        return HardwareConfigError(f"[{self.section}] {key} must be {want}, got {value!r}")

    def str(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string", value)
        return value

    def int(self, key: str, default: Any = _MISSING, *, min: int | None = None,
            max: int | None = None) -> Any:
        value = self._get(key, default)
        if value is None:
            return value
        if isinstance(value, str):
            try:
                value = int(value, 0)  # allows "0x0416" for USB ids
            except ValueError:
                raise self._bad(key, "an integer", value) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        if (min is not None and value < min) or (max is not None and value > max):
            raise self._bad(key, f"an integer in [{min}, {max}]", value)
        return value

    def float(self, key: str, default: Any = _MISSING, *, min: float = 0.0) -> Any:
        value = self._get(key, default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number", value)
        if value < min:
            raise self._bad(key, f"a number >= {min}", value)
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not None and not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _MISSING) -> Any:
        value = self.str(key, default)
        if value is not None and value not in choices:
            raise HardwareConfigError(
                f"[{self.section}] {key} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings", value)
        return list(value)

    def str_map(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._bad(key, "a table of strings", value)
        return dict(value)

    def finish(self) -> None:
        """Reject keys nobody asked for (typos)."""
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise HardwareConfigError(
                f"[{self.section}] unknown key(s): {', '.join(unknown)}")
