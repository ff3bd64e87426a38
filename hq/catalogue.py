"""The service catalogue of an organization: a service defined once (letter, names, slot length,
capacity, queue rules, the kiosk's pictogram, the target wait) and offered in many branches, each
offer with its local overrides (slot length, capacity, target wait) or withdrawn.

The catalogue does not replace a branch's services: every offer is written through to the
branch's own service row with :meth:`hq.tenants.Writer.put_service`, so booking, the public
pages and the nodes keep reading one place, and every change becomes the signed
``config.service`` event the branch link carries to the branch (in the same transaction as the
rows). A withdrawn offer keeps the branch's row with ``enabled = 0`` (``config.service`` with
``enabled: false``): kiosks stop offering it, booking refuses it, waiting tickets are still served.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from hq import tenants
from hq.errors import ApiError, bad_request, check_id, check_int, check_obj, conflict, not_found

#: What an offer may change for its branch; None keeps the catalogue's value.
OVERRIDES = ("slot_minutes", "capacity", "target_wait_minutes")


def entry_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "org": row["org_id"], "letter": row["letter"], "names": json.loads(row["names"]),
            "bookable": bool(row["bookable"]), "slot_minutes": row["slot_minutes"], "capacity": row["capacity"],
            "rules": json.loads(row["rules"]), "icon": row["icon"], "target_wait_minutes": row["target_wait_minutes"]}


def offer_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"branch": row["branch_id"], "service": row["service_id"], "enabled": bool(row["enabled"]),
            "slot_minutes": row["slot_minutes"], "capacity": row["capacity"],
            "target_wait_minutes": row["target_wait_minutes"]}


def get_entry(conn: sqlite3.Connection, org_id: str, service_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM catalogue WHERE org_id = ? AND id = ?", (org_id, service_id)).fetchone()
    if row is None:
        raise not_found("catalogue service")
    return row


def entries(conn: sqlite3.Connection, org_id: str) -> list[dict[str, Any]]:
    """The organization's catalogue, each service with the branches it is offered in."""
    offered: dict[str, list[str]] = {}
    for r in conn.execute("SELECT o.service_id, b.name FROM catalogue_offers o JOIN branches b ON b.id = o.branch_id"
                          " WHERE o.org_id = ? AND o.enabled = 1 ORDER BY b.name", (org_id,)):
        offered.setdefault(r[0], []).append(r[1])
    return [entry_json(r) | {"offered_in": offered.get(r["id"], [])}
            for r in conn.execute("SELECT * FROM catalogue WHERE org_id = ? ORDER BY letter, id", (org_id,))]


def outside(conn: sqlite3.Connection, org_id: str) -> list[dict[str, Any]]:
    """Services the organization's branches have (made through the JSON API) that the catalogue
    does not hold yet: each id once, with the branches that have it and its first branch's row,
    from which the console pre-fills the catalogue's form (offering it then takes it over)."""
    out: dict[str, dict[str, Any]] = {}
    for r in conn.execute(
            "SELECT s.*, b.name AS branch_name FROM services s JOIN branches b ON b.id = s.branch_id"
            " WHERE b.org_id = ? AND s.enabled = 1 AND NOT EXISTS (SELECT 1 FROM catalogue c"
            " WHERE c.org_id = b.org_id AND c.id = s.id) ORDER BY s.id, b.name", (org_id,)):
        entry = out.setdefault(r["id"], tenants.service_json(r) | {"branches": []})
        entry["branches"].append(r["branch_name"])
    return list(out.values())


def offers(conn: sqlite3.Connection, org_id: str, service_id: str) -> dict[str, dict[str, Any]]:
    return {r["branch_id"]: offer_json(r) for r in conn.execute(
        "SELECT * FROM catalogue_offers WHERE org_id = ? AND service_id = ?", (org_id, service_id))}


