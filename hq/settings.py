"""HQ settings: one declarative table of (name, default, help), loaded from a TOML file.

Every setting here must be documented in docs/hq.md (tests/hq/test_docs.py enforces it).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address the HQ HTTP server listens on."),
    Setting("port", 8400, "TCP port of the HQ HTTP server (0 picks a free one)."),
    Setting("database", "sqlite:///hq.sqlite3", "Where HQ stores everything: 'sqlite:///hq.sqlite3' (a SQLite file; relative paths are under data_dir, 'sqlite:////abs/path' is absolute; a bare path works too) or 'postgresql://user:password@host:5432/dbname' (any libpq URL) for several HQ processes on several hosts."),
    Setting("data_dir", "data/hq", "Directory for the database and the HQ signing key."),
    Setting("hq_key_file", "hq_ed25519.pem", "HQ Ed25519 private key (PKCS#8 PEM, mode 0600), relative to data_dir; created on first start."),
    Setting("link_url", "", "Base URL of the branch link written into enrolled devices' [hq] url, e.g. https://hq.example.org:8443 (empty: http://host:port of this server)."),
    Setting("link_tls_port", 0, "Port of the mutual-TLS branch link listener (certificates of each organization's CA, chosen by SNI); 0: none."),
    Setting("cert_days", 7.0, "Lifetime of device certificates in days (fractions allowed); devices renew theirs over the link at half-life."),
    Setting("enroll_code_ttl_s", 86400, "How long a device's one-time enrollment code waits for an admin."),
    Setting("workers", 1, "HQ server processes sharing the port (SO_REUSEPORT, Linux), each with its own database writer, under a supervisor that restarts any that dies; worker 0 alone runs the scheduler and notification dispatcher."),
    Setting("event_loop", "auto", "The serving processes' event loop: 'auto' (uvloop when installed, as the hq extra does; else Python's), 'uvloop', or 'asyncio' (Python's own)."),
    Setting("read_connections", 4, "Number of read-only database connections (threads) for queries."),
    Setting("pool_size", 4, "PostgreSQL only: write connections (threads) per HQ process; each runs one transaction at a time (bookings queued together share one). About the database server's cores divided by the HQ processes, at least 2."),
    Setting("cookie_secure", True, "Set the Secure flag on the session cookie (turn off only for plain-HTTP development)."),
    Setting("cookie_samesite", "Strict", "SameSite attribute of the session cookie: Strict or Lax."),
    Setting("session_ttl_s", 43200, "Lifetime of a web (cookie) session in seconds."),
    Setting("api_token_ttl_s", 2592000, "Lifetime of an API bearer token in seconds."),
    Setting("argon2_memory_kib", 65536, "Argon2id memory cost in KiB for password hashes."),
    Setting("argon2_iterations", 3, "Argon2id iterations (time cost)."),
    Setting("argon2_lanes", 4, "Argon2id lanes (parallelism)."),
    Setting("bootstrap_admin_email", "", "If set and no account exists, create a super admin with this e-mail on start."),
    Setting("bootstrap_admin_password", "", "Password of the bootstrap super admin (change it after first login)."),
    Setting("booking_rate_per_minute", 30, "Booking endpoint requests allowed per client address per minute (0 disables the limit)."),
    Setting("booking_rate_burst", 10, "Extra burst of booking requests allowed above the steady rate."),
    Setting("login_rate_per_minute", 20, "Login attempts allowed per client address per minute (0 disables the limit)."),
    Setting("metrics_token", "", "Bearer token that lets a Prometheus server on another host read /metrics; empty: /metrics answers loopback clients only (not through a proxy)."),
    Setting("trust_forwarded_for", False, "Take the client address for rate limits from X-Forwarded-For (only behind a trusted proxy)."),
    Setting("booking_horizon_days", 60, "How many days ahead online booking is offered."),
    Setting("booking_token_grace_s", 7200, "A booking token stays valid this long after the slot ends."),
    Setting("default_phone_region", "", "ISO region (e.g. CH) for phone numbers given without +country code; empty requires +country."),
    Setting("default_service_s", 300, "Assumed mean service time in seconds when a branch has no completed tickets yet."),
    Setting("turn_near_places", 3, "Send 'your turn is near' when a ticket is this many places from the front."),
    Setting("reminder_lead_s", 86400, "Send the booking reminder this many seconds before the slot (the day before)."),
    Setting("purge_after_days", 30, "Personal data (name, phone, e-mail) of bookings and notifications is erased this many days after the slot."),
    Setting("scheduler_enabled", True, "Run the APScheduler jobs (reminders, booking no-shows, purge, notification dispatch)."),
    Setting("scheduler_interval_s", 60, "How often the reminder and booking no-show jobs run, in seconds (the purge at most every 300 s)."),
    Setting("notify_poll_s", 5, "How often the notification dispatcher looks for due notifications, in seconds."),
    Setting("notify_max_attempts", 8, "Give up on a notification after this many failed attempts."),
    Setting("notify_backoff_base_s", 10, "First retry delay in seconds; doubles per attempt."),
    Setting("notify_backoff_max_s", 3600, "Largest retry delay in seconds."),
    Setting("email_gateway", "log", "How e-mails leave: 'log' (write to the log) or 'smtp'."),
    Setting("sms_gateway", "log", "How SMS leave: 'log' (write to the log) or 'http'."),
    Setting("smtp_host", "127.0.0.1", "SMTP server host."),
    Setting("smtp_port", 25, "SMTP server port."),
    Setting("smtp_starttls", False, "Use STARTTLS on the SMTP connection."),
    Setting("smtp_username", "", "SMTP login (empty: no authentication)."),
    Setting("smtp_password", "", "SMTP password."),
    Setting("smtp_from", "smartq@localhost", "From address of notification e-mails."),
    Setting("smtp_timeout_s", 10, "SMTP connection timeout in seconds."),
    Setting("sms_url", "", "HTTP SMS gateway URL; receives POST JSON {to, text, idempotency_key}."),
    Setting("sms_token", "", "Bearer token sent to the HTTP SMS gateway (empty: none)."),
    Setting("sms_timeout_s", 10, "HTTP SMS gateway timeout in seconds."),
    Setting("log_level", "INFO", "Logging level of `python -m hq`."),
    Setting("branch_silent_after_s", 90, "The status page says the office works offline when HQ has not heard from the branch for this long."),
    Setting("fleet_silent_after_s", 300, "The console's fleet page lists a device under 'needs attention' when neither HQ nor a peer has heard from it for this long (seconds)."),
    Setting("target_wait_s", 900, "The target wait (seconds) of every service without its own (the service catalogue sets those)."),
    Setting("citizen_code_ttl_s", 900, "How long a one-time code (account verification, password reset) is valid."),
    Setting("citizen_max_failures", 5, "Failed logins (or code attempts) of one citizen account before it is locked for citizen_lockout_s."),
    Setting("citizen_lockout_s", 300, "How long a citizen account stays locked after too many failed logins."),
    Setting("web_rate_per_minute", 120, "Citizen page form posts (login, register, book, manage) allowed per client address per minute (0: no limit)."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class SettingsError(ValueError):
    """A configuration file or value that cannot be used."""


class Settings:
    """Resolved settings; attribute access by setting name, immutable after creation."""

    __slots__ = ("_values",)

    def __init__(self, **overrides: Any) -> None:
        values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
        for name, value in overrides.items():
            if name not in _BY_NAME:
                raise SettingsError(f"unknown setting {name!r}")
            default = _BY_NAME[name].default
            values[name] = _coerce(name, value, default)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are immutable; use replace()")

    def replace(self, **changes: Any) -> Settings:
        return Settings(**{**self._values, **changes})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def database_url(self) -> str:
        """The ``database`` setting as a URL: ``sqlite:///<absolute path>`` or ``postgresql://...``."""
        if self.database.startswith(("postgresql://", "postgres://")):
            return self.database
        return f"sqlite:///{self.database_path.resolve()}"

    @property
    def database_path(self) -> Path:
        """The SQLite file (an error for a PostgreSQL database)."""
        if self.database.startswith(("postgresql://", "postgres://")):
            raise SettingsError("the database is PostgreSQL, not a file")
        raw = self.database[len("sqlite:///"):] if self.database.startswith("sqlite:///") else self.database
        if raw in (":memory:", ""):
            raise SettingsError("HQ needs a file database (several connections share it)")
        if "://" in raw:
            raise SettingsError("setting 'database' must be sqlite:///path or postgresql://...")
        path = Path(raw)
        return path if path.is_absolute() else Path(self.data_dir) / path

    @property
    def key_path(self) -> Path:
        path = Path(self.hq_key_file)
        return path if path.is_absolute() else Path(self.data_dir) / path


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"setting {name!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"setting {name!r} must be an integer")
        if name == "workers" and not 1 <= value <= 64:
            raise SettingsError("setting 'workers' must be between 1 and 64")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise SettingsError(f"setting {name!r} must be a string")
    if name == "event_loop" and value not in ("auto", "uvloop", "asyncio"):
        raise SettingsError("setting 'event_loop' must be 'auto', 'uvloop' or 'asyncio'")
    return value


def load_settings(path: str | Path) -> Settings:
    """Read a TOML file: settings at top level or under an ``[hq]`` table.

    Relative ``data_dir`` is taken relative to the file's directory.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"cannot read {path}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path} is not valid TOML: {err}") from err
    if isinstance(data.get("hq"), dict):
        data = data["hq"]
    values = dict(data)
    data_dir = Path(values.get("data_dir", _BY_NAME["data_dir"].default))
    if not data_dir.is_absolute():
        values["data_dir"] = str(path.parent / data_dir)
    return Settings(**values)
