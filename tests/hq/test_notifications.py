"""Notifications through a real local SMTP server (aiosmtpd) and a real local HTTP SMS gateway:
retries with backoff, never a duplicate; reminders, purge, 'your turn is near'."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from hq.app import DISPATCHER_KEY
from hq.scheduler import purge_job, reminders_job
from hq.web import HQ_KEY
from hqtest import FakeClock, Server, api, connect_db, make_settings, seed, start_server
from tests.ports import free_port

B = "/api/v1/public"


class FlakySmtp:
    """Refuses the first ``fail`` messages with 451, then accepts; keeps what it accepted."""

    def __init__(self, fail: int) -> None:
        self.fail, self.accepted, self.refused = fail, [], 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refused < self.fail:
                self.refused += 1
                return "451 4.3.0 try again later"
            self.accepted.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@pytest.fixture()
def smtp() -> Iterator[tuple[FlakySmtp, int]]:
    handler, port = FlakySmtp(fail=2), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


class SmsGateway:
    """An HTTP SMS gateway that dedupes by Idempotency-Key. The first request is stored but answered
    500 (a lost acknowledgement), the second gets 503; then 200."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.delivered: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers["Idempotency-Key"]
        assert body["idempotency_key"] == key
        self.requests.append(key)
        n = self.requests.count(key)
        if n == 1:
            self.delivered.setdefault(key, body)
            return web.Response(status=500)
        if n == 2:
            return web.Response(status=503)
        self.delivered.setdefault(key, body)
        return web.json_response({"ok": True})