def check_entry(body: Any) -> dict[str, Any]:
    """A catalogue service's definition, validated as the branch's services are (hq.tenants)."""
    body = check_obj(body)
    letter = body.get("letter")
    if not isinstance(letter, str) or not re.fullmatch(r"[A-Z]", letter):
        raise bad_request("letter must be one capital letter A-Z")
    bookable = body.get("bookable", True)
    if not isinstance(bookable, bool):
        raise bad_request("bookable must be true or false")
    return {"letter": letter, "names": tenants.check_names(body.get("names")), "bookable": bookable,
            "slot_minutes": check_int(body.get("slot_minutes", 15), "slot_minutes", 5, 480),
            "capacity": check_int(body.get("capacity", 1), "capacity", 0, 10000),
            "rules": tenants.check_rules(body.get("rules"), tenants.SERVICE_RULE_KEYS, "rules"),
            "icon": tenants.check_icon(body.get("icon", "")),
            "target_wait_minutes": tenants.check_target(body.get("target_wait_minutes"))}


def check_offer(body: Any) -> dict[str, Any]:
    body = check_obj(body)
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad_request("enabled must be true or false")
    out: dict[str, Any] = {"enabled": enabled}
    bounds = {"slot_minutes": (5, 480), "capacity": (0, 10000), "target_wait_minutes": tenants.TARGET_MINUTES}
    for k in OVERRIDES:
        v = body.get(k)
        out[k] = None if v is None else check_int(v, k, *bounds[k])
    return out


class Catalogue:
    """Catalogue writes of one organization inside the caller's write transaction."""

    def __init__(self, writer: tenants.Writer, org_id: str) -> None:
        self.w, self.conn, self.org_id = writer, writer.conn, org_id
        tenants.get_org(self.conn, org_id)

    def create(self, service_id: str, body: Any) -> dict[str, Any]:
        check_id(service_id, "service id")
        if self.conn.execute("SELECT 1 FROM catalogue WHERE org_id = ? AND id = ?",
                             (self.org_id, service_id)).fetchone():
            raise conflict(f"service {service_id} is already in the catalogue", "exists")
        return self.put(service_id, body)

    def update(self, service_id: str, body: Any) -> dict[str, Any]:
        """Change the definition of a service already in the catalogue (404 otherwise)."""
        get_entry(self.conn, self.org_id, service_id)
        return self.put(service_id, body)

    def put(self, service_id: str, body: Any) -> dict[str, Any]:
        """Create or change the definition; every branch it is offered in gets the change."""
        check_id(service_id, "service id")
        e = check_entry(body)
        self.conn.execute(
            "INSERT INTO catalogue (org_id, id, letter, names, bookable, slot_minutes, capacity, rules, icon,"
            " target_wait_minutes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, id) DO UPDATE SET"
            " letter = excluded.letter, names = excluded.names, bookable = excluded.bookable,"
            " slot_minutes = excluded.slot_minutes, capacity = excluded.capacity, rules = excluded.rules,"
            " icon = excluded.icon, target_wait_minutes = excluded.target_wait_minutes",
            (self.org_id, service_id, e["letter"], json.dumps(e["names"], ensure_ascii=False), int(e["bookable"]),
             e["slot_minutes"], e["capacity"], json.dumps(e["rules"]), e["icon"], e["target_wait_minutes"]))
        for branch_id in offers(self.conn, self.org_id, service_id):
            self._write_through(service_id, branch_id)
        return entry_json(get_entry(self.conn, self.org_id, service_id))

    def offer(self, service_id: str, branch_id: str, body: Any) -> dict[str, Any]:
        """Offer the service in a branch of the organization (or change / withdraw the offer)."""
        get_entry(self.conn, self.org_id, service_id)
        branch = tenants.get_branch(self.conn, branch_id)
        if branch["org_id"] != self.org_id:
            raise not_found("branch")  # another tenant's branch is neither used nor revealed
        o = check_offer(body)
        if not o["enabled"] and branch_id not in offers(self.conn, self.org_id, service_id):
            raise conflict("the service is not offered in this branch", "not_offered")
        self.conn.execute(
            "INSERT INTO catalogue_offers (branch_id, service_id, org_id, enabled, slot_minutes, capacity,"
            " target_wait_minutes) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (branch_id, service_id) DO UPDATE SET"
            " enabled = excluded.enabled, slot_minutes = excluded.slot_minutes, capacity = excluded.capacity,"
            " target_wait_minutes = excluded.target_wait_minutes",
            (branch_id, service_id, self.org_id, int(o["enabled"]), o["slot_minutes"], o["capacity"],
             o["target_wait_minutes"]))
        self._write_through(service_id, branch_id)
        return offers(self.conn, self.org_id, service_id)[branch_id]

    def _write_through(self, service_id: str, branch_id: str) -> None:
        """The branch's own service row (and its config.service event) from entry + offer."""
        e = entry_json(get_entry(self.conn, self.org_id, service_id))
        o = offers(self.conn, self.org_id, service_id)[branch_id]
        body = {"letter": e["letter"], "names": e["names"], "bookable": e["bookable"], "rules": e["rules"],
                "icon": e["icon"], "enabled": o["enabled"],
                **{k: e[k] if o[k] is None else o[k] for k in OVERRIDES}}
        try:
            self.w.put_service(branch_id, service_id, body)
        except ApiError as err:
            if err.status == 409:  # the letter is another service's in that branch
                raise conflict(f"branch {branch_id}: {err.message}", "letter_taken") from err
            raise


