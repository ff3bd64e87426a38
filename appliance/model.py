"""The branch configuration as the log holds it (it replicates), loaded from the projection."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from appliance.config import Config, CounterConfig, QueueRules, RosterEntry, ServiceConfig, parse_range
from appliance.hours import parse_hours
from appliance.queue import rules_for


@dataclass(frozen=True)
class Model:
    branch_id: str
    name: str
    timezone: str
    languages: tuple[str, ...]
    rules: QueueRules
    notices: tuple[str, ...] = ()
    #: Notices per language code (``notices = { en = [...], ... }`` in the device file).
    notices_by_language: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: dict[str, ServiceConfig] = field(default_factory=dict)
    counters: dict[str, CounterConfig] = field(default_factory=dict)
    roster: dict[str, RosterEntry] = field(default_factory=dict)
    #: Opening hours (appliance.hours): HQ's config.hours, else the device file's [hours].
    hours: dict[str, Any] | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def rules_for(self, service: str) -> QueueRules:
        svc = self.services.get(service)
        return rules_for(self.rules, svc.rules if svc else None)


def config_events(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """The configuration file as (event type, payload) pairs, as the log carries it."""
    out: list[tuple[str, dict[str, Any]]] = [(
        "config.branch",
        {"id": config.branch_id, "name": config.branch_name, "timezone": config.timezone,
         "languages": list(config.languages), "queue": dict(config.queue.__dict__),
         "notices": list(config.notices),
         **({"notices_by_language": {k: list(v) for k, v in config.notices_by_language.items()}}
            if config.notices_by_language else {})},
    )]
    for i, s in enumerate(config.services):
        service: dict[str, Any] = {"id": s.id, "letter": s.letter, "names": dict(s.names),
                                   "rules": dict(s.rules), "order": i}
        if s.icon:
            service["icon"] = s.icon
        out.append(("config.service", service))
    for i, c in enumerate(config.counters):
        counter: dict[str, Any] = {"id": c.id, "name": c.name, "services": list(c.services), "order": i}
        if c.names:
            counter["names"] = dict(c.names)
        out.append(("config.counter", counter))
    out.append(("config.roster", {"devices": [
        {"id": r.id, "role": r.role, "public_key": r.public_key,
         "numbers": f"{r.numbers[0]}-{r.numbers[1]}" if r.numbers else None}
        for r in sorted(config.roster, key=lambda r: r.id)  # by id, as HQ sends it: one canonical body
    ]}))
    return out


def load_model(conn: sqlite3.Connection, fallback: Config) -> Model:
    """The model from the projection's config rows, defaults from the file for what is missing."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        (kind, id_): json.loads(body) for kind, id_, body in conn.execute("SELECT kind, id, body FROM config")
    }
    branch = bodies.get(("branch", "branch"), {})
    queue = branch.get("queue") or {}
    rules = QueueRules(**{k: int(v) for k, v in queue.items() if k in QueueRules.__dataclass_fields__}) if queue else fallback.queue
    in_order = sorted(bodies.items(), key=lambda kv: (kv[0][0], kv[1].get("order", 0), kv[0][1]))
    services = {
        id_: ServiceConfig(b["id"], b["letter"], dict(b["names"]), dict(b.get("rules") or {}),
                            str(b.get("icon") or ""), b.get("enabled", True) is not False)
        for (kind, id_), b in in_order if kind == "service"
    }
    counters = {
        id_: CounterConfig(b["id"], b["name"], tuple(b["services"]), dict(b.get("names") or {}))
        for (kind, id_), b in in_order if kind == "counter"
    }
    roster_body = bodies.get(("roster", "branch"))
    if roster_body is not None:
        roster = {
            d["id"]: RosterEntry(d["id"], d["role"], d["public_key"],
                                 parse_range(d["numbers"], "roster") if d.get("numbers") else None)
            for d in roster_body["devices"]
        }
    else:
        roster = {r.id: r for r in fallback.roster}
    return Model(
        branch_id=branch.get("id", fallback.branch_id),
        name=branch.get("name", fallback.branch_name),
        timezone=branch.get("timezone", fallback.timezone),
        languages=tuple(branch.get("languages", fallback.languages)),
        rules=rules,
        notices=tuple(branch.get("notices", fallback.notices)),
        notices_by_language={k: tuple(v) for k, v in (
            branch["notices_by_language"] if "notices_by_language" in branch else fallback.notices_by_language).items()},
        services=services or {s.id: s for s in fallback.services},
        counters=counters or {c.id: c for c in fallback.counters},
        roster=roster,
        hours=_hours(bodies.get(("hours", "branch")), fallback),
    )


def _hours(body: dict[str, Any] | None, fallback: Config) -> dict[str, Any] | None:
    """HQ's hours when a config.hours event was folded (a bad one is ignored), else the file's."""
    if body is not None:
        try:
            return parse_hours(body, "config.hours")
        except ValueError:
            pass
    return fallback.hours
