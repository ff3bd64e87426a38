"""Fleet health at HQ: each device's own report over the branch link (POST /sync/v1/health,
hq/link.py) and what the console's fleet page makes of it (hq/console/fleet.py).

A report is stored for the device that signed the request, never for one it names: an
enrolled device can only speak for itself, an unknown one is refused by the link. What a device
says about its peers (when it last heard from each over the LAN) is kept as its own view.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

PRINTER_STATES = ("ok", "paper_low", "paper_out", "cover_open", "offline", "error", "unknown")
VERSION_RE = re.compile(r"^[0-9A-Za-z.+_-]{1,40}$")
MAX_PEERS = 50
# What needs attention (docs/console.md, "Fleet health").
PENDING_ATTENTION = 100  # events the device holds that HQ does not have yet
CLOCK_ATTENTION_MS = 60_000  # the node holds events more than 5 min ahead; warn well before


class BadReport(ValueError):
    """A health report that cannot be stored (answered 400)."""


@dataclass(frozen=True, slots=True)
class Report:
    app_version: str
    role: str
    clock_ms: int
    pending: int
    printer: str | None
    printer_message: str
    peers: list[dict[str, Any]]


def parse_report(body: Any) -> Report:
    if not isinstance(body, dict):
        raise BadReport("body must be a JSON object")

    def integer(name: str, lo: int, hi: int) -> int:
        v = body.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise BadReport(f"{name} must be an integer from {lo} to {hi}")
        return v
    version = body.get("app_version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BadReport("app_version must be a short version string")
    role = body.get("role")
    if not isinstance(role, str) or not re.match(r"^[a-z_]{1,20}$", role):
        raise BadReport("role must be a device role")
    printer = body.get("printer")
    if printer is not None and printer not in PRINTER_STATES:
        raise BadReport(f"printer must be null or one of {', '.join(PRINTER_STATES)}")
    message = body.get("printer_message", "")
    if not isinstance(message, str):
        raise BadReport("printer_message must be a string")
    peers_in = body.get("peers", [])
    if not isinstance(peers_in, list) or len(peers_in) > MAX_PEERS:
        raise BadReport(f"peers must be a list of at most {MAX_PEERS}")
    peers = []
    for p in peers_in:
        if not isinstance(p, dict) or not isinstance(p.get("device"), str) or not 0 < len(p["device"]) <= 64:
            raise BadReport("each peer needs a device id")
        seen = p.get("last_seen_ms")
        if seen is not None and (not isinstance(seen, int) or isinstance(seen, bool) or not 0 <= seen < 2**48):
            raise BadReport("last_seen_ms must be null or milliseconds")
        status = p.get("status")
        peers.append({"device": p["device"], "last_seen_ms": seen, "status": status[:20] if isinstance(status, str) else ""})
    return Report(app_version=version, role=role, clock_ms=integer("clock_ms", 0, 2**48),
                  pending=integer("pending", 0, 2**40), printer=printer, printer_message=message[:200], peers=peers)


def store(conn: sqlite3.Connection, branch_id: str, device_id: str, report: Report, received_ms: int,
          now: int) -> None:
    """Keep the latest report of (branch, device); clock offset = the device's clock - HQ's on receipt."""
    conn.execute(
        "INSERT INTO device_health (branch_id, device_id, reported_at, app_version, role, clock_offset_ms, pending,"
        " printer, printer_message, peers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (branch_id, device_id) DO UPDATE SET reported_at = excluded.reported_at,"
        " app_version = excluded.app_version, role = excluded.role, clock_offset_ms = excluded.clock_offset_ms,"
        " pending = excluded.pending, printer = excluded.printer, printer_message = excluded.printer_message,"
        " peers = excluded.peers",
        (branch_id, device_id, now, report.app_version, report.role, report.clock_ms - received_ms, report.pending,
         report.printer, report.printer_message, json.dumps(report.peers)))


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])


def fleet(conn: sqlite3.Connection, branch_ids: list[str], now: int, silent_after_s: int) -> list[dict[str, Any]]:
    """Every registered device of ``branch_ids`` with its health and what needs attention."""
    if not branch_ids:
        return []
    marks = ", ".join("?" * len(branch_ids))
    devices = conn.execute(
        f"SELECT d.branch_id, d.id, d.role, d.name, d.revoked_at, b.name AS branch_name, h.reported_at, h.app_version,"
        f" h.clock_offset_ms, h.pending, h.printer, h.printer_message, h.peers FROM devices d"
        f" JOIN branches b ON b.id = d.branch_id LEFT JOIN device_health h ON h.branch_id = d.branch_id"
        f" AND h.device_id = d.id WHERE d.branch_id IN ({marks}) ORDER BY b.name, d.branch_id, d.id",
        branch_ids).fetchall()
    # When each device was last heard by a peer of its branch (the peers' own reports).
    by_peer: dict[tuple[str, str], int] = {}
    for d in devices:
        for p in json.loads(d["peers"]) if d["peers"] else []:
            if p.get("last_seen_ms") and p.get("device") != d["id"]:
                key = (d["branch_id"], p["device"])
                by_peer[key] = max(by_peer.get(key, 0), int(p["last_seen_ms"]) // 1000)
    versions = [d["app_version"] for d in devices if d["app_version"] and d["app_version"] != "unknown"]
    newest = max(versions, key=_version_key) if versions else None
    out = []
    for d in devices:
        if d["revoked_at"] is not None:
            continue
        peer_heard = by_peer.get((d["branch_id"], d["id"]))
        heard = max([t for t in (d["reported_at"], peer_heard) if t is not None], default=None)
        problems: list[tuple[str, dict[str, Any]]] = []
        if heard is None:
            problems.append(("never", {}))
        elif now - heard > silent_after_s:
            problems.append(("silent", {"minutes": (now - heard) // 60}))
        if d["pending"] is not None and d["pending"] >= PENDING_ATTENTION:
            problems.append(("pending", {"n": d["pending"]}))
        if d["printer"] in ("paper_low", "paper_out", "cover_open", "offline", "error"):
            problems.append(("printer", {"state": d["printer"]}))
        if d["clock_offset_ms"] is not None and abs(d["clock_offset_ms"]) >= CLOCK_ATTENTION_MS:
            problems.append(("clock", {"seconds": round(d["clock_offset_ms"] / 1000)}))
        if newest and d["app_version"] and d["app_version"] != "unknown" and \
                _version_key(d["app_version"]) < _version_key(newest):
            problems.append(("version", {"newest": newest}))
        out.append({"branch_id": d["branch_id"], "branch_name": d["branch_name"], "id": d["id"], "role": d["role"],
                    "name": d["name"], "reported_at": d["reported_at"], "peer_heard": peer_heard, "heard": heard,
                    "app_version": d["app_version"], "clock_offset_ms": d["clock_offset_ms"], "pending": d["pending"],
                    "printer": d["printer"], "printer_message": d["printer_message"] or "",
                    "has_printer_report": d["reported_at"] is not None, "problems": problems})
    return out