def branch_targets(conn: sqlite3.Connection, branch_id: str, default_s: int) -> list[dict[str, Any]]:
    """A branch's services with their target waits: ``own`` (the branch's choice, minutes or
    None) and ``fallback_s`` (what applies without it: the catalogue's, else HQ's ``default_s``)."""
    out = []
    for r in conn.execute(
            "SELECT s.id, s.names, s.target_wait_minutes, o.service_id AS offered, o.target_wait_minutes AS offer_t,"
            " c.target_wait_minutes AS entry_t FROM services s LEFT JOIN catalogue_offers o"
            " ON o.branch_id = s.branch_id AND o.service_id = s.id LEFT JOIN catalogue c"
            " ON c.org_id = o.org_id AND c.id = o.service_id WHERE s.branch_id = ? AND s.enabled = 1"
            " ORDER BY s.position, s.letter, s.id", (branch_id,)):
        from_catalogue = r["offered"] is not None
        own = r["offer_t"] if from_catalogue else r["target_wait_minutes"]
        fallback = r["entry_t"] if from_catalogue and r["entry_t"] else None
        out.append({"id": r["id"], "names": json.loads(r["names"]), "own": own,
                    "fallback_s": fallback * 60 if fallback else default_s})
    return out


def set_branch_target(conn: sqlite3.Connection, branch_id: str, service_id: str, minutes: Any) -> None:
    """A branch's own target wait for one of its services (branch managers may set it): the
    catalogue offer's override when the service comes from the catalogue (None: the catalogue's),
    else the service's own (None: HQ's target_wait_s). Written through to the service row that
    every reader uses; HQ-only, so no config event."""
    minutes = tenants.check_target(minutes)
    tenants.get_service(conn, branch_id, service_id)
    row = conn.execute("SELECT c.target_wait_minutes FROM catalogue_offers o JOIN catalogue c"
                       " ON c.org_id = o.org_id AND c.id = o.service_id WHERE o.branch_id = ? AND o.service_id = ?",
                       (branch_id, service_id)).fetchone()
    effective = minutes
    if row is not None:
        conn.execute("UPDATE catalogue_offers SET target_wait_minutes = ? WHERE branch_id = ? AND service_id = ?",
                     (minutes, branch_id, service_id))
        effective = minutes if minutes is not None else row[0]
    conn.execute("UPDATE services SET target_wait_minutes = ? WHERE branch_id = ? AND id = ?",
                 (effective, branch_id, service_id))
