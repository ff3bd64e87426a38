"""Organizations, branches and their configuration; every change becomes a signed HQ event.

Functions take a SQLite connection inside the writer's transaction, so the row change and the
outbox event commit together.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import events as ev
from hq import outbox
from hq.errors import bad_request, check_date, check_id, check_int, check_obj, check_str, conflict, not_found
from hq.signing import KeyError_, canonical_public_key

LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
DEVICE_ROLES = ("kiosk", "display", "counter")
# The branch's queue rules (appliance.config.QueueRules) and the per-service overrides it folds.
QUEUE_KEYS = ("max_priority", "promote_after_s", "max_recalls", "call_timeout_s", "default_service_s",
              "estimate_window", "digits")
SERVICE_RULE_KEYS = ("promote_after_s", "max_recalls", "default_service_s", "call_timeout_s", "digits")
RULE_BOUNDS = {"digits": (3, 6)}  # digits of a ticket number (appliance.config.MAX_DIGITS)
NUMBERS_RE = re.compile(r"^\s*(\d{1,3})\s*-\s*(\d{1,3})\s*$")


# -- validation -------------------------------------------------------------------------
def check_timezone(value: Any) -> str:
    tz = check_str(value, "timezone", max_len=64)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise bad_request(f"unknown timezone {tz!r}") from err
    return tz


def check_languages(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > 20 or not all(
            isinstance(v, str) and LANG_RE.match(v) for v in value):
        raise bad_request("languages must be a non-empty list of language codes like 'en' or 'fr-CH'")
    return list(dict.fromkeys(value))


def check_names(value: Any, field: str = "names", *, required: bool = True) -> dict[str, str]:
    """{language: text}; `required=False` also takes an absent or empty object."""
    if not required and (value is None or value == {}):
        return {}
    if not isinstance(value, dict) or not value or len(value) > 20:
        raise bad_request(f"{field} must be an object {{language: text}}")
    out = {}
    for lang, text in value.items():
        if not LANG_RE.match(lang):
            raise bad_request(f"{field} has a bad language code {lang!r}")
        out[lang] = check_str(text, f"{field}.{lang}", max_len=120)
    return out


def check_rules(value: Any, keys: tuple[str, ...], field: str) -> dict[str, int]:
    """An object of non-negative integer queue rules with only the known keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be an object")
    unknown = set(value) - set(keys)
    if unknown:
        raise bad_request(f"{field}: unknown rules {sorted(unknown)}; known: {', '.join(keys)}")
    return {k: check_int(v, f"{field}.{k}", *RULE_BOUNDS.get(k, (0, 10_000_000))) for k, v in value.items()}


def check_icon(value: Any) -> str:
    """The kiosk's pictogram for a service: one of appliance.config.SERVICE_ICONS, or "" (the kiosk chooses)."""
    from appliance.config import SERVICE_ICONS
    if value in ("", None):
        return ""
    if value not in SERVICE_ICONS:
        raise bad_request(f"icon must be one of {', '.join(SERVICE_ICONS)}")
    return str(value)


#: A service's target wait in whole minutes (the histogram of hq/aggregates.py ends at 240 min).
TARGET_MINUTES = (1, 240)


def check_target(value: Any, field: str = "target_wait_minutes") -> int | None:
    """A service's target wait in minutes, or None: the HQ setting ``target_wait_s``."""
    if value is None:
        return None
    return check_int(value, field, *TARGET_MINUTES)


def _notice_lines(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 20 or not all(isinstance(v, str) and len(v) <= 200 for v in value):
        raise bad_request(f"{field} must be a list of at most 20 texts of at most 200 characters")
    return list(value)


def check_notices(value: Any) -> list[str] | dict[str, list[str]]:
    """Lines the branch's waiting-room display scrolls: a list (the same in every language) or
    {language: [lines]} (the display shows each language's own lines, English where one has none)."""
    if isinstance(value, dict):
        if len(value) > 20:
            raise bad_request("notices must be a list of texts or an object {language: [texts]}")
        out = {}
        for lang, lines in value.items():
            if not LANG_RE.match(lang):
                raise bad_request(f"notices has a bad language code {lang!r}")
            out[lang] = _notice_lines(lines, f"notices.{lang}")
        return out
    return _notice_lines(value, "notices")


def notices_payload(notices: list[str] | dict[str, list[str]]) -> dict[str, Any]:
    """The config.branch fields for stored notices, as the node folds them (appliance.model):
    a list is `notices`; per-language lines are `notices_by_language` with `notices` empty."""
    if isinstance(notices, dict):
        return {"notices": [], "notices_by_language": notices}
    return {"notices": notices}


def check_numbers(value: Any) -> str | None:
    """A device's ticket number range "low-high" within 1-999, or None (it issues no tickets)."""
    if value is None:
        return None
    m = NUMBERS_RE.match(value) if isinstance(value, str) else None
    if m is None or not 1 <= int(m[1]) <= int(m[2]) <= 999:
        raise bad_request('numbers must be a range like "1-599" within 1-999')
    return f"{int(m[1])}-{int(m[2])}"


def check_day(value: Any, field: str = "day") -> str:
    return check_date(value, field).isoformat()


# -- rows ----------------------------------------------------------------------------------
def org_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"]}


def branch_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "org": row["org_id"], "name": row["name"], "timezone": row["timezone"],
            "languages": json.loads(row["languages"]), "notices": json.loads(row["notices"]),
            "queue": json.loads(row["queue"]), "address": row["address"]}


