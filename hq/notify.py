"""Notification dispatcher: claims due outbox rows, sends them, retries with exponential backoff.

A row is claimed (status 'sending', attempts+1) in a write transaction before it is sent, so two
dispatch passes never send the same row; after the send it becomes 'sent', or 'pending' again
with a later ``next_attempt_at``, or 'failed' after ``notify_max_attempts``.

Several dispatchers (one per HQ host on PostgreSQL) claim disjoint rows with ``FOR UPDATE SKIP
LOCKED``. A claim is a lease: ``next_attempt_at`` becomes now + CLAIM_LEASE_S, and a row still
'sending' after that (its dispatcher died) is claimable again by any dispatcher, so a crash
of one host delays its rows, never loses them, and a live dispatcher's rows are never taken.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from hq.core import HQ
from hq.gateways import Gateway, GatewayError, Message

logger = logging.getLogger(__name__)

CLAIM_LEASE_S = 300  # longer than any gateway's timeout
# The oldest due first; the partial index notifications_claim (migration 32) is in this order,
# so the scan stops after the rows it takes, however long the queue.
CLAIM_SQL = ("SELECT * FROM notifications WHERE status IN ('pending', 'sending')"
             " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?")
# PostgreSQL, in the claim's transaction: during a burst of bookings, before autovacuum has
# analyzed the table, its default estimates say the queue is short, so it planned a bitmap scan
# of every due row and a sort that spilled to disk (30 ms a claim with 16,000 queued, in the
# booking bench).
# With sorting priced out, the plan is the index in the claim's order, whatever the statistics.
CLAIM_PG_SETTINGS = "SET LOCAL enable_sort = off"


class Dispatcher:
    def __init__(self, hq: HQ, gateways: dict[str, Gateway]) -> None:
        self.hq, self.gateways = hq, gateways

    def backoff(self, attempts: int) -> int:
        s = self.hq.settings
        return int(min(s.notify_backoff_max_s, s.notify_backoff_base_s * 2 ** max(0, attempts - 1)))

    async def recover(self) -> int:
        """Rows left 'sending' by a crashed dispatcher whose lease ran out go back to 'pending'
        (gateways dedupe by idempotency key). Another host's live claims are left alone."""
        now = self.hq.now()
        return await self.hq.db.write(lambda c: c.execute(
            "UPDATE notifications SET status = 'pending' WHERE status = 'sending' AND next_attempt_at <= ?",
            (now,)).rowcount)

    async def run_once(self, limit: int = 50) -> int:
        """Send what is due now; return how many were sent successfully."""
        now = self.hq.now()

        def claim(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            # PostgreSQL: several dispatchers (one per HQ host) claim disjoint rows and never wait
            # on each other; SQLite has one writer at a time, so plain SELECT is the same there.
            lock = ""
            if conn.dialect == "postgresql":
                conn.execute(CLAIM_PG_SETTINGS)
                lock = " FOR UPDATE SKIP LOCKED"
            rows = conn.execute(CLAIM_SQL + lock, (now, limit)).fetchall()
            if rows:  # one statement for the pass, not one per row
                conn.execute("UPDATE notifications SET status = 'sending', attempts = attempts + 1, next_attempt_at = ?"
                             f" WHERE id IN ({', '.join('?' * len(rows))})", (now + CLAIM_LEASE_S, *(r["id"] for r in rows)))
            return [dict(r) | {"attempts": r["attempts"] + 1} for r in rows]

        rows = await self.hq.db.write(claim)
        outcomes: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            gateway = self.gateways.get(row["channel"])
            error = ""
            if gateway is None or not row["recipient"]:
                error = f"no gateway for channel {row['channel']!r}" if gateway is None else "recipient purged"
            else:
                try:
                    await gateway.send(Message(row["idem_key"], row["channel"], row["recipient"], row["subject"], row["body"]))
                except GatewayError as err:
                    error = str(err)[:500]
                except Exception as err:  # a gateway bug must not stop the dispatcher
                    logger.exception("gateway %s crashed", row["channel"])
                    error = f"gateway crashed: {err!r}"[:500]
            outcomes.append((row, error))
        return await self._record(outcomes) if outcomes else 0

    async def _record(self, outcomes: list[tuple[dict[str, Any], str]]) -> int:
        """Record a pass's results in one transaction."""
        now = self.hq.now()
        max_attempts = self.hq.settings.notify_max_attempts

        def record(conn: sqlite3.Connection) -> None:
            sent = [row["id"] for row, error in outcomes if not error]
            if sent:  # one statement for the pass, not one per row
                conn.execute("UPDATE notifications SET status = 'sent', sent_at = ?, last_error = ''"
                             f" WHERE id IN ({', '.join('?' * len(sent))})", (now, *sent))
            for row, error in outcomes:
                if not error:
                    continue
                elif row["attempts"] >= max_attempts:
                    conn.execute("UPDATE notifications SET status = 'failed', last_error = ? WHERE id = ?",
                                 (error, row["id"]))
                else:
                    conn.execute("UPDATE notifications SET status = 'pending', last_error = ?, next_attempt_at = ?"
                                 " WHERE id = ?", (error, now + self.backoff(row["attempts"]), row["id"]))

        await self.hq.db.write(record)
        for row, error in outcomes:
            if error:
                logger.warning("notification %s attempt %d failed: %s", row["idem_key"], row["attempts"], error)
        return sum(1 for _, error in outcomes if not error)