@pytest.fixture()
async def sms() -> AsyncIterator[tuple[SmsGateway, str]]:
    gw = SmsGateway()
    app = web.Application()
    app.router.add_post("/sms", gw.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield gw, f"http://127.0.0.1:{runner.addresses[0][1]}/sms"
    finally:
        await runner.cleanup()


@pytest.fixture()
async def notifying_server(tmp_path, smtp, sms) -> AsyncIterator[tuple[Server, FlakySmtp, SmsGateway]]:
    settings = make_settings(tmp_path, email_gateway="smtp", smtp_port=smtp[1], sms_gateway="http", sms_url=sms[1],
                             notify_backoff_base_s=10, turn_near_places=2)
    clock = FakeClock()
    runner, srv = await start_server(settings, clock)
    try:
        async with aiohttp.ClientSession() as s:
            await seed(srv, s)
        yield srv, smtp[0], sms[0]
    finally:
        await runner.cleanup()


def rows(srv: Server, sql: str, *args: Any) -> list[Any]:
    with connect_db(srv) as c:
        return c.execute(sql, args).fetchall()


async def drain(srv: Server, rounds: int = 8) -> None:
    """Run the dispatcher, moving the clock past each backoff."""
    dispatcher = srv.app[DISPATCHER_KEY]
    for _ in range(rounds):
        await dispatcher.run_once()
        srv.clock.t += 3600


async def test_retries_deliver_each_notification_exactly_once(notifying_server, session):
    srv, smtp, sms = notifying_server
    booked = await api(session, "POST", f"{srv.url}{B}/bookings", 201, json={
        "branch": "acme-main", "service": "general", "start": "2030-01-07T10:00:00+01:00",
        "email": "ana@example.org", "phone": "+41 44 668 18 00"})
    dispatcher = srv.app[DISPATCHER_KEY]
    assert await dispatcher.run_once() == 0  # smtp refuses (451), sms "loses" the ack (500)
    pending = rows(srv, "SELECT * FROM notifications ORDER BY channel")
    assert [(r["channel"], r["status"], r["attempts"]) for r in pending] == [("email", "pending", 1), ("sms", "pending", 1)]
    assert all(r["next_attempt_at"] == srv.clock.t + 10 for r in pending)  # backoff, not an immediate retry
    assert await dispatcher.run_once() == 0  # not due yet: nothing sent again
    assert len(sms.requests) == 1
    await drain(srv)
    sent = rows(srv, "SELECT * FROM notifications ORDER BY channel")
    assert [(r["channel"], r["status"], r["attempts"]) for r in sent] == [("email", "sent", 3), ("sms", "sent", 3)]
    assert len(smtp.accepted) == 1 and booked["code"] in smtp.accepted[0]
    assert "Message-ID: <" in smtp.accepted[0]
    assert sms.requests == [f"confirm:{booked['code']}:sms"] * 3  # the same key on every retry
    assert list(sms.delivered) == [f"confirm:{booked['code']}:sms"] and sms.delivered[sms.requests[0]]["to"] == "+41446681800"
    await drain(srv, 3)  # nothing left to send
    assert len(smtp.accepted) == 1 and len(sms.requests) == 3


async def test_cancel_reschedule_reminder_each_notify_once(notifying_server, session):
    srv, smtp, sms = notifying_server
    smtp.fail = 0
    booked = await api(session, "POST", f"{srv.url}{B}/bookings", 201, json={
        "branch": "acme-main", "service": "general", "start": "2030-01-08T10:00:00+01:00", "email": "bo@example.org"})
    code = booked["code"]
    await api(session, "POST", f"{srv.url}{B}/bookings/{code}/reschedule", 200,
              json={"contact": "bo@example.org", "start": "2030-01-08T11:00:00+01:00"})
    hq = srv.app[HQ_KEY]
    srv.clock.t += 6 * 3600  # within a day of the slot
    assert await reminders_job(hq) == 1
    assert await reminders_job(hq) == 0  # idempotent
    await api(session, "POST", f"{srv.url}{B}/bookings/{code}/cancel", 200, json={"contact": "bo@example.org"})
    await drain(srv, 2)
    kinds = [r["kind"] for r in rows(srv, "SELECT kind FROM notifications ORDER BY id")]
    assert kinds == ["confirmation", "reschedule", "reminder", "cancellation"]
    assert len(smtp.accepted) == 4
    assert sum("moved to Jan 8, 2030, 11:00\u202fAM" in m for m in smtp.accepted) == 1  # Babel, branch time


async def test_personal_data_is_purged_after_the_period(notifying_server, session):
    srv, smtp, sms = notifying_server
    smtp.fail = 0
    await api(session, "POST", f"{srv.url}{B}/bookings", 201, json={
        "branch": "acme-main", "service": "general", "start": "2030-01-07T10:00:00+01:00",
        "email": "cy@example.org", "name": "Cy"})
    await drain(srv, 1)
    hq = srv.app[HQ_KEY]
    assert (await purge_job(hq))["bookings"] == 0
    srv.clock.t += 31 * 86400
    counts = await purge_job(hq)
    assert counts["bookings"] == 1 and counts["notifications"] == 1
    b = rows(srv, "SELECT name, phone, email, purged_at FROM bookings")[0]
    assert (b["name"], b["phone"], b["email"]) == (None, None, None) and b["purged_at"]
    assert rows(srv, "SELECT recipient, body FROM notifications")[0]["recipient"] is None


def test_a_claim_reads_only_the_rows_it_takes_however_long_the_queue(tmp_path):
    """After a booking burst tens of thousands of notifications wait before autovacuum has
    analyzed the table, and PostgreSQL's default estimates say the queue is short. The
    dispatcher's claim (the 50 oldest due) read every due row and sorted them (30-90 ms a pass
    with 16,000-30,000 queued, the sort spilling to disk); its plan is now the claim index,
    stopping at the 50th row, also as the generic plan psycopg uses from a statement's sixth run."""
    from hq.app import open_hq
    from hq.notify import CLAIM_PG_SETTINGS, CLAIM_SQL
    hq = open_hq(make_settings(tmp_path))
    try:
        if hq.db.dialect != "postgresql":
            pytest.skip("SQLite answers this from its own index choice; the scan mattered on PostgreSQL")

        def fill(c, lo, hi):
            c.executemany("INSERT INTO notifications (idem_key, kind, channel, recipient, subject, body,"
                          " next_attempt_at, created_at, status) VALUES (?, 'confirmation', 'email', 'a@x.test',"
                          " 's', 'b', ?, 0, ?)",
                          [(f"k{i}", 1000 + i // 7, ("pending", "sent", "sending")[i % 3]) for i in range(lo, hi)])
        hq.db.write_sync(lambda c: fill(c, 0, 20_000))  # no ANALYZE yet, as in a burst on a new or quiet HQ

        def explain(c, mode):  # custom: the first runs of a statement; generic: psycopg's prepared one
            # A prepared statement outlives the transaction on its pooled connection, and either
            # mode may run on the writer that ran the other: one name per mode, dropped after.
            c.execute(CLAIM_PG_SETTINGS)
            c.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
            c.raw.execute(f"PREPARE claim_{mode}(bigint, bigint) AS "
                          + CLAIM_SQL.replace("?", "$1", 1).replace("?", "$2", 1) + " FOR UPDATE SKIP LOCKED")
            plan = c.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim_{mode}(1000000000, 50)").fetchone()[0]
            c.raw.execute(f"DEALLOCATE claim_{mode}")
            return plan
        for mode in ("custom", "generic"):
            plan = hq.db.write_sync(lambda c: explain(c, mode))
            nodes, scans = [plan[0]["Plan"]], []
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                if "Scan" in node["Node Type"] or node["Node Type"] == "Sort":
                    scans.append(node)
            assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [("Index Scan", "notifications_claim")], mode
            assert scans[0]["Actual Rows"] <= 60  # the 50 taken, and the few locked or gone it passes over
    finally:
        hq.db.close()
