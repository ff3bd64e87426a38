"""Online booking on a real server: availability, book, capacity, reschedule, cancel, token, .ics."""

from __future__ import annotations

import icalendar
import pytest

from hq.signing import parse_public_key
from sync.tokens import TokenExpired, verify_token
from hqtest import T0, api

B = "/api/v1/public"


async def _slots(srv, session, day="2030-01-07"):
    data = await api(session, "GET", f"{srv.url}{B}/branches/acme-main/availability?service=general&date={day}", 200)
    return data["slots"]


async def _book(srv, session, start, expect=201, **extra):
    body = {"branch": "acme-main", "service": "general", "start": start, "phone": "+41 44 668 18 00"} | extra
    return await api(session, "POST", f"{srv.url}{B}/bookings", expect, json=body)


async def test_availability_offers_only_future_slots_within_hours(server, session):
    slots = await _slots(server, session)
    # now is 08:00 Zurich on Monday; opening 08:00-17:00 with 15 min slots -> 08:00 not offered (started)
    assert slots[0]["start"] == "2030-01-07T08:15:00+01:00"
    assert slots[-1]["end"] == "2030-01-07T17:00:00+01:00"
    assert len(slots) == 35 and all(s["available"] == 3 for s in slots)
    assert await _slots(server, session, "2030-01-12") == []  # Saturday: no hours


async def test_closed_day_offers_no_slots_and_refuses_booking(server, session):
    await api(session, "POST", f"{server.url}/api/v1/branches/acme-main/closed-days", 201,
              json={"day": "2030-01-08", "reason": "holiday"}, headers=server.h("acme-manager"))
    assert await _slots(server, session, "2030-01-08") == []
    err = await _book(server, session, "2030-01-08T09:00:00+01:00", expect=409)
    assert err["error"]["code"] == "slot_unavailable"


async def test_book_until_full_then_409(server, session):
    start = "2030-01-07T10:00:00+01:00"
    codes = [(await _book(server, session, start))["code"] for _ in range(3)]
    assert len(set(codes)) == 3
    err = await _book(server, session, start, expect=409)
    assert err["error"]["code"] == "slot_full"
    slot = next(s for s in await _slots(server, session) if s["start"] == start)
    assert slot["available"] == 0


async def test_past_and_off_grid_slots_are_refused(server, session):
    assert (await _book(server, session, "2030-01-07T07:45:00+01:00", 409))["error"]["code"] == "slot_past"
    assert (await _book(server, session, "2030-01-07T10:07:00+01:00", 409))["error"]["code"] == "slot_unavailable"
    assert (await _book(server, session, "2030-01-07T10:00:00", 400))["error"]["code"] == "bad_request"


async def test_bad_phone_is_a_clear_400(server, session):
    err = await _book(server, session, "2030-01-07T10:00:00+01:00", 400, phone="12")
    assert err["error"]["code"] == "bad_phone"
    err = await _book(server, session, "2030-01-07T10:00:00+01:00", 400, phone=None)
    assert err["error"]["code"] == "contact_required"


async def test_booking_token_verifies_offline_with_the_hq_key(server, session):
    data = await _book(server, session, "2030-01-07T10:00:00+01:00")
    key = parse_public_key((await api(session, "GET", f"{server.url}{B}/hq-key", 200))["public_key"])
    claims = verify_token(key, data["qr"], now=T0)
    assert claims["code"] == data["code"] and claims["branch"] == "acme-main" and claims["service"] == "general"
    assert claims["end"] - claims["start"] == 15 * 60
    with pytest.raises(TokenExpired):
        verify_token(key, data["qr"], now=claims["exp"])


async def test_code_plus_contact_reschedules_and_cancels(server, session):
    data = await _book(server, session, "2030-01-07T10:00:00+01:00", email="Ana@Example.org")
    code = data["code"]
    # wrong contact: not found, nothing changes
    await api(session, "POST", f"{server.url}{B}/bookings/{code}/cancel", 404, json={"contact": "+41446681801"})
    moved = await api(session, "POST", f"{server.url}{B}/bookings/{code}/reschedule", 200,
                      json={"contact": "ana@example.org", "start": "2030-01-07T11:00:00+01:00"})
    assert moved["start"] == "2030-01-07T11:00:00+01:00"
    # the code is typable loosely: lower case, no dash
    shown = await api(session, "POST", f"{server.url}{B}/bookings/{code.lower().replace('-', '')}/lookup", 200,
                      json={"contact": "+41 44 668 18 00"})
    assert shown["code"] == code
    cancelled = await api(session, "POST", f"{server.url}{B}/bookings/{code}/cancel", 200, json={"contact": "+41446681800"})
    assert cancelled["status"] == "cancelled"
    slot = next(s for s in await _slots(server, session) if s["start"] == "2030-01-07T11:00:00+01:00")
    assert slot["available"] == 3