def service_json(row: sqlite3.Row) -> dict[str, Any]:
    # A withdrawn service (enabled 0: the catalogue's offer switched off) is never bookable.
    return {"id": row["id"], "letter": row["letter"], "names": json.loads(row["names"]),
            "bookable": bool(row["bookable"]) and bool(row["enabled"]), "slot_minutes": row["slot_minutes"],
            "capacity": row["capacity"], "rules": json.loads(row["rules"]), "order": row["position"],
            "enabled": bool(row["enabled"]), "icon": row["icon"], "target_wait_minutes": row["target_wait_minutes"]}


def counter_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "names": json.loads(row["names"]),
            "services": json.loads(row["services"]), "order": row["position"]}


def device_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "branch": row["branch_id"], "role": row["role"], "name": row["name"],
            "public_key": row["public_key"], "numbers": row["numbers"]}


# -- what the branch folds (appliance.model.config_events has the same shapes) ---------------
def branch_event(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "timezone": row["timezone"],
            "languages": json.loads(row["languages"]), **notices_payload(json.loads(row["notices"])),
            "queue": json.loads(row["queue"])}


def service_event(row: sqlite3.Row) -> dict[str, Any]:
    """config.service (appliance.events.ConfigService): `icon` only when set, `enabled` only when
    withdrawn, so a plain service's event is the same as before the catalogue."""
    out: dict[str, Any] = {"id": row["id"], "letter": row["letter"], "names": json.loads(row["names"]),
                           "rules": json.loads(row["rules"]), "order": row["position"]}
    if row["icon"]:
        out["icon"] = row["icon"]
    if not row["enabled"]:
        out["enabled"] = False
    return out


def counter_event(row: sqlite3.Row) -> dict[str, Any]:
    names = json.loads(row["names"])
    return {"id": row["id"], "name": row["name"], "services": json.loads(row["services"]), "order": row["position"],
            **({"names": names} if names else {})}


def roster_event(conn: sqlite3.Connection, branch_id: str) -> dict[str, Any]:
    """Devices by id in code-point order, as a node writes its file's roster (appliance.model):
    sorted here, not by the database's collation, which differs between SQLite and PostgreSQL."""
    rows = conn.execute("SELECT * FROM devices WHERE branch_id = ?", (branch_id,)).fetchall()
    return {"devices": [{"id": r["id"], "role": r["role"], "public_key": r["public_key"], "numbers": r["numbers"]}
                        for r in sorted(rows, key=lambda r: r["id"])]}


def staff_event(conn: sqlite3.Connection, branch_id: str) -> dict[str, Any]:
    """`{sealed}`: names and PIN hashes sealed to the branch's counter key (hq/branchkeys.py),
    so only counter devices can read them; kiosks, displays and the LAN see ciphertext."""
    from hq.branchkeys import sealed_staff
    return sealed_staff(conn, branch_id, [
        {"id": r["id"], "name": r["name"], "pin_hash": r["pin_hash"]}
        for r in conn.execute("SELECT * FROM staff WHERE branch_id = ? ORDER BY id", (branch_id,))])


