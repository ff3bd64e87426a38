"""The console's calendar on a real HQ (no browser): the week of slots with booked / capacity,
blocking slots and days and a date's capacity, and that they govern online booking; who may."""

from __future__ import annotations

import re

from hqtest import Server, api
from test_console import console  # noqa: F401  (the fixture)
from webtest import Browser, db

B = "/api/v1/public"
PHONE = "+41 44 668 18 00"
WEEK = "/console/calendar/acme-main?service=general&week=2030-01-09"
DAY = "/console/calendar/acme-main/general/{}"


async def _book(srv: Server, session, start: str, expect: int = 201, name: str = "Ada") -> dict:
    return await api(session, "POST", f"{srv.url}{B}/bookings", expect, json={
        "branch": "acme-main", "service": "general", "start": start, "phone": PHONE, "name": name})


async def _offered(srv: Server, session, day: str) -> dict[str, int]:
    data = await api(session, "GET", f"{srv.url}{B}/branches/acme-main/availability?service=general&date={day}", 200)
    return {s["start"][11:16]: s["capacity"] for s in data["slots"]}


def _cell(html: str, start_local: str) -> str:
    """The text of the week cell whose slot starts at 'YYYY-MM-DDTHH:MM' (Zurich, winter)."""
    from datetime import datetime
    ts = int(datetime.fromisoformat(start_local + "+01:00").timestamp())
    m = re.search(rf'<td data-start="{ts}"[^>]*>(.*?)</td>', html, re.S)
    assert m, start_local
    return re.sub(r"<[^>]+>", "", m[1]).split()


def _state(html: str, start_local: str) -> str:
    from datetime import datetime
    ts = int(datetime.fromisoformat(start_local + "+01:00").timestamp())
    row = re.search(rf'<tr data-start="{ts}">(.*?)</tr>', html, re.S)[1]
    return re.sub(r"<[^>]+>", "", re.search(r'class="slot-state">(.*?)</td>', row, re.S)[1]).strip()


async def test_week_view_shows_booked_over_capacity_and_moves_by_week(console, session):
    await _book(console, session, "2030-01-08T10:00:00+01:00")
    await _book(console, session, "2030-01-08T10:00:00+01:00", name="Ben")
    manager = await console.login("manager@acme.test")
    status, html, _ = await manager.get(WEEK)
    assert status == 200
    assert _cell(html, "2030-01-08T10:00") == ["2", "/", "3"]
    assert _cell(html, "2030-01-08T10:15") == ["0", "/", "3"]
    assert _cell(html, "2030-01-11T16:45") == ["0", "/", "3"]  # Friday's last slot
    assert html.count("<tr><th scope=\"row\">") == 36  # 08:00 .. 16:45, quarter hours
    assert "Closed" in html  # Saturday and Sunday have no hours
    # Without JavaScript: links to the previous and next week; the day headers open the day page.
    assert 'week=2030-01-14"' in html.replace("&amp;", "&") and 'week=2029-12-31"' in html.replace("&amp;", "&")
    assert 'href="/console/calendar/acme-main/general/2030-01-08"' in html
    _, later, _ = await manager.get("/console/calendar/acme-main?service=general&week=2030-01-14")
    assert _cell(later, "2030-01-15T10:00") == ["0", "/", "3"]


async def test_blocked_slot_is_not_offered_nor_bookable_and_its_bookings_are_listed(console, session):
    held = await _book(console, session, "2030-01-08T09:00:00+01:00", name="Chloé")
    manager = await console.login("manager@acme.test")
    nine = 1894089600  # 2030-01-08 09:00 Zurich
    status, _, location = await manager.post(DAY.format("2030-01-08") + "/block",
                                             {"slot": str(nine), "reason": "staff training"})
    assert status == 303 and location.endswith("?done=block")
    assert "09:00" not in await _offered(console, session, "2030-01-08")
    assert "09:15" in await _offered(console, session, "2030-01-08")
    err = await _book(console, session, "2030-01-08T09:00:00+01:00", expect=409)
    assert err["error"]["code"] == "slot_unavailable"
    other = await _book(console, session, "2030-01-08T11:00:00+01:00")
    err = await api(session, "POST", f"{console.url}{B}/bookings/{other['code']}/reschedule", 409,
                    json={"contact": PHONE, "start": "2030-01-08T09:00:00+01:00"})
    assert err["error"]["code"] == "slot_unavailable"
    _, html, _ = await manager.get(DAY.format("2030-01-08"))
    assert _state(html, "2030-01-08T09:00") == "Blocked (staff training)"
    assert f'<tr data-code="{held["code"]}">' in html and "Chloé" in html  # the booking is kept and listed
    shown = await api(session, "POST", f"{console.url}{B}/bookings/{held['code']}/lookup", 200, json={"contact": PHONE})
    assert shown["status"] == "booked" and shown["token"]
    _, week, _ = await manager.get(WEEK)
    assert _cell(week, "2030-01-08T09:00") == ["1", "/", "3", "Blocked"]
    # Unblocking offers it again.
    status, _, _ = await manager.post(DAY.format("2030-01-08") + "/unblock", {"slot": str(nine)})
    assert status == 303 and "09:00" in await _offered(console, session, "2030-01-08")
    # Nothing chosen: a clear 400 on the page, not a 500.
    status, html, _ = await manager.post(DAY.format("2030-01-08") + "/block", {})
    assert status == 400 and "Choose at least one slot, or the whole day." in html
    with db(console) as c:
        actions = [r[0] for r in c.execute("SELECT action FROM audit WHERE action LIKE 'calendar.%' ORDER BY id")]
    assert actions == ["calendar.block", "calendar.unblock"]


