"""Out-of-range dates, times and integers on a real HQ: every path answers a clear 4xx (JSON
error or a friendly page), never a 500. Years beyond 9999 or before 1970, instants that only
overflow once converted to the branch's time zone, and integers beyond 64 bits."""

from __future__ import annotations

import re

import pytest

from hqtest import PASSWORD, Server, api
from webtest import Browser, free_starts, h1, seed_web

V = "/api/v1"
P = f"{V}/public"
FAR_INSTANTS = ["9999-12-31T23:59:59-12:00", "9999-12-31T23:30:00+00:00", "10000-01-01T00:00:00Z",
                "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-12:00", "1969-12-31T23:00:00Z",
                "2030-01-07T10:00:00+99:00", "9" * 39 + "Z"]
FAR_DAYS = ["9999-12-31", "0001-01-01", "1969-12-31", "99999-01-01", "2030-02-30", "+2030-01-0"]


@pytest.fixture()
async def booked(server: Server, session):
    """A booking on the API (code and contact) for the reschedule paths."""
    body = {"branch": "acme-main", "service": "general", "start": "2030-01-07T10:00:00+01:00", "phone": "+41446681800"}
    data = await api(session, "POST", f"{server.url}{P}/bookings", 201, json=body)
    return data["code"]


def _clear_4xx(status: int, data: object, what: object) -> None:
    assert 400 <= status < 500, (what, status, data)
    assert isinstance(data, dict) and data["error"]["message"], (what, data)


async def _call(session, method: str, url: str, **kw) -> tuple[int, object]:
    async with session.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("start", FAR_INSTANTS)
async def test_booking_and_reschedule_far_instants_are_a_4xx(server, session, booked, start):
    status, data = await _call(session, "POST", f"{server.url}{P}/bookings",
                               json={"branch": "acme-main", "service": "general", "start": start, "phone": "+41446681800"})
    _clear_4xx(status, data, ("book", start))
    status, data = await _call(session, "POST", f"{server.url}{P}/bookings/{booked}/reschedule",
                               json={"contact": "+41446681800", "start": start})
    _clear_4xx(status, data, ("reschedule", start))


async def test_far_instant_message_says_what_is_wrong(server, session):
    _, data = await _call(session, "POST", f"{server.url}{P}/bookings", json={
        "branch": "acme-main", "service": "general", "start": "9999-12-31T23:59:59-12:00", "phone": "+41446681800"})
    assert data["error"]["code"] == "bad_request" and "out of range" in data["error"]["message"]


@pytest.mark.parametrize("day", FAR_DAYS)
async def test_far_days_on_every_date_query_are_a_4xx(server, session, day):
    staff = server.h("acme-manager")
    for method, path, kw in (
            ("GET", f"{V}/branches/acme-main/bookings?date={day}", {"headers": staff}),
            ("GET", f"{V}/branches/acme-main/analytics?from={day}", {"headers": staff}),
            ("GET", f"{V}/branches/acme-main/analytics?from=2030-01-07&to={day}", {"headers": staff}),
            ("GET", f"{P}/branches/acme-main/availability?service=general&date={day}", {}),
            ("POST", f"{V}/branches/acme-main/closed-days", {"headers": staff, "json": {"day": day}}),
            ("DELETE", f"{V}/branches/acme-main/closed-days/{day}", {"headers": staff})):
        status, data = await _call(session, method, server.url + path, **kw)
        _clear_4xx(status, data, (path, day))


@pytest.mark.parametrize("query", ["after=" + "9" * 30, "after=-1", "limit=" + "9" * 30, "limit=0", "after=1e3"])
async def test_out_of_range_integer_queries_are_a_4xx(server, session, query):
    status, data = await _call(session, "GET", f"{server.url}{V}/branches/acme-main/outbox?{query}",
                               headers=server.h("acme-admin"))
    _clear_4xx(status, data, query)


