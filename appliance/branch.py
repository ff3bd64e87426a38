"""Commands of one branch's queue: they run on the writer thread (with its connection,
inside its transaction), so each reads a consistent state, appends its events and folds
them atomically. The read side is appliance/queries.py.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from typing import Any

from sync.envelope import Event, loads
from sync.hlc import physical_ms
from sync.tokens import TokenError, verify_token

from appliance import events as ev
from appliance import fold
from appliance import queue as q
from appliance import waits
from appliance.errors import BadRequest, Conflict, NotFound
from appliance.model import Model
from appliance.queries import TICKET_COLUMNS, Queries, iso

__all__ = ["ACTIONS", "Branch", "iso"]

PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{5,22}$")
ACTIONS = ("recall", "start", "complete", "no-show", "requeue", "transfer")


class Branch(Queries):
    # -- configuration ------------------------------------------------------------------
    def sync_config(self, conn: sqlite3.Connection, wanted: list[tuple[str, dict[str, Any]]]) -> int:
        """Append config events for whatever the file says differently from the log.

        What HQ set (events of origin hq:<branch>) is the authority: a restart with an older
        file never overwrites it."""
        kinds = {ev.CONFIG_BRANCH: "branch", ev.CONFIG_SERVICE: "service", ev.CONFIG_COUNTER: "counter",
                 ev.CONFIG_ROSTER: "roster"}
        appended = 0
        for type_, payload in wanted:
            kind = kinds[type_]
            entity = "branch" if kind in ("branch", "roster") else payload["id"]
            row = conn.execute("SELECT body, origin FROM config WHERE kind = ? AND id = ?", (kind, entity)).fetchone()
            if row is not None and row[1].startswith("hq:"):
                continue
            if row is None or json.loads(row[0]) != payload:
                self.log.append(conn, type_, payload)
                appended += 1
        return appended

    # -- commands (writer thread) --------------------------------------------------------
    def append_ticket(self, conn: sqlite3.Connection, type_: str, payload: dict[str, Any]) -> Event:
        """Append an event about an existing ticket, saying which of the ticket's events this
        device had folded (`seen`: {origin: highest seq}), so the fold can tell an action made
        knowing of another from one made concurrently (docs/conflicts.md)."""
        seen = {origin: seq for origin, seq in conn.execute(
            "SELECT origin, max(seq) FROM events WHERE subject = ? AND origin != ? GROUP BY origin",
            (payload["ticket"], self.device_id))}
        return self.log.append(conn, type_, {**payload, "seen": seen})

    def issue(self, conn: sqlite3.Connection, body: dict[str, Any]) -> dict[str, Any]:
        m = self.model(conn, writer=True)
        now = self.now_ms()
        day = q.business_day(now, m.tz)
        payload: dict[str, Any] = {}
        booking_code = body.get("booking_code")
        if booking_code is not None:
            booking_code = self._booking_from_token(conn, m, booking_code, now)
            row = conn.execute("SELECT body, status FROM bookings WHERE code = ?", (booking_code,)).fetchone()
            if row is None:
                raise NotFound(f"unknown booking code {booking_code!r}; scan the QR code of the confirmation",
                               code="unknown_booking")
            booking = loads(row[0])
            if row[1] != "booked":
                raise Conflict(f"booking {booking_code} was cancelled", code="booking_cancelled")
            slot_ms = int(booking["start"]) * 1000
            if q.business_day(slot_ms, m.tz) != day:
                raise Conflict(f"booking {booking_code} is for {q.business_day(slot_ms, m.tz)}", code="booking_other_day")
            existing = conn.execute(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE booking = ?", (booking_code,)).fetchone()
            if existing is not None:
                raise Conflict(f"booking {booking_code} is already checked in as {existing['label']}",
                               code="already_checked_in")
            service = booking["service"]
            payload.update(booking=booking_code, effective_ms=slot_ms)
        else:
            service = body["service"]
        svc = m.services.get(service)
        if svc is None:
            raise NotFound(f"unknown service {service!r}", code="unknown_service")
        if not svc.enabled and booking_code is None:
            raise Conflict(f"service {service!r} is no longer offered here", code="service_withdrawn")
        priority = body.get("priority", 0)
        if not 0 <= priority <= m.rules.max_priority:
            raise BadRequest(f"priority must be between 0 and {m.rules.max_priority}")
        language = body.get("language") or m.languages[0]
        if language not in m.languages:
            raise BadRequest(f"language {language!r} is not offered here ({', '.join(m.languages)})")
        phone = body.get("phone")
        if phone is not None:
            if not PHONE_RE.match(phone):
                raise BadRequest("phone must be a telephone number such as +250 788 123 456")
            # Never in the log in clear: sealed to HQ's personal-data key (HQ sends the SMS);
            # without a key (never linked to HQ) the number is not kept at all.
            sealed = self.seal_phone(re.sub(r"[^0-9+]", "", phone))
            if sealed is not None:
                payload["phone_sealed"] = sealed
        entry = m.roster.get(self.device_id)
        if entry is None or entry.numbers is None:
            raise Conflict("this device has no ticket number range on the roster", code="cannot_issue")
        last = conn.execute(
            "SELECT max(number) FROM tickets WHERE day = ? AND issue_service = ? AND issued_by = ?",
            (day, service, self.device_id),
        ).fetchone()[0]
        digits = m.rules_for(service).digits
        number = q.ticket_number(last, entry.numbers, digits)
        label = q.ticket_label(svc.letter, number, digits)
        ticket_id = q.ticket_id(day, label)
        # The ticket's unguessable key to its live status page at HQ (/t/<status_token>).
        payload.update(ticket=ticket_id, service=service, number=number, label=label, day=day,
                       priority=priority, language=language, status_token=secrets.token_urlsafe(16))
        # The estimate shown for this ticket goes into its issue event, so HQ can measure the
        # estimate's error once the ticket is called (docs/console.md, estimate error).
        effective = int(payload.get("effective_ms", now))
        ahead = self._ahead(conn, m, {"id": ticket_id, "service": service, "priority": priority,
                                      "effective_ms": effective, "day": day}, now)
        sig = waits.signals(conn, m, service=service, priority=priority, effective_ms=effective, ahead=ahead,
                            now_ms=now, day=day, ticket=ticket_id, ctx=self.wait_context(conn, m, day))
        shown = waits.shown(sig, self.wait_model, service)
        payload["estimate"] = {"p50": shown[0]} | ({"p10": shown[1][0], "p90": shown[1][1]} if shown[1] else {})
        issued = self.log.append(conn, ev.TICKET_ISSUED, payload)
        waits.record(conn, ticket_id, day, service, physical_ms(issued.hlc), sig)
        return self.ticket(conn, ticket_id, model=m, shown=shown)

    def _booking_from_token(self, conn: sqlite3.Connection, m: Model, code: str, now_ms: int) -> str:
        """A typed code is returned as it is; an HQ-signed QR token is verified offline and,
        when the booking never reached this branch, recorded from its claims."""
        if not code.startswith("st1."):
            return code.strip().upper()
        if self.hq_key is None:
            raise Conflict("this branch has no HQ key configured to check booking QR codes", code="no_hq_key")
        try:
            claims = verify_token(self.hq_key, code, now=now_ms / 1000)
        except TokenError as err:
            raise BadRequest(f"booking QR code not valid: {err}", code="bad_booking_token") from err
        if claims.get("typ") != "booking" or claims.get("branch") != m.branch_id:
            raise Conflict("this booking is for another branch", code="booking_other_branch")
        booking_code = str(claims["code"])
        if conn.execute("SELECT 1 FROM bookings WHERE code = ?", (booking_code,)).fetchone() is None:
            self.log.append(conn, ev.BOOKING_CREATED, {
                "code": booking_code, "service": claims["service"], "start": int(claims["start"]),
                "end": int(claims["end"]), "status": "booked", "source": "token"})
        return booking_code

    def call_next(self, conn: sqlite3.Connection, counter: str) -> dict[str, Any] | None:
        m = self.model(conn, writer=True)
        self._require_open(conn, m, counter)
        self._finish_current(conn, m, counter)
        now = self.now_ms()
        chosen = self.next_waiting(conn, m, counter, q.business_day(now, m.tz), now)
        if chosen is None:
            return None
        self.append_ticket(conn, ev.TICKET_CALLED, {"ticket": chosen, "counter": counter})
        return self.ticket(conn, chosen, model=m)

    def call_ticket(self, conn: sqlite3.Connection, counter: str, ticket_id: str) -> dict[str, Any]:
        m = self.model(conn, writer=True)
        row = self._ticket_row(conn, ticket_id)
        self._require_open(conn, m, counter)
        if row["status"] != "waiting":
            raise Conflict(f"ticket {row['label']} is {row['status']}, not waiting", code="not_waiting")
        self._finish_current(conn, m, counter)
        self.append_ticket(conn, ev.TICKET_CALLED, {"ticket": ticket_id, "counter": counter})
        return self.ticket(conn, ticket_id, model=m)

    def act(self, conn: sqlite3.Connection, counter: str, ticket_id: str, action: str,
            body: dict[str, Any]) -> dict[str, Any]:
        m = self.model(conn, writer=True)
        if counter not in m.counters:
            raise NotFound(f"unknown counter {counter!r}", code="unknown_counter")
        if action not in ACTIONS:
            raise NotFound(f"unknown action {action!r}; one of {', '.join(ACTIONS)}", code="unknown_action")
        row = self._ticket_row(conn, ticket_id)
        state = json.loads(row["state"])
        status = row["status"]
        won = fold.winner(state)
        own = state["claims"].get(counter)

        def require(*levels: int) -> None:
            """This counter must hold a claim at one of `levels` (1 called, 2 serving)."""
            label = row["label"]
            if status in ("completed", "cancelled"):
                raise Conflict(f"ticket {label} is {status}; cannot {action} it", code="invalid_transition")
            if own is None:
                if counter in state.get("lost", ()):
                    by = f" by {self._counter_name(m, won[0])}" if won is not None else ""
                    raise Conflict(f"ticket {label} was taken{by} or moved meanwhile; call the next ticket",
                                   code="superseded")
                if won is not None:
                    raise Conflict(f"ticket {label} is at {self._counter_name(m, won[0])}", code="not_your_ticket")
                raise Conflict(f"ticket {label} is {status.replace('_', '-')}; call it first", code="invalid_transition")
            # Completing what this counter really served wins over another counter's
            # concurrent no-show (completed > no-show), so only the other actions yield.
            if won is not None and won[0] != counter and action != "complete":
                raise Conflict(f"ticket {label} was taken by {self._counter_name(m, won[0])}", code="superseded")
            if own["level"] not in levels:
                held = fold.STATUS_BY_LEVEL[own["level"]].replace("_", "-")
                raise Conflict(f"ticket {label} is {held} here; cannot {action} it", code="invalid_transition")

        payload: dict[str, Any] = {"ticket": ticket_id, "counter": counter}
        if action == "recall":
            require(1)
            rules = m.rules_for(row["service"])
            if own["recalls"] >= rules.max_recalls:
                self.append_ticket(conn, ev.TICKET_NO_SHOW, {**payload, "reason": "max_recalls"})
            else:
                self.append_ticket(conn, ev.TICKET_RECALLED, payload)
        elif action == "start":
            require(1)
            self.append_ticket(conn, ev.TICKET_STARTED, payload)
        elif action == "complete":
            require(2)
            self.append_ticket(conn, ev.TICKET_COMPLETED, payload)
        elif action == "no-show":
            require(1)
            self.append_ticket(conn, ev.TICKET_NO_SHOW, payload)
        elif action == "requeue":
            if status != "no_show":
                require(1, 2)
            self.append_ticket(conn, ev.TICKET_REQUEUED, payload)
        else:  # transfer
            to_service, to_counter = body.get("to_service"), body.get("to_counter")
            if (to_service is None) == (to_counter is None):
                raise BadRequest("transfer needs exactly one of to_service or to_counter")
            if to_service is not None and to_service not in m.services:
                raise NotFound(f"unknown service {to_service!r}", code="unknown_service")
            if to_counter is not None and to_counter not in m.counters:
                raise NotFound(f"unknown counter {to_counter!r}", code="unknown_counter")
            if status != "waiting":
                require(1, 2)
            if to_service is not None:
                payload["to_service"] = to_service
            else:
                payload["to_counter"] = to_counter
            self.append_ticket(conn, ev.TICKET_TRANSFERRED, payload)
        return self.ticket(conn, ticket_id, model=m)

    def cancel(self, conn: sqlite3.Connection, ticket_id: str, reason: str | None = None) -> dict[str, Any]:
        row = self._ticket_row(conn, ticket_id)
        if row["status"] != "waiting":
            raise Conflict(f"ticket {row['label']} is {row['status']}; only a waiting ticket can be cancelled",
                           code="invalid_transition")
        payload: dict[str, Any] = {"ticket": ticket_id}
        if reason:
            payload["reason"] = reason[:200]
        self.append_ticket(conn, ev.TICKET_CANCELLED, payload)
        return self.ticket(conn, ticket_id)

    def set_counter(self, conn: sqlite3.Connection, counter: str, status: str, staff: str | None) -> dict[str, Any]:
        m = self.model(conn, writer=True)
        if counter not in m.counters:
            raise NotFound(f"unknown counter {counter!r}", code="unknown_counter")
        type_ = {"open": ev.COUNTER_OPENED, "pause": ev.COUNTER_PAUSED, "close": ev.COUNTER_CLOSED}[status]
        payload: dict[str, Any] = {"counter": counter}
        if staff:
            payload["staff"] = staff
        self.log.append(conn, type_, payload)
        return self.counter(conn, counter, model=m)

    def expire_calls(self, conn: sqlite3.Connection) -> int:
        """No-show for tickets called by this device and not started within the timeout."""
        m = self.model(conn, writer=True)
        now = self.now_ms()
        expired = 0
        for row in conn.execute(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE status = 'called'").fetchall():
            timeout = m.rules_for(row["service"]).call_timeout_s
            if timeout <= 0 or row["called_ms"] is None or now - row["called_ms"] < timeout * 1000:
                continue
            won = fold.winner(json.loads(row["state"]))
            if won is None or won[1]["call_key"][1] != self.device_id:
                continue  # the device that made the call expires it
            self.append_ticket(conn, ev.TICKET_NO_SHOW, {"ticket": row["id"], "counter": won[0], "reason": "timeout"})
            expired += 1
        return expired

    def _require_open(self, conn: sqlite3.Connection, m: Model, counter: str) -> None:
        if counter not in m.counters:
            raise NotFound(f"unknown counter {counter!r}", code="unknown_counter")
        status = self._counter_status(conn, counter)
        if status != "open":
            raise Conflict(f"{m.counters[counter].name} is {status}; open it first", code="counter_not_open")

    def _finish_current(self, conn: sqlite3.Connection, m: Model, counter: str) -> None:
        """Calling the next ticket ends the current one: served -> completed, called -> no-show."""
        for row in conn.execute(
            "SELECT id, status FROM tickets WHERE counter = ? AND status IN ('called', 'serving')", (counter,)
        ).fetchall():
            type_ = ev.TICKET_COMPLETED if row["status"] == "serving" else ev.TICKET_NO_SHOW
            self.append_ticket(conn, type_, {"ticket": row["id"], "counter": counter})