async def test_ics_parses_back_with_utc_times_and_escaped_text(server, session):
    data = await _book(server, session, "2030-01-07T10:00:00+01:00")
    async with session.get(f"{server.url}{data['links']['ics']}") as resp:
        assert resp.status == 200 and resp.content_type == "text/calendar"
        raw = await resp.read()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))
    cal = icalendar.Calendar.from_ical(raw)
    event = next(iter(cal.walk("VEVENT")))
    assert event.decoded("dtstart").isoformat() == "2030-01-07T09:00:00+00:00"
    assert event.decoded("dtend").isoformat() == "2030-01-07T09:15:00+00:00"
    assert str(event["uid"]) == f"{data['code']}@smartq"
    assert str(event["summary"]) == "General – acme main"
    # a forged token gets nothing
    async with session.get(f"{server.url}{B}/bookings/{data['code']}/ics?token=st1.x.y") as resp:
        assert resp.status == 404


async def test_config_changes_become_signed_events_in_the_branch_outbox(server, session):
    data = await api(session, "GET", f"{server.url}/api/v1/branches/acme-main/outbox", 200, headers=server.h("acme-admin"))
    events = data["events"]
    types = [e["type"] for e in events]
    assert types[:4] == ["config.branch", "config.service", "config.counter", "config.hours"]
    from hq.signing import event_hash, verify_envelope
    key = parse_public_key((await api(session, "GET", f"{server.url}{B}/hq-key", 200))["public_key"])
    prev = ""
    for i, e in enumerate(events, 1):
        assert e["origin"] == "hq:acme-main" and e["seq"] == i and e["branch"] == "acme-main"
        assert e["prev"] == prev and verify_envelope(key, e)
        prev = event_hash(e)
    # exactly the shapes a branch folds (appliance.model.config_events)
    assert events[0]["payload"] == {"id": "acme-main", "name": "acme main", "timezone": "Europe/Zurich",
                                    "languages": ["en", "de"], "notices": [], "queue": {}}
    assert events[1]["payload"] == {"id": "general", "letter": "A", "names": {"en": "General", "de": "Allgemein"},
                                    "rules": {}, "order": 0}
    assert events[2]["payload"] == {"id": "c1", "name": "Counter 1", "services": ["general"], "order": 0}


@pytest.mark.parametrize("day", ["2030-03-31", "2030-10-27", "2030-01-07"])  # DST start, DST end, plain
def test_slot_check_agrees_with_the_listed_grid_across_dst(tmp_path, day):
    from datetime import date

    from hq import booking, tenants
    from hq.app import open_hq
    from hqtest import make_settings
    hq = open_hq(make_settings(tmp_path))
    try:
        def setup(c):
            w = tenants.Writer(c, hq.key, 0)
            w.create_org({"id": "o", "name": "o"})
            w.create_branch("o", {"id": "b", "name": "b", "timezone": "Europe/Zurich"})
            w.put_service("b", "s", {"letter": "A", "names": {"en": "x"}, "slot_minutes": 25, "capacity": 1})
            w.put_hours("b", {"weekdays": {str(i): {"opens": "00:10", "closes": "23:50"} for i in range(7)}})
        hq.db.write_sync(setup)

        def check(c):
            b, s, d = tenants.get_branch(c, "b"), tenants.get_service(c, "b", "s"), date.fromisoformat(day)
            grid = booking.day_slots(c, b, s, d)
            assert grid and all(booking.slot_end(c, b, s, d, start) == end for start, end in grid)
            starts = {start for start, _ in grid}
            for t in range(grid[0][0] - 3600, grid[-1][0] + 3600, 300):
                assert (booking.slot_end(c, b, s, d, t) is not None) == (t in starts)
        hq.db.read_sync(check)
    finally:
        hq.db.close()


class _ScriptedRng:
    """Hands out the given 40-bit draws in order (to force a booking-code clash)."""

    def __init__(self, draws):
        self.draws = list(draws)

    def getrandbits(self, k):
        assert k == 40
        return self.draws.pop(0)


def _one_branch(hq, capacity: int) -> None:
    """Organization o, branch b (Zurich), service s of 30-minute slots, open 08:00-18:00 daily."""
    from hq import tenants

    def setup(c):
        w = tenants.Writer(c, hq.key, 0)
        w.create_org({"id": "o", "name": "o"})
        w.create_branch("o", {"id": "b", "name": "b", "timezone": "Europe/Zurich"})
        w.put_service("b", "s", {"letter": "A", "names": {"en": "x"}, "slot_minutes": 30, "capacity": capacity})
        w.put_hours("b", {"weekdays": {str(i): {"opens": "08:00", "closes": "18:00"} for i in range(7)}})
    hq.db.write_sync(setup)