@pytest.mark.parametrize("body", [{"slot_minutes": 2**64}, {"capacity": -(2**63) - 1}, {"order": 10**30},
                                  {"capacity": 1e308}, {"rules": {"max_recalls": 2**63}}])
async def test_out_of_range_integers_in_bodies_are_a_4xx(server, session, body):
    status, data = await _call(session, "PUT", f"{server.url}{V}/branches/acme-main/services/general",
                               headers=server.h("acme-manager"), json={"letter": "A", "names": {"en": "G"}} | body)
    _clear_4xx(status, data, body)


# -- the citizens' pages and the console: a friendly page with a heading, never a 500 ----------------
@pytest.fixture()
async def web(server: Server, session):
    await seed_web(server, session)
    browsers: list[Browser] = []

    def browser() -> Browser:
        browsers.append(Browser(server.url))
        return browsers[-1]
    server.browser = browser
    yield server
    for b in browsers:
        await b.close()


FAR_STARTS = ["999999999999", "253402300799", "253402300800", "0", "9" * 40]


@pytest.mark.parametrize("day", FAR_DAYS)
async def test_pages_with_far_days_answer_a_friendly_page(web, day):
    status, html, r = await web.browser().get(f"/b/acme-main/book/slot?service=passport&date={day}")
    assert status in (200, 400), (day, status, html[:300])
    assert r.content_type == "text/html" and h1(html)


@pytest.mark.parametrize("start", FAR_STARTS)
async def test_booking_and_manage_pages_with_far_starts_answer_a_friendly_page(web, start):
    b = web.browser()
    status, html, r = await b.get(f"/b/acme-main/book/contact?service=passport&start={start}")
    assert 400 <= status < 500 and h1(html), (start, status, html[:300])
    _, html, _ = await b.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    _, _, location = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(free_starts(html)[0]),
                                                                "phone": "+41 44 668 18 00"})
    _, html, _ = await b.get(location)
    code = re.search(r'id="booking-code">([0-9A-Z-]+)<', html)[1]
    assert (await b.post("/manage", {"code": code, "contact": "+41 44 668 18 00"}))[0] == 303
    status, html, _ = await b.post(f"/manage/{code}/reschedule", {"start": start})
    assert 400 <= status < 500 and h1(html) and "Traceback" not in html, (start, status, html[:300])
    for day in FAR_DAYS:
        status, html, _ = await b.get(f"/manage/{code}/slot?date={day}")
        assert status in (200, 400) and h1(html), (day, status, html[:300])


async def test_console_appointments_with_far_days_answer_a_page(web):
    b = web.browser()
    status, _, location = await b.post("/console/login", {"email": "manager@acme.test", "password": PASSWORD})
    assert (status, location) == (303, "/console")
    for day in FAR_DAYS + ["9999-12-30"]:
        for fmt in ("", "&format=csv"):
            status, body, _ = await b.get(f"/console/appointments/acme-main?date={day}{fmt}")
            assert status in (200, 400), (day, fmt, status, body[:300])


@pytest.mark.parametrize("span", [{"opens": "24:00", "closes": "25:00"}, {"opens": "23:60", "closes": "23:59"},
                                  {"opens": "-1:00", "closes": "08:00"}, {"opens": "08:00", "closes": "08:00:00.9999999"},
                                  {"opens": "17:00", "closes": "08:00"}, {"opens": 800, "closes": 1700},
                                  {"opens": "08:00+14:00", "closes": "17:00"}, {"opens": "٠٨:٠٠", "closes": "17:00"}])
async def test_out_of_range_opening_hours_are_a_4xx(server, session, span):
    status, data = await _call(session, "PUT", f"{server.url}{V}/branches/acme-main/hours",
                               headers=server.h("acme-manager"), json={"weekdays": {"0": span}})
    _clear_4xx(status, data, span)
    status, data = await _call(session, "PUT", f"{server.url}{V}/branches/acme-main/hours",
                               headers=server.h("acme-manager"), json={"weekdays": {"9": {"opens": "08:00", "closes": "17:00"}}})
    _clear_4xx(status, data, "weekday 9")
