"""The node's configuration: one TOML file per device (no HQ needed).

Every user-visible setting is listed in SETTINGS with its default and help text; the docs
(docs/configuration.md) must name each one (a test checks it).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.hours import parse_hours

ROLES = ("kiosk", "display", "counter")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LETTER_RE = re.compile(r"^[A-Z]{1,2}$")

# (dotted name, default, help). Sections with [[arrays]] are documented by their item keys.
SETTINGS: list[tuple[str, Any, str]] = [
    ("branch.id", None, "Branch id (lowercase letters, digits, - and _); events of other branches are refused."),
    ("branch.name", None, "Branch name shown on tickets and screens."),
    ("branch.timezone", "UTC", "IANA time zone; the ticket day and opening hours follow it."),
    ("branch.languages", ["en"], "Languages offered to citizens, first is the default."),
    ("branch.notices", [], "Lines the waiting-room display scrolls in its ticker: a list, or { en = [...], fr = [...] }."),
    ("device.id", None, "This device's id; must be on the roster."),
    ("device.role", None, "kiosk, display or counter: chooses hardware and UI."),
    ("device.data_dir", "data", "Where the SQLite store and the device key live (relative to the config file)."),
    ("device.listen", "127.0.0.1:8401", "host:port of the local API (keep it on 127.0.0.1)."),
    ("device.counters", [], "Counters this device serves (a counter device); used for keypad and LED."),
    ("queue.max_priority", 1, "Highest priority class (0 is normal); long waiters are promoted to it."),
    ("queue.promote_after_s", 1800, "A ticket waiting longer than this is promoted (no starvation)."),
    ("queue.max_recalls", 3, "A recall beyond this many makes the ticket a no-show."),
    ("queue.call_timeout_s", 600, "A called ticket not started within this time becomes a no-show (0: never)."),
    ("queue.default_service_s", 300, "Service time assumed for wait estimates before any ticket was served."),
    ("queue.estimate_window", 20, "How many recent services the service-time average uses."),
    ("queue.digits", 3, "Digits of a ticket number (3: A042, 4: A0042); a device past its range goes on in"
     " the next thousand (ten thousand) of its own, so numbers never run out."),
    ("security.require_staff_login", True, "Counter actions need a staff PIN session (Authorization: Bearer)."),
    ("security.session_ttl_s", 43200, "How long a staff session lasts."),
    ("security.max_pin_failures", 5, "Wrong PINs per staff member or counter, across the branch's counters, before a lock-out."),
    ("security.lockout_s", 60, "Length of the PIN lock-out."),
    ("api.max_body_bytes", 65536, "Largest request body the local API accepts."),
    ("hours.weekdays", None, "Opening hours until HQ sends its own (config.hours): a table \"0\" (Monday)"
     " to \"6\" (Sunday) of { opens = \"08:00\", closes = \"17:00\" }; the kiosk says \"closed\" and"
     " \"opens at\" from them. No [hours] and none from HQ: always open."),
    ("hours.closed_days", [], "Dates the branch is closed, e.g. [\"2026-12-25\"] (or { day, reason } tables)."),
    ("hq.public_url", None, "HQ's public web address (e.g. https://hq.example.org): each ticket gets"
     " status_url = public_url/t/<status_token>, printed as its QR and shown by the kiosk."),
    ("services[].id", None, "Service id."),
    ("services[].letter", None, "Ticket letter(s), e.g. A for A042; unique in the branch."),
    ("services[].names", None, "Table of names per language code."),
    ("services[].icon", None, "The kiosk's pictogram for the service (SERVICE_ICONS); unset: chosen from its words."),
    ("services[].promote_after_s", None, "Per-service override of queue.promote_after_s."),
    ("services[].max_recalls", None, "Per-service override of queue.max_recalls."),
    ("services[].default_service_s", None, "Per-service override of queue.default_service_s."),
    ("services[].digits", None, "Per-service override of queue.digits (4 for a service that issues"
     " thousands a day)."),
    ("counters[].id", None, "Counter id."),
    ("counters[].name", None, "Name shown and announced, e.g. Counter 3."),
    ("counters[].names", None, "Optional table of the counter's name per language (screens show it in theirs)."),
    ("counters[].services", None, "Service ids this counter serves, in order (the order breaks ties)."),
    ("roster[].id", None, "A device of this branch."),
    ("roster[].role", None, "Its role."),
    ("roster[].public_key", None, "Its Ed25519 public key (smartq init writes it); events are checked against it."),
    ("roster[].numbers", None, "Ticket number range it issues from, e.g. \"1-599\"; ranges must not overlap."),
    ("staff[].id", None, "Staff id."),
    ("staff[].name", None, "Staff name."),
    ("staff[].pin_hash", None, "scrypt hash of the PIN (smartq hash-pin prints one)."),
]


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class QueueRules:
    max_priority: int = 1
    promote_after_s: int = 1800
    max_recalls: int = 3
    call_timeout_s: int = 600
    default_service_s: int = 300
    estimate_window: int = 20
    digits: int = 3


#: The ticker's notices: HQ's limits (hq.tenants.check_notices), per language here.
MAX_NOTICES = 20
MAX_NOTICE_CHARS = 200
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")

#: The kiosk's service pictograms (drawn by ``kiosk_ui.pictograms``), and the words that choose
#: one when a service names none (the first match, by word prefix, in the id and English name).
SERVICE_ICONS = ("person", "money", "document", "id-card", "health", "info", "mail", "calendar")
_ICON_WORDS = (
    ("money", ("pay", "cash", "money", "tax", "bill", "fee", "bank", "fine")),
    ("id-card", ("id", "passport", "identity", "licen", "visa", "card")),
    ("document", ("doc", "cert", "paper", "form", "permit", "registr", "record")),
    ("health", ("health", "clinic", "medic", "nurs", "doctor", "pharm", "vaccin")),
    ("info", ("info", "enquir", "inquir", "question", "help", "reception")),
    ("mail", ("mail", "post", "parcel", "letter", "courier")),
    ("calendar", ("book", "appoint", "calendar", "schedul")),
)


def service_icon(service_id: str, names: dict[str, str] | None = None, icon: str | None = None) -> str:
    """The pictogram for a service: its configured ``icon``, else one chosen from its words."""
    if icon in SERVICE_ICONS:
        return str(icon)
    words = re.findall(r"[a-z]+", f"{service_id} {(names or {}).get('en', '')}".lower())
    for chosen, prefixes in _ICON_WORDS:
        if any(w.startswith(p) for w in words for p in prefixes if len(p) > 2 or w == p):
            return chosen
    return "person"


@dataclass(frozen=True)
class ServiceConfig:
    id: str
    letter: str
    names: dict[str, str]
    rules: dict[str, int] = field(default_factory=dict)
    #: The kiosk's pictogram (one of ``SERVICE_ICONS``); "" lets the kiosk choose (``service_icon``).
    icon: str = ""
    #: False when HQ's catalogue withdrew the service from this branch (config.service
    #: ``enabled: false``): kiosks no longer offer it; tickets already waiting are still served.
    enabled: bool = True

    def name(self, language: str | None = None) -> str:
        if language and language in self.names:
            return self.names[language]
        return self.names.get("en") or next(iter(self.names.values()))


@dataclass(frozen=True)
class CounterConfig:
    id: str
    name: str
    services: tuple[str, ...]
    #: The name per language (``names = { fr = "Guichet 1", ... }``); ``name`` is the default.
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RosterEntry:
    id: str
    role: str
    public_key: str
    numbers: tuple[int, int] | None


@dataclass(frozen=True)
class StaffConfig:
    id: str
    name: str
    pin_hash: str


@dataclass(frozen=True)
class SecurityConfig:
    require_staff_login: bool = True
    session_ttl_s: int = 43200
    max_pin_failures: int = 5
    lockout_s: int = 60


@dataclass(frozen=True)
class Config:
    path: Path
    branch_id: str
    branch_name: str
    timezone: str
    languages: tuple[str, ...]
    notices: tuple[str, ...]
    #: ``notices = { en = [...], fr = [...] }``: the lines per language (``notices`` is then empty).
    notices_by_language: dict[str, tuple[str, ...]]
    device_id: str
    role: str
    data_dir: Path
    listen_host: str
    listen_port: int
    device_counters: tuple[str, ...]
    queue: QueueRules
    security: SecurityConfig
    max_body_bytes: int
    services: tuple[ServiceConfig, ...]
    counters: tuple[CounterConfig, ...]
    roster: tuple[RosterEntry, ...]
    staff: tuple[StaffConfig, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    public_url: str | None = None  # [hq] public_url, without a trailing slash
    hours: dict[str, Any] | None = None  # [hours], until HQ's config.hours arrives

    def status_url(self, status_token: str | None) -> str | None:
        """The ticket's live status page at HQ, or None (no public_url, or no token)."""
        if not self.public_url or not status_token:
            return None
        return f"{self.public_url}/t/{status_token}"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def roster_entry(self, device_id: str) -> RosterEntry | None:
        return next((r for r in self.roster if r.id == device_id), None)


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing '{key}'")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _optional(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    if key not in table:
        return default
    return _require(table, key, kind, where)