def test_written_row_is_the_stored_row_and_a_code_clash_draws_again(tmp_path):
    from hq import booking
    from hq.app import open_hq
    from hqtest import make_settings
    hq = open_hq(make_settings(tmp_path))
    try:
        _one_branch(hq, capacity=5)
        ctx = booking.BookingContext(key=hq.key, now=T0, horizon_days=60, token_grace_s=60, phone_region="CH",
                                     rng=_ScriptedRng([1, 1, 2]))
        body = {"branch": "b", "service": "s", "start": "2030-01-08T09:00:00+01:00", "email": "A@x.test", "name": "Ann"}
        first = hq.db.write_sync(lambda c: booking.book_row(c, ctx, body))
        second = hq.db.write_sync(lambda c: booking.book_row(c, ctx, body))  # draw 1 clashes, draw 2 is used
        assert first.row["code"] == booking.new_code(_ScriptedRng([1]))
        assert second.row["code"] == booking.new_code(_ScriptedRng([2]))
        for written in (first, second):
            stored = hq.db.read_sync(lambda c: dict(c.execute("SELECT * FROM bookings WHERE id = ?",
                                                              (written.row["id"],)).fetchone()))
            assert written.row == stored and written.timezone == "Europe/Zurich"
        assert booking.render(first, ctx)["code"] == first.row["code"]
    finally:
        hq.db.close()


def test_a_booking_is_decided_on_what_holds_when_it_is_written(tmp_path):
    """PostgreSQL keeps the facts of a slot's day per process and its booking statement checks
    them again (one round trip instead of two), so what another HQ process changed a moment
    ago decides the next booking: each change below is written behind this process's back and
    the booking after it is refused, or made with the new service name, as a fresh read says."""
    from datetime import date

    from hq import booking, slotrules, tenants
    from hq.app import open_hq
    from hq.db import autocommit
    from hq.errors import ApiError
    from hqtest import make_settings
    hq = open_hq(make_settings(tmp_path))
    try:
        def writer(fn):
            hq.db.write_sync(lambda c: fn(tenants.Writer(c, hq.key, 0)))
        writer(lambda w: (w.create_org({"id": "o", "name": "o"}),
                          w.create_branch("o", {"id": "b", "name": "b", "timezone": "Europe/Zurich"}),
                          w.put_service("b", "s", {"letter": "A", "names": {"en": "Passports"}, "slot_minutes": 30,
                                                   "capacity": 5}),
                          w.put_hours("b", {"weekdays": {str(i): {"opens": "08:00", "closes": "18:00"}
                                                         for i in range(7)}})))
        ctx = booking.BookingContext(key=hq.key, now=T0, horizon_days=60, token_grace_s=60, phone_region="CH",
                                     rng=_ScriptedRng(list(range(1, 40))))
        day = date(2030, 1, 8)
        nine, ten = "2030-01-08T09:00:00+01:00", "2030-01-08T10:00:00+01:00"

        def book(start=ten):
            return hq.db.write_sync(autocommit(lambda c: booking.book_row(
                c, ctx, {"branch": "b", "service": "s", "start": start, "email": "a@x.test"})))

        def refused(code, start=ten):
            with pytest.raises(ApiError) as err:
                book(start)
            assert err.value.code == code, err.value.message
        book(nine)  # the day's facts are now known to this process
        t10 = booking.parse_instant(ten)
        hq.db.write_sync(lambda c: slotrules.block(c, "b", "s", day, [t10], "meeting", T0))
        refused("slot_unavailable")
        hq.db.write_sync(lambda c: slotrules.unblock(c, "b", "s", day, [t10]))
        writer(lambda w: w.add_closed_day("b", {"day": day.isoformat(), "reason": "holiday"}))
        refused("slot_unavailable")
        writer(lambda w: w.remove_closed_day("b", day.isoformat()))
        writer(lambda w: w.put_hours("b", {"weekdays": {str(i): {"opens": "08:00", "closes": "09:30"} for i in range(7)}}))
        refused("slot_unavailable")
        writer(lambda w: w.put_hours("b", {"weekdays": {str(i): {"opens": "08:00", "closes": "18:00"} for i in range(7)}}))
        hq.db.write_sync(lambda c: slotrules.set_capacity(c, "b", "s", day, 1))
        book(ten)
        refused("slot_full")
        hq.db.write_sync(lambda c: slotrules.set_capacity(c, "b", "s", day, None))
        writer(lambda w: w.put_service("b", "s", {"letter": "A", "names": {"en": "Passports"}, "slot_minutes": 30,
                                                  "capacity": 5, "bookable": False}))
        refused("not_bookable")
        writer(lambda w: w.put_service("b", "s", {"letter": "A", "names": {"en": "Identity cards"}, "slot_minutes": 30,
                                                  "capacity": 5}))
        made = book(ten)
        body = hq.db.read_sync(lambda c: c.execute("SELECT body FROM notifications WHERE booking_id = ?",
                                                    (made.row["id"],)).fetchone()[0])
        assert "Identity cards" in body
        counts = hq.db.read_sync(lambda c: c.execute("SELECT slot_start, booked FROM slot_counts ORDER BY 1").fetchall())
        assert [tuple(r) for r in counts] == [(booking.parse_instant(nine), 1), (t10, 2)]
    finally:
        hq.db.close()