async def test_blocking_a_day_can_cancel_its_bookings_and_notify_each_person(console, session):
    kept = await _book(console, session, "2030-01-10T14:00:00+01:00", name="Dan")
    manager = await console.login("manager@acme.test")
    status, _, location = await manager.post(DAY.format("2030-01-10") + "/block",
                                             {"whole": "yes", "day-reason": "holiday", "cancel": "yes"})
    assert status == 303 and location.endswith("?done=block-cancelled")
    assert await _offered(console, session, "2030-01-10") == {}
    with db(console) as c:
        assert c.execute("SELECT status FROM bookings WHERE code = ?", (kept["code"],)).fetchone()[0] == "cancelled"
        note = c.execute("SELECT kind, channel, recipient FROM notifications WHERE idem_key = ?",
                         (f"cancel:{kept['code']}:sms",)).fetchone()
        assert tuple(note) == ("cancellation", "sms", "+41446681800")
        sent = [r[0] for r in c.execute("SELECT type FROM outbox WHERE branch_id = 'acme-main' ORDER BY seq")]
        assert sent[-1] == "booking.cancelled"
    _, html, _ = await manager.get(DAY.format("2030-01-10"))
    assert "This day is blocked" in html and "Unblock the whole day" in html
    _, week, _ = await manager.get(WEEK)
    assert "Day blocked" in week and _cell(week, "2030-01-10T14:00") == ["0", "/", "3", "Blocked"]
    await manager.post(DAY.format("2030-01-10") + "/unblock", {"whole": "yes"})
    assert len(await _offered(console, session, "2030-01-10")) == 36


async def test_capacity_of_one_date_governs_booking(console, session):
    manager = await console.login("manager@acme.test")
    status, _, _ = await manager.post(DAY.format("2030-01-09") + "/capacity", {"capacity": "1"})
    assert status == 303
    offered = await _offered(console, session, "2030-01-09")
    assert set(offered.values()) == {1}
    assert set((await _offered(console, session, "2030-01-08")).values()) == {3}  # other dates keep the service's
    await _book(console, session, "2030-01-09T10:00:00+01:00")
    err = await _book(console, session, "2030-01-09T10:00:00+01:00", expect=409)
    assert err["error"]["code"] == "slot_full"
    _, week, _ = await manager.get(WEEK)
    assert _cell(week, "2030-01-09T10:00") == ["1", "/", "1"] and "Capacity 1" in week
    # Raising it offers the place again; empty goes back to the service's capacity.
    await manager.post(DAY.format("2030-01-09") + "/capacity", {"capacity": "2"})
    await _book(console, session, "2030-01-09T10:00:00+01:00")
    await manager.post(DAY.format("2030-01-09") + "/capacity", {"capacity": ""})
    assert set((await _offered(console, session, "2030-01-09")).values()) == {3}
    for junk in ("-1", "abc", "1001", "1.5"):
        status, html, _ = await manager.post(DAY.format("2030-01-09") + "/capacity", {"capacity": junk})
        assert status == 400 and "Enter a whole number from 0 to 1000" in html, junk


async def test_calendar_is_for_managers_and_up_of_the_branch(console):
    staff = await console.login("staff@acme.test", language="fr")
    for path in (WEEK, DAY.format("2030-01-08")):
        status, html, _ = await staff.get(path)
        assert status == 403 and '<html lang="fr">' in html, path
    status, _, _ = await staff.post(DAY.format("2030-01-08") + "/block", {"whole": "yes"})
    assert status == 403
    beta = await console.login("manager@beta.test")
    assert (await beta.get(WEEK))[0] == 403
    assert (await beta.post(DAY.format("2030-01-08") + "/block", {"whole": "yes"}))[0] == 403
    beta_admin = await console.login("admin@beta.test")
    assert (await beta_admin.get(DAY.format("2030-01-08")))[0] == 403
    admin = await console.login("admin@acme.test")
    assert (await admin.get(WEEK))[0] == 200
    root = await console.login("root@hq.test")
    for path in ("/console/calendar/nowhere", "/console/calendar/acme-main/nothing/2030-01-08",
                 "/console/calendar/acme-main/general/2030-13-45", "/console/calendar/acme-main/general/junk",
                 "/console/calendar/acme-main/general/9999-12-31", "/console/calendar/acme-main/general/0001-01-01"):
        assert (await root.get(path))[0] == 404, path  # the last two: a year HQ cannot convert was a 500
    for week in ("9999-12-31", "0001-01-01"):  # the week view falls back to this week
        assert (await root.get(f"/console/calendar/acme-main?week={week}"))[0] == 200
    assert (await root.post(DAY.format("2030-01-08") + "/explode", {}))[0] == 404
    with db(console) as c:
        assert c.execute("SELECT COUNT(*) FROM slot_blocks").fetchone()[0] == 0


async def test_anonymous_visitor_is_sent_to_login(console):
    anon = Browser(console.url)
    try:
        status, _, location = await anon.post(DAY.format("2030-01-08") + "/block", {"whole": "yes"})
        assert status == 303 and location.startswith("/console/login")
        with db(console) as c:
            assert c.execute("SELECT COUNT(*) FROM slot_blocks").fetchone()[0] == 0
    finally:
        await anon.close()