def _ident(value: str, where: str) -> str:
    if not ID_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not a valid id (lowercase letters, digits, - and _)")
    return value


SERVICE_RULES = ("promote_after_s", "max_recalls", "default_service_s", "call_timeout_s", "digits")
MAX_DIGITS = 6


def _digits(value: int, where: str) -> None:
    if not 3 <= value <= MAX_DIGITS:
        raise ConfigError(f"{where}: a ticket number has 3 to {MAX_DIGITS} digits, got {value}")


def parse_range(text: str, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"{where}: expected a range like \"1-599\", got {text!r}")
    low, high = int(match[1]), int(match[2])
    if not 1 <= low <= high <= 999:
        raise ConfigError(f"{where}: range must lie within 1-999 and start <= end")
    return low, high


def _listen(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected host:port, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_config(path: Path | str, *, role: str | None = None, listen: str | None = None) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except OSError as err:  # a directory, no permission...
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_config(raw, path=path, role=role, listen=listen)


def _notice_list(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)):
        raise ConfigError(f"{where}: expected a list of texts")
    if len(value) > MAX_NOTICES or any(len(x) > MAX_NOTICE_CHARS for x in value):
        raise ConfigError(f"{where}: at most {MAX_NOTICES} texts of at most {MAX_NOTICE_CHARS} characters")
    return tuple(value)