def test_two_databases_in_one_process_keep_their_own_facts(tmp_path):
    """The facts a booking keeps belong to its database: two HQ databases in one process (tests,
    tools), with the same branch and service ids and the same catalogue version but different
    capacities, each book by their own."""
    from hq import booking
    from hq.app import open_hq
    from hq.db import autocommit
    from hq.errors import ApiError
    from hqtest import make_settings
    hqs = [open_hq(make_settings(tmp_path / name)) for name in ("one", "two")]
    try:
        for hq, capacity in zip(hqs, (5, 1)):
            _one_branch(hq, capacity)

        def book(hq):
            ctx = booking.BookingContext(key=hq.key, now=T0, horizon_days=60, token_grace_s=60, phone_region="CH",
                                         rng=__import__("random").Random())
            return hq.db.write_sync(autocommit(lambda c: booking.book_row(
                c, ctx, {"branch": "b", "service": "s", "start": "2030-01-08T09:00:00+01:00", "email": "a@x.test"})))
        book(hqs[0])  # the first database's facts (capacity 5) are kept
        book(hqs[1])
        with pytest.raises(ApiError) as full:
            book(hqs[1])
        assert full.value.code == "slot_full"
        book(hqs[0])
    finally:
        for hq in hqs:
            hq.db.close()


@pytest.mark.parametrize("hq_backend", [pytest.param("postgresql", marks=pytest.mark.pg)], indirect=True)
def test_bookings_written_together_keep_each_its_own_outcome(tmp_path, hq_backend):
    """PostgreSQL's writer threads write the bookings queued at one moment in one transaction
    (hq/db_pg.py _write_batch). A full slot refuses its own booking only; a statement the
    database refuses rolls the batch back and each booking is written again alone, once."""
    from hq import booking
    from hq.app import open_hq
    from hq.db import BadData, autocommit, batchable
    from hq.errors import ApiError
    from hqtest import make_settings
    hq = open_hq(make_settings(tmp_path))
    db = getattr(hq.db, "_db", hq.db)  # beneath hq.metrics.MeteredDatabase
    try:
        _one_branch(hq, capacity=2)
        ctx = booking.BookingContext(key=hq.key, now=T0, horizon_days=60, token_grace_s=60, phone_region="CH",
                                     rng=__import__("random").Random(7))

        def book(start, email):
            return batchable(autocommit(lambda c: booking.book_row(
                c, ctx, {"branch": "b", "service": "s", "start": f"2030-01-08T{start}:00+01:00", "email": email})),
                ("b", "s", start))

        def outcomes(fns):
            return [(ok, value[0].row["email"] if ok else getattr(value, "code", type(value).__name__))
                    for ok, value in db._write_batch(fns)]
        assert outcomes([book("10:00", "a@x.test"), book("10:00", "b@x.test"), book("10:00", "c@x.test"),
                         book("09:00", "d@x.test")]) == [
            (True, "a@x.test"), (True, "b@x.test"), (False, "slot_full"), (True, "d@x.test")]
        broken = batchable(autocommit(lambda c: c.execute("SELECT 1 / 0").fetchone()))
        got = db._write_batch([book("09:00", "e@x.test"), broken, book("11:00", "f@x.test")])
        assert [ok for ok, _ in got] == [True, False, True] and isinstance(got[1][1], BadData)
        hq.db.write_sync(book("11:00", "g@x.test"))  # 11:00 held f alone: the rolled-back try kept nothing
        with pytest.raises(ApiError) as full:
            hq.db.write_sync(book("11:00", "h@x.test"))
        assert full.value.code == "slot_full"
        rows = hq.db.read_sync(lambda c: sorted(tuple(r) for r in c.execute(
            "SELECT email, slot_start FROM bookings").fetchall()))
        assert [r[0] for r in rows] == ["a@x.test", "b@x.test", "d@x.test", "e@x.test", "f@x.test", "g@x.test"]
        counts = hq.db.read_sync(lambda c: [r[0] for r in c.execute("SELECT booked FROM slot_counts ORDER BY slot_start")])
        assert counts == [2, 2, 2]
        queued = hq.db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM outbox_queue").fetchone()[0])
        chained = hq.db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE type = 'booking.created'").fetchone()[0])
        assert queued + chained == 6  # one event per booking made
    finally:
        hq.db.close()