def config_snapshot(conn: sqlite3.Connection, branch_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every config event a branch needs to be fully configured (used to re-send it all)."""
    out: list[tuple[str, dict[str, Any]]] = [(ev.CONFIG_BRANCH, branch_event(get_branch(conn, branch_id)))]
    out += [(ev.CONFIG_SERVICE, service_event(r)) for r in
            conn.execute("SELECT * FROM services WHERE branch_id = ? ORDER BY position, id", (branch_id,))]
    out += [(ev.CONFIG_COUNTER, counter_event(r)) for r in
            conn.execute("SELECT * FROM counters WHERE branch_id = ? ORDER BY position, id", (branch_id,))]
    out.append((ev.CONFIG_HOURS, hours_json(conn, branch_id)))
    out.append((ev.CONFIG_ROSTER, roster_event(conn, branch_id)))
    out.append((ev.CONFIG_STAFF, staff_event(conn, branch_id)))
    return out


def staff_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "has_pin": bool(row["pin_hash"])}


# -- reads ---------------------------------------------------------------------------------
def get_org(conn: sqlite3.Connection, org_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM orgs WHERE id = ?", (org_id,)).fetchone()
    if row is None:
        raise not_found("organization")
    return row


def get_branch(conn: sqlite3.Connection, branch_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM branches WHERE id = ?", (branch_id,)).fetchone()
    if row is None:
        raise not_found("branch")
    return row


def get_service(conn: sqlite3.Connection, branch_id: str, service_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM services WHERE branch_id = ? AND id = ?", (branch_id, service_id)).fetchone()
    if row is None:
        raise not_found("service")
    return row


def list_services(conn: sqlite3.Connection, branch_id: str, *, withdrawn: bool = False) -> list[dict[str, Any]]:
    """The branch's services in order; a withdrawn one (enabled 0) only when ``withdrawn``."""
    where = "" if withdrawn else " AND enabled = 1"
    return [service_json(r) for r in conn.execute(f"SELECT * FROM services WHERE branch_id = ?{where}"
                                                  " ORDER BY position, letter, id", (branch_id,))]


def list_counters(conn: sqlite3.Connection, branch_id: str) -> list[dict[str, Any]]:
    return [counter_json(r) for r in conn.execute("SELECT * FROM counters WHERE branch_id = ? ORDER BY position, id", (branch_id,))]


def hours_json(conn: sqlite3.Connection, branch_id: str) -> dict[str, Any]:
    week = {str(r["weekday"]): {"opens": r["opens"], "closes": r["closes"]}
            for r in conn.execute("SELECT * FROM hours WHERE branch_id = ? ORDER BY weekday", (branch_id,))}
    closed = [{"day": r["day"], "reason": r["reason"]}
              for r in conn.execute("SELECT * FROM closed_days WHERE branch_id = ? ORDER BY day", (branch_id,))]
    return {"weekdays": week, "closed_days": closed}


# -- writes --------------------------------------------------------------------------------
class Writer:
    """Config writes for one request; holds what every event needs (key, time)."""

    def __init__(self, conn: sqlite3.Connection, key: Ed25519PrivateKey, now_ms: int) -> None:
        self.conn, self.key, self.now_ms = conn, key, now_ms

    def _emit(self, branch_id: str, type_: str, payload: dict[str, Any]) -> None:
        outbox.emit(self.conn, self.key, branch_id, type_, payload, self.now_ms)

    def create_org(self, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        org_id, name = check_id(body.get("id"), "id"), check_str(body.get("name"), "name")
        try:
            self.conn.execute("INSERT INTO orgs (id, name) VALUES (?, ?)", (org_id, name))
        except sqlite3.IntegrityError as err:
            raise conflict(f"organization {org_id} exists") from err
        return {"id": org_id, "name": name}

    def create_branch(self, org_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        get_org(self.conn, org_id)
        branch_id = check_id(body.get("id"), "id")
        name = check_str(body.get("name"), "name")
        tz = check_timezone(body.get("timezone"))
        langs = check_languages(body.get("languages", ["en"]))
        queue = check_rules(body.get("queue"), QUEUE_KEYS, "queue")
        notices = check_notices(body.get("notices", []))
        address = check_str(body.get("address", ""), "address", max_len=300, required=False) or ""
        try:
            self.conn.execute("INSERT INTO branches (id, org_id, name, timezone, languages, queue, notices, address)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (branch_id, org_id, name, tz, json.dumps(langs),
                                                                   json.dumps(queue), json.dumps(notices, ensure_ascii=False),
                                                                   address))
        except sqlite3.IntegrityError as err:
            raise conflict(f"branch {branch_id} exists") from err
        return self._branch_changed(branch_id)

    def update_branch(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        row = get_branch(self.conn, branch_id)
        name = check_str(body["name"], "name") if "name" in body else row["name"]
        tz = check_timezone(body["timezone"]) if "timezone" in body else row["timezone"]
        langs = check_languages(body["languages"]) if "languages" in body else json.loads(row["languages"])
        queue = check_rules(body["queue"], QUEUE_KEYS, "queue") if "queue" in body else json.loads(row["queue"])
        notices = check_notices(body["notices"]) if "notices" in body else json.loads(row["notices"])
        address = (check_str(body["address"], "address", max_len=300, required=False) or ""
                   if "address" in body else row["address"])
        self.conn.execute("UPDATE branches SET name = ?, timezone = ?, languages = ?, queue = ?, notices = ?, address = ?"
                          " WHERE id = ?", (name, tz, json.dumps(langs), json.dumps(queue),
                                            json.dumps(notices, ensure_ascii=False), address, branch_id))
        return self._branch_changed(branch_id)

    def _branch_changed(self, branch_id: str) -> dict[str, Any]:
        row = get_branch(self.conn, branch_id)
        self._emit(branch_id, ev.CONFIG_BRANCH, branch_event(row))
        return branch_json(row)

    def put_service(self, branch_id: str, service_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        check_id(service_id, "service id")
        letter = body.get("letter")
        if not isinstance(letter, str) or not re.fullmatch(r"[A-Z]", letter):
            raise bad_request("letter must be one capital letter A-Z")
        names = check_names(body.get("names"))
        bookable = body.get("bookable", True)
        if not isinstance(bookable, bool):
            raise bad_request("bookable must be true or false")
        slot_minutes = check_int(body.get("slot_minutes", 15), "slot_minutes", 5, 480)
        capacity = check_int(body.get("capacity", 1), "capacity", 0, 10000)
        rules = check_rules(body.get("rules"), SERVICE_RULE_KEYS, "rules")
        icon = check_icon(body.get("icon", ""))
        target = check_target(body.get("target_wait_minutes"))
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise bad_request("enabled must be true or false")
        order = self._order("services", branch_id, service_id, body.get("order"))
        clash = self.conn.execute("SELECT id FROM services WHERE branch_id = ? AND letter = ? AND id != ?",
                                  (branch_id, letter, service_id)).fetchone()
        if clash:
            raise conflict(f"letter {letter} is used by service {clash[0]}")
        self.conn.execute(
            "INSERT INTO services (branch_id, id, letter, names, bookable, slot_minutes, capacity, rules, position,"
            " enabled, icon, target_wait_minutes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(branch_id, id) DO UPDATE SET letter = excluded.letter, names = excluded.names,"
            " bookable = excluded.bookable, slot_minutes = excluded.slot_minutes, capacity = excluded.capacity,"
            " rules = excluded.rules, position = excluded.position, enabled = excluded.enabled, icon = excluded.icon,"
            " target_wait_minutes = excluded.target_wait_minutes",
            (branch_id, service_id, letter, json.dumps(names, ensure_ascii=False), int(bookable), slot_minutes, capacity,
             json.dumps(rules), order, int(enabled), icon, target))
        row = get_service(self.conn, branch_id, service_id)
        self._emit(branch_id, ev.CONFIG_SERVICE, service_event(row))
        return service_json(row)

    def _order(self, table: str, branch_id: str, item_id: str, given: Any) -> int:
        """The explicit order, else the item's current one, else after the last."""
        if given is not None:
            return check_int(given, "order", 0, 10000)
        row = self.conn.execute(f"SELECT position FROM {table} WHERE branch_id = ? AND id = ?", (branch_id, item_id)).fetchone()
        if row is not None:
            return int(row[0])
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE branch_id = ?", (branch_id,)).fetchone()[0])

    def put_counter(self, branch_id: str, counter_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        check_id(counter_id, "counter id")
        name = check_str(body.get("name"), "name", max_len=80)
        names = check_names(body.get("names"), required=False)
        services = body.get("services", [])
        if not isinstance(services, list) or len(services) > 50:
            raise bad_request("services must be a list of service ids")
        for sid in services:
            get_service(self.conn, branch_id, check_id(sid, "services[]"))
        order = self._order("counters", branch_id, counter_id, body.get("order"))
        self.conn.execute(
            "INSERT INTO counters (branch_id, id, name, names, services, position) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(branch_id, id) DO UPDATE SET name = excluded.name, names = excluded.names,"
            " services = excluded.services, position = excluded.position",
            (branch_id, counter_id, name, json.dumps(names, ensure_ascii=False), json.dumps(services), order))
        row = self.conn.execute("SELECT * FROM counters WHERE branch_id = ? AND id = ?", (branch_id, counter_id)).fetchone()
        self._emit(branch_id, ev.CONFIG_COUNTER, counter_event(row))
        return counter_json(row)

    def put_hours(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        week = check_obj(body.get("weekdays"), "weekdays")
        rows = []
        for wd, span in week.items():
            if wd not in {str(i) for i in range(7)}:
                raise bad_request("weekdays keys are '0' (Monday) to '6' (Sunday)")
            span = check_obj(span, f"weekdays.{wd}")
            opens, closes = span.get("opens"), span.get("closes")
            if not (isinstance(opens, str) and TIME_RE.match(opens) and isinstance(closes, str) and TIME_RE.match(closes)):
                raise bad_request("opens/closes must be HH:MM")
            if opens >= closes:
                raise bad_request(f"weekday {wd}: opens must be before closes")
            rows.append((branch_id, int(wd), opens, closes))
        self.conn.execute("DELETE FROM hours WHERE branch_id = ?", (branch_id,))
        self.conn.executemany("INSERT INTO hours (branch_id, weekday, opens, closes) VALUES (?, ?, ?, ?)", rows)
        return self._hours_changed(branch_id)

    def add_closed_day(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        day = check_day(body.get("day"))
        reason = check_str(body.get("reason", ""), "reason", required=False, max_len=120)
        self.conn.execute("INSERT INTO closed_days (branch_id, day, reason) VALUES (?, ?, ?)"
                          " ON CONFLICT(branch_id, day) DO UPDATE SET reason = excluded.reason", (branch_id, day, reason))
        return self._hours_changed(branch_id)

    def remove_closed_day(self, branch_id: str, day: str) -> dict[str, Any]:
        day = check_day(day)
        if self.conn.execute("DELETE FROM closed_days WHERE branch_id = ? AND day = ?", (branch_id, day)).rowcount == 0:
            raise not_found("closed day")
        return self._hours_changed(branch_id)

    def _hours_changed(self, branch_id: str) -> dict[str, Any]:
        data = hours_json(self.conn, branch_id)
        self._emit(branch_id, ev.CONFIG_HOURS, data)
        return data

    def add_device(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        body = check_obj(body)
        device_id = check_id(body.get("id"), "id")
        role = body.get("role")
        if role not in DEVICE_ROLES:
            raise bad_request(f"role must be one of {', '.join(DEVICE_ROLES)}")
        try:
            public_key = canonical_public_key(body.get("public_key") if isinstance(body.get("public_key"), str) else "")
        except KeyError_ as err:
            raise bad_request(str(err)) from err
        name = check_str(body.get("name", ""), "name", required=False, max_len=80)
        numbers = check_numbers(body.get("numbers"))
        if numbers is not None:
            low, high = (int(x) for x in numbers.split("-"))
            for other, rng in self.conn.execute("SELECT id, numbers FROM devices WHERE branch_id = ? AND numbers IS NOT NULL",
                                                (branch_id,)).fetchall():
                o_low, o_high = (int(x) for x in rng.split("-"))
                if low <= o_high and o_low <= high:
                    raise conflict(f"numbers {numbers} overlap device {other}'s {rng}", "numbers_overlap")
        org = self.conn.execute("SELECT org_id FROM branches WHERE id = ?", (branch_id,)).fetchone()
        try:
            # Unique per organization: another organization's ids are neither taken nor revealed.
            self.conn.execute("INSERT INTO devices (id, branch_id, org_id, role, public_key, name, numbers)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?)", (device_id, branch_id, org[0], role, public_key, name, numbers))
        except sqlite3.IntegrityError as err:
            raise conflict(f"device {device_id} exists in this organization") from err
        self._emit(branch_id, ev.CONFIG_ROSTER, roster_event(self.conn, branch_id))
        return {"id": device_id, "branch": branch_id, "role": role, "name": name, "public_key": public_key,
                "numbers": numbers}

    def put_staff(self, branch_id: str, staff_id: str, name: str, pin_hash: str) -> dict[str, Any]:
        self.conn.execute("INSERT INTO staff (branch_id, id, name, pin_hash) VALUES (?, ?, ?, ?)"
                          " ON CONFLICT(branch_id, id) DO UPDATE SET name = excluded.name, pin_hash = excluded.pin_hash",
                          (branch_id, staff_id, name, pin_hash))
        self._emit(branch_id, ev.CONFIG_STAFF, staff_event(self.conn, branch_id))
        return {"id": staff_id, "name": name, "has_pin": bool(pin_hash)}