def _notices(value: Any) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``branch.notices``: a list (the same lines in every language), or a table of lists
    per language code (``{ en = [...], fr = [...] }``): (common lines, lines per language)."""
    if isinstance(value, dict):
        for lang in value:
            if not LANGUAGE_RE.match(lang):
                raise ConfigError(f"branch.notices: {lang!r} is not a language code such as en or fr")
        return (), {lang: _notice_list(v, f"branch.notices.{lang}") for lang, v in value.items()}
    if not isinstance(value, list):
        raise ConfigError("branch.notices: expected a list of texts or a table of lists per language")
    return _notice_list(value, "branch.notices"), {}


def parse_config(raw: dict[str, Any], *, path: Path, role: str | None = None, listen: str | None = None) -> Config:
    branch = _require(raw, "branch", dict, "config")
    device = _require(raw, "device", dict, "config")
    notices, notices_by_language = _notices(branch.get("notices", []))
    branch_id = _ident(_require(branch, "id", str, "branch"), "branch.id")
    timezone = _optional(branch, "timezone", str, "UTC", "branch")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"branch.timezone: unknown time zone {timezone!r}") from err
    languages = tuple(_optional(branch, "languages", list, ["en"], "branch"))
    if not languages or not all(isinstance(x, str) for x in languages):
        raise ConfigError("branch.languages: expected a non-empty list of language codes")

    device_id = _ident(_require(device, "id", str, "device"), "device.id")
    config_role = _require(device, "role", str, "device")
    if role is not None and role != config_role:
        raise ConfigError(f"--role {role} does not match device.role {config_role!r} in {path}")
    if config_role not in ROLES:
        raise ConfigError(f"device.role: expected one of {', '.join(ROLES)}, got {config_role!r}")
    data_dir = Path(_optional(device, "data_dir", str, "data", "device"))
    if not data_dir.is_absolute():
        data_dir = (path.parent / data_dir).resolve()
    host, port = _listen(listen or _optional(device, "listen", str, "127.0.0.1:8401", "device"), "device.listen")
    device_counters = tuple(_optional(device, "counters", list, [], "device"))

    queue_raw = _optional(raw, "queue", dict, {}, "config")
    queue = QueueRules(**{
        name: _optional(queue_raw, name, int, getattr(QueueRules, name), "queue")
        for name in QueueRules.__dataclass_fields__
    })
    unknown = set(queue_raw) - set(QueueRules.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"queue: unknown settings {sorted(unknown)}")
    _digits(queue.digits, "queue.digits")
    sec_raw = _optional(raw, "security", dict, {}, "config")
    security = SecurityConfig(
        require_staff_login=_optional(sec_raw, "require_staff_login", bool, True, "security"),
        session_ttl_s=_optional(sec_raw, "session_ttl_s", int, 43200, "security"),
        max_pin_failures=_optional(sec_raw, "max_pin_failures", int, 5, "security"),
        lockout_s=_optional(sec_raw, "lockout_s", int, 60, "security"),
    )
    api_raw = _optional(raw, "api", dict, {}, "config")
    max_body = _optional(api_raw, "max_body_bytes", int, 65536, "api")

    services: list[ServiceConfig] = []
    for i, item in enumerate(_optional(raw, "services", list, [], "config")):
        where = f"services[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        names = _require(item, "names", dict, where)
        if not names or not all(isinstance(v, str) and v for v in names.values()):
            raise ConfigError(f"{where}.names: expected a table of language = name")
        letter = _require(item, "letter", str, where)
        if not LETTER_RE.match(letter):
            raise ConfigError(f"{where}.letter: one or two capital letters, got {letter!r}")
        rules = {k: _require(item, k, int, where) for k in SERVICE_RULES if k in item}
        if "digits" in rules:
            _digits(rules["digits"], f"{where}.digits")
        icon = _optional(item, "icon", str, "", where)
        if icon and icon not in SERVICE_ICONS:
            raise ConfigError(f"{where}.icon: one of {', '.join(SERVICE_ICONS)}, got {icon!r}")
        services.append(ServiceConfig(_ident(_require(item, "id", str, where), f"{where}.id"), letter, dict(names),
                                      rules, icon))
    _unique([s.id for s in services], "services: duplicate id")
    _unique([s.letter for s in services], "services: duplicate letter")

    service_ids = {s.id for s in services}
    counters: list[CounterConfig] = []
    for i, item in enumerate(_optional(raw, "counters", list, [], "config")):
        where = f"counters[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        serves = _require(item, "services", list, where)
        for s in serves:
            if s not in service_ids:
                raise ConfigError(f"{where}.services: unknown service {s!r}")
        names = _optional(item, "names", dict, {}, where)
        if not all(isinstance(v, str) and v for v in names.values()):
            raise ConfigError(f"{where}.names: expected a table of language = name")
        counters.append(CounterConfig(_ident(_require(item, "id", str, where), f"{where}.id"),
                                      _require(item, "name", str, where), tuple(serves), dict(names)))
    _unique([c.id for c in counters], "counters: duplicate id")
    for c in device_counters:
        if c not in {x.id for x in counters}:
            raise ConfigError(f"device.counters: unknown counter {c!r}")

    roster: list[RosterEntry] = []
    for i, item in enumerate(_optional(raw, "roster", list, [], "config")):
        where = f"roster[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        numbers = item.get("numbers")
        rng = parse_range(numbers, f"{where}.numbers") if isinstance(numbers, str) else None
        if numbers is not None and not isinstance(numbers, str):
            raise ConfigError(f"{where}.numbers: expected a string like \"1-599\"")
        entry_role = _require(item, "role", str, where)
        if entry_role not in ROLES:
            raise ConfigError(f"{where}.role: expected one of {', '.join(ROLES)}")
        roster.append(RosterEntry(_ident(_require(item, "id", str, where), f"{where}.id"), entry_role,
                                  _require(item, "public_key", str, where), rng))
    _unique([r.id for r in roster], "roster: duplicate device id")
    ranges = sorted((r.numbers, r.id) for r in roster if r.numbers)
    for (a, a_id), (b, b_id) in zip(ranges, ranges[1:]):
        if b[0] <= a[1]:
            raise ConfigError(f"roster: number ranges of {a_id} and {b_id} overlap")

    staff: list[StaffConfig] = []
    for i, item in enumerate(_optional(raw, "staff", list, [], "config")):
        where = f"staff[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        staff.append(StaffConfig(_ident(_require(item, "id", str, where), f"{where}.id"),
                                 _require(item, "name", str, where), _require(item, "pin_hash", str, where)))
    _unique([s.id for s in staff], "staff: duplicate id")

    hours = None
    if "hours" in raw:
        try:
            hours = parse_hours(raw["hours"])
        except ValueError as err:
            raise ConfigError(str(err)) from err
    public_url = None
    hq_raw = raw.get("hq")
    if isinstance(hq_raw, dict) and "public_url" in hq_raw:
        public_url = hq_raw["public_url"]
        if not isinstance(public_url, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", public_url):
            raise ConfigError(f"hq.public_url: expected an http:// or https:// address such as "
                              f"\"https://hq.example.org\", got {public_url!r}")
        public_url = public_url.rstrip("/")

    return Config(
        path=path, branch_id=branch_id, branch_name=_optional(branch, "name", str, branch_id, "branch"),
        timezone=timezone, languages=languages, notices=notices,
        notices_by_language=notices_by_language, device_id=device_id, role=config_role, data_dir=data_dir,
        listen_host=host, listen_port=port, device_counters=device_counters, queue=queue, security=security,
        max_body_bytes=max_body, services=tuple(services), counters=tuple(counters), roster=tuple(roster),
        staff=tuple(staff), raw=raw, public_url=public_url, hours=hours,
    )


def _unique(values: list[str], message: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{message} {v!r}")
        seen.add(v)
