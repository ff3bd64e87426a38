"""The citizens' pages over real HTTP on a real HQ (no browser): security headers, languages,
CSRF, the booking flow and its lost race, the status page and its push, accounts, bad input."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from icalendar import Calendar

from hq.ingest import ingest_branch_events
from hq.web import HQ_KEY
from hqtest import T0, Server, api
from webtest import LANGS, Browser, Device, db, free_starts, h1, issued, seed_web

PAGES = ["/", "/b/acme-main", "/b/acme-main/book", "/b/acme-main/book/day?service=passport",
         "/b/acme-main/book/slot?service=passport&date=2030-01-07", "/manage", "/account/login",
         "/account/register", "/account/forgot", "/account/reset", "/account/verify"]


@pytest.fixture()
async def web(server: Server, session):
    await seed_web(server, session)
    browsers: list[Browser] = []

    def browser(language: str | None = None) -> Browser:
        b = Browser(server.url, language)
        browsers.append(b)
        return b
    server.browser = browser
    yield server
    for b in browsers:
        await b.close()


async def test_every_page_has_strict_csp_and_safe_cookies(web):
    b = web.browser()
    for path in PAGES:
        status, html, r = await b.get(path)
        assert status == 200, (path, html[:500])
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
        assert "<script>" not in html and " style=" not in html and "<style" not in html, path
        assert re.search(r'<html lang="en">', html)
    _, _, again = await b.get("/")
    assert "Set-Cookie" not in again.headers  # a returning visitor keeps the cookie it has
    newcomer = web.browser()
    _, _, first = await newcomer.get("/")
    raw = first.headers.getall("Set-Cookie")
    assert any("smartq_csrf=" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in raw), raw


async def test_language_from_accept_language_then_the_switcher_cookie(web):
    fr = web.browser("fr-CH,fr;q=0.9,en;q=0.5")
    _, html, _ = await fr.get("/")
    assert '<html lang="fr">' in html and h1(html) == "Trouver un bureau"
    async with fr.session.get(web.url + "/lang/sw?next=/b/acme-main", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/b/acme-main"
        assert "HttpOnly" in r.headers["Set-Cookie"]
    _, html, _ = await fr.get("/b/acme-main")
    assert '<html lang="sw">' in html and "Weka miadi" in html  # the cookie wins over Accept-Language
    async with fr.session.get(web.url + "/lang/sw?next=//evil.example/x", allow_redirects=False) as r:
        assert r.headers["Location"] == "/"  # only local redirects
    for lang in LANGS:
        _, html, _ = await web.browser(lang).get("/b/acme-main")
        assert f'<html lang="{lang}">' in html


async def test_post_without_csrf_token_is_refused_in_the_visitors_language(web):
    b = web.browser("es")
    _, html, _ = await b.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    start = free_starts(html)[0]
    status, html, _ = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(start),
                                                                 "email": "x@example.org"}, csrf=False)
    assert status == 403 and "Este formulario ha caducado" in html
    with db(web) as c:
        assert c.execute("SELECT COUNT(*) FROM bookings").fetchone()[0] == 0


async def test_book_confirm_ics_and_message_in_the_chosen_language(web):
    b = web.browser("fr")
    _, html, _ = await b.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    start = free_starts(html)[0]
    status, html, _ = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(start),
                                                                 "phone": "12"})
    assert status == 400 and "indicatif du pays" in html and 'aria-invalid="true"' in html
    status, _, location = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(start),
                                                                     "email": "ana@example.org", "name": "Ana"})
    assert status == 303 and location.startswith("/c/st1.")
    status, html, _ = await b.get(location)
    code = re.search(r'id="booking-code">([0-9A-Z-]+)<', html)[1]
    assert status == 200 and "Votre rendez-vous est réservé" in html and '<svg class="qr"' in html
    assert "ana@example.org" not in html and "Ana" not in html  # a confirmation link may be shared
    ics_path = re.search(r'href="(/c/[^"]+/booking\.ics)"', html)[1]
    status, body, r = await b.get(ics_path)
    event = Calendar.from_ical(body).walk("VEVENT")[0]
    assert r.content_type == "text/calendar" and str(event["UID"]) == f"{code}@smartq"
    assert int(event.decoded("DTSTART").timestamp()) == start
    with db(web) as c:
        row = c.execute("SELECT language FROM bookings WHERE code = ?", (code,)).fetchone()
        note = c.execute("SELECT subject, body FROM notifications WHERE kind = 'confirmation'").fetchone()
    assert row["language"] == "fr" and note["subject"] == f"Votre réservation {code}"
    assert "Passeports" in note["body"] and "lundi" not in note["body"] and "janv." in note["body"]


async def test_two_visitors_race_for_the_last_place_one_books_one_sees_other_slots(web):
    a, b = web.browser("en"), web.browser("en")
    _, html, _ = await a.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    start = free_starts(html)[0]
    await b.get("/")
    results = await asyncio.gather(*(x.post("/b/acme-main/book/contact", {"service": "passport", "start": str(start),
                                                                          "email": f"{n}@example.org"})
                                     for n, x in (("a", a), ("b", b))))
    statuses = sorted(r[0] for r in results)
    assert statuses == [303, 409]
    lost = next(r[1] for r in results if r[0] == 409)
    assert "Someone else just took that place" in lost
    offered = free_starts(lost)
    assert offered and start not in offered and min(abs(s - start) for s in offered) == 1800  # the nearest
    with db(web) as c:
        assert c.execute("SELECT COUNT(*) FROM bookings WHERE slot_start = ?", (start,)).fetchone()[0] == 1


async def test_manage_reschedule_and_cancel_need_code_and_contact(web):
    b = web.browser()
    _, html, _ = await b.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    starts = free_starts(html)
    _, _, location = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(starts[0]),
                                                                "phone": "+41 44 668 18 00"})
    _, html, _ = await b.get(location)
    code = re.search(r'id="booking-code">([0-9A-Z-]+)<', html)[1]
    stranger = web.browser()
    status, html, _ = await stranger.get(f"/manage/{code}")
    assert status == 403
    status, html, _ = await stranger.post("/manage", {"code": code, "contact": "+41 44 000 00 00"})
    assert status == 400 and "No booking matches" in html
    status, _, location = await stranger.post("/manage", {"code": code.lower(), "contact": "044 668 18 00"})
    assert status == 303 and location == f"/manage/{code}"
    status, _, location = await stranger.post(f"/manage/{code}/reschedule", {"start": str(starts[3])})
    assert status == 303 and location.endswith("?done=moved")
    status, _, location = await stranger.post(f"/manage/{code}/cancel", {})
    assert status == 303
    _, html, _ = await stranger.get(location)
    assert "Your booking is cancelled" in html
    with db(web) as c:
        kinds = [r[0] for r in c.execute("SELECT kind FROM notifications ORDER BY id")]
        assert kinds == ["confirmation", "reschedule", "cancellation"]


async def test_status_page_by_token_updates_by_push_and_says_when_the_office_is_silent(web, session):
    hq = web.app[HQ_KEY]
    kiosk, counter = Device("kiosk-9"), Device("counter-9")
    await kiosk.register(web, session)
    await counter.register(web, session, "counter")
    token = "Tk" + "a" * 20
    await ingest_branch_events(hq, [issued(kiosk, "20300107", 1, T0, "Tk" + "b" * 20),
                                    issued(kiosk, "20300107", 2, T0 + 5, token)])
    b = web.browser("en")
    status, html, _ = await b.get(f"/t/{token}")
    assert status == 200 and '<span class="label" id="label">A002</span>' in html
    assert '<dd id="position">2</dd>' in html and "Your turn is near" in html
    assert 'id="offline" role="status" hidden>' in html  # the events just arrived: heard from
    hq.last_heard["acme-main"] = hq.now()
    async with b.session.get(f"{web.url}/t/{token}/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"

        async def next_status() -> dict:
            while True:
                line = await asyncio.wait_for(stream.content.readline(), 10)
                if line.startswith(b"data: "):
                    return json.loads(line[6:])
        first = await next_status()
        assert first["position"] == "2" and first["offline"] is None and first["alert"] == "near"
        await ingest_branch_events(hq, [counter.event("ticket.called", {"ticket": "20300107-A002", "counter": "c1"},
                                                      T0 + 60)])
        called = await next_status()
    assert called["alert"] == "called" and called["headline"] == "Called: please go to Counter 1"
    assert called["serving"] == [{"counter": "Counter 1", "label": "A002"}]
    for guess in ("20300107-A002", "A002", "x" * 22, "Tk" + "a" * 19):
        assert (await b.get(f"/t/{guess}"))[0] == 404
    web.clock.t += 600
    _, html, _ = await b.get(f"/t/{token}")
    assert "The office works offline right now; last heard at" in html


async def test_register_verify_login_throttle_reset_delete(web):
    b = web.browser("sw")
    status, html, _ = await b.post("/account/register", {"contact": "zawadi@example.org", "password": "short"})
    assert status == 400 and "angalau herufi 10" in html
    status, _, location = await b.post("/account/register", {"contact": "zawadi@example.org",
                                                             "password": "a long password"})
    assert status == 303 and location == "/account/verify"
    with db(web) as c:
        body = c.execute("SELECT body FROM notifications WHERE kind = 'verify'").fetchone()["body"]
    code = re.search(r"\b(\d{6})\b", body)[1]
    assert body.startswith("Msimbo wako wa SmartQ")  # in the visitor's language
    status, _, _ = await b.post("/account/verify", {"contact": "zawadi@example.org", "code": "000000"})
    assert status == 400
    status, _, location = await b.post("/account/verify", {"contact": "zawadi@example.org", "code": code})
    assert status == 303 and location.startswith("/account")
    status, html, _ = await b.get("/account")
    assert status == 200 and "zawadi@example.org" in html
    session_cookie = b.cookie("smartq_citizen")
    assert session_cookie and len(session_cookie) >= 40
    await b.post("/account/logout", {})
    assert (await b.get("/account"))[0] == 403
    for _ in range(5):
        status, _, _ = await b.post("/account/login", {"contact": "zawadi@example.org", "password": "wrong password"})
        assert status == 400
    status, html, _ = await b.post("/account/login", {"contact": "zawadi@example.org", "password": "a long password"})
    assert status == 429  # locked: even the right password waits
    web.clock.t += 301
    status, _, _ = await b.post("/account/login", {"contact": "zawadi@example.org", "password": "a long password"})
    assert status == 303
    status, _, _ = await b.post("/account/delete", {"password": "a long password"})
    assert status == 303
    with db(web) as c:
        assert c.execute("SELECT COUNT(*) FROM citizens").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM citizen_sessions").fetchone()[0] == 0


@pytest.mark.parametrize("path", [
    "/b/acme-main/book/slot?service=passport&date=2030-13-45", "/b/acme-main/book/slot?service=nope&date=2030-01-07",
    "/b/acme-main/book/contact?service=passport&start=abc", "/b/acme-main/book/contact?service=passport&start=99999999999",
    "/b/%00/book", "/c/st1.garbage", "/c/x/booking.ics", "/manage/%FF%FE", "/t/" + "%" * 22, "/lang/xx",
    "/b/acme-main/book/day?service=" + "x" * 5000, "/account",
])
async def test_bad_input_gets_a_clear_4xx_page_never_a_500(web, path):
    status, html, r = await web.browser().get(path)
    assert 400 <= status < 500, (path, status, html[:300])
    assert r.content_type == "text/html" and h1(html)


async def test_no_public_endpoint_enumerates_tickets_or_shows_personal_data(web, session):
    hq = web.app[HQ_KEY]
    kiosk = Device("kiosk-8")
    await kiosk.register(web, session)
    await ingest_branch_events(hq, [issued(kiosk, "20300107", n, T0 + n, f"Tok{n:03d}".ljust(22, "q")) for n in (1, 2, 3)])
    b = web.browser()
    _, html, _ = await b.get("/b/acme-main/book/slot?service=passport&date=2030-01-07")
    _, _, location = await b.post("/b/acme-main/book/contact", {"service": "passport", "start": str(free_starts(html)[0]),
                                                                "email": "secret.person@example.org",
                                                                "phone": "+41 44 668 18 00", "name": "Secret Person"})
    anonymous = web.browser()
    for path in [p for p in PAGES] + ["/t/" + "Tok001".ljust(22, "q")]:
        _, html, _ = await anonymous.get(path)
        assert "secret.person" not in html and "668 18 00" not in html and "Secret Person" not in html
    for path in ("/api/v1/public/branches/acme-main/tickets/20300107-A001/status", "/api/v1/public/tickets/20300107-A001",
                 "/t/20300107-A001", "/t/A001", "/api/v1/public/tickets/A001"):
        assert (await anonymous.get(path))[0] == 404, path
    r = await api(session, "GET", f"{web.url}/api/v1/public/tickets/" + "Tok001".ljust(22, "q"), 200)
    assert "phone" not in r and r["label"] == "A001"
    paths = {p for p in (await api(session, "GET", f"{web.url}/api/v1/openapi.json", 200))["paths"] if "/public/" in p}
    assert not any("{ticket}" in p for p in paths)  # tickets only by token


@pytest.mark.parametrize("path, body, ctype", [
    ("/b/acme-main/book/contact", b"service=passport&start=" + b"9" * 40 + b"&email=a%40b.org", None),
    ("/b/acme-main/book/contact", b"service=passport&start=1894000500&email=%FF%FE%00", None),
    ("/manage", b"code=" + b"%00" * 50 + b"&contact=x", None),
    ("/account/login", b"contact=" + b"a" * 5000 + b"&password=" + b"p" * 5000, None),
    ("/account/register", b"\xff\xfe\xfd", None),
    ("/account/verify", b"--x\r\nContent-Disposition: form-data; name=code\r\n\r\n1\r\n--x--\r\n",
     "multipart/form-data; boundary=x"),
    ("/manage/AAAA-BBBB/reschedule", b"start=1", None),
    ("/b/acme-main/book/contact", b"x" * 300_000, None),
])
async def test_junk_form_posts_get_a_4xx_page_never_a_500(web, path, body, ctype):
    b = web.browser()
    await b.get("/")
    csrf = b.cookie("smartq_csrf")
    data = body.replace(b"service=", f"csrf_token={csrf}&service=".encode(), 1) if b"service=" in body else body
    headers = {"Content-Type": ctype or "application/x-www-form-urlencoded"}
    async with b.session.post(web.url + path, data=data, headers=headers, allow_redirects=False) as r:
        assert 400 <= r.status < 500 or r.status in (200, 303), (path, r.status, (await r.text())[:300])
        assert r.status != 500


async def test_a_link_request_seen_by_another_worker_keeps_the_page_online(web, session):
    from hq.link import heard_from

    hq = web.app[HQ_KEY]
    kiosk = Device("kiosk-7")
    await kiosk.register(web, session)
    token = "Ww" + "w" * 20
    await ingest_branch_events(hq, [issued(kiosk, "20300107", 1, T0, token)])
    web.clock.t += 300  # the events are old now, but the branch keeps saying hello
    await heard_from(hq, "acme-main")
    hq.last_heard.clear()  # as if that hello reached another HQ worker process: only the database knows
    _, html, _ = await web.browser().get(f"/t/{token}")
    assert 'id="offline" role="status" hidden>' in html
    web.clock.t += 120
    _, html, _ = await web.browser().get(f"/t/{token}")
    assert "The office works offline right now; last heard at" in html


async def test_with_several_workers_events_ingested_by_another_process_reach_the_stream(tmp_path, clock, session):
    """workers > 1: the link may deliver to another HQ process; the stream still updates at once
    (the events table is watched), not only at the 10 s re-read."""
    import aiohttp
    from hq.db import open_database
    from hq.ingest import ingest_sync
    from hqtest import make_settings, seed, start_server

    settings = make_settings(tmp_path, workers=2)
    runner, srv = await start_server(settings, clock)
    try:
        await seed(srv, session)
        hq = srv.app[HQ_KEY]
        kiosk, counter = Device("kiosk-6"), Device("counter-6")
        await kiosk.register(srv, session)
        await counter.register(srv, session, "counter")
        token = "Mw" + "m" * 20
        await ingest_branch_events(hq, [issued(kiosk, "20300107", 1, T0, token)])
        other = open_database(settings.database_url, readers=1)  # "another worker": its own writer, no hub
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/t/{token}/events") as stream:
                async def next_status() -> dict:
                    while True:
                        line = await asyncio.wait_for(stream.content.readline(), 5)
                        if line.startswith(b"data: "):
                            return json.loads(line[6:])
                assert (await next_status())["status"] == "waiting"
                event = counter.event("ticket.called", {"ticket": "20300107-A001", "counter": "c1"}, T0 + 30)
                await other.write(lambda c: ingest_sync(c, [event], now=hq.now(), turn_near_places=3))
                called = await next_status()  # within 5 s, though the keep-alive re-read is every 10 s
            assert called["alert"] == "called"
        finally:
            other.close()
    finally:
        await runner.cleanup()
