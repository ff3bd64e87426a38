"""The console's accounts over real HTTP on a real HQ (no browser): log in, navigation by role,
403 pages for roles and other tenants, account management, the password policy, the audit log.
The browser, axe-core and screenshots are in test_console_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3

import pytest

from hq.ingest import ingest_branch_events
from hq.web import HQ_KEY
from hqtest import PASSWORD, T0, Server, api
from webtest import Browser, Device, db, h1, issued

NEW_PASSWORD = "tiger lily on the moon"


@pytest.fixture()
async def console(server: Server):
    browsers: list[Browser] = []

    async def login(email: str, password: str = PASSWORD, language: str | None = None) -> Browser:
        b = Browser(server.url, language)
        browsers.append(b)
        status, _, location = await b.post("/console/login", {"email": email, "password": password})
        assert (status, location) == (303, "/console"), (email, status)
        return b
    server.login = login
    server.anonymous = lambda language=None: browsers.append(Browser(server.url, language)) or browsers[-1]
    yield server
    for b in browsers:
        await b.close()


def user_id(srv: Server, email: str) -> int:
    with db(srv) as c:
        return c.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()[0]


def audit_rows(srv: Server) -> list[sqlite3.Row]:
    with db(srv) as c:
        return c.execute("SELECT * FROM audit ORDER BY id").fetchall()


def menu(html: str) -> list[str]:
    nav = re.search(r'<nav aria-label="[^"]*">\s*<ul class="menu">(.*?)</ul>', html, re.S)
    return re.findall(r'href="(/console[^"]*)"', nav[1]) if nav else []


async def test_login_wrong_password_then_right_one_and_logout(console):
    b = console.anonymous()
    status, html, r = await b.get("/console/accounts", allow_redirects=False)
    assert status == 303 and r.headers["Location"] == "/console/login?next=/console/accounts"
    status, html, _ = await b.post("/console/login", {"email": "admin@acme.test", "password": "wrong one!"})
    assert status == 400 and "Wrong e-mail address or password." in html
    status, _, location = await b.post("/console/login?next=/console/accounts",
                                       {"email": "ADMIN@acme.test", "password": PASSWORD})
    assert (status, location) == (303, "/console/accounts")
    assert b.cookie("smartq_session")
    status, html, _ = await b.get("/console")
    assert status == 200 and "admin@acme.test" in html and "acme main" in html and "beta main" not in html
    status, _, location = await b.post("/console/logout", {})
    assert (status, location) == (303, "/console/login")
    status, _, r = await b.get("/console", allow_redirects=False)
    assert status == 303
    # a login form without the CSRF token is refused; an open redirect is not possible
    status, html, _ = await b.post("/console/login", {"email": "admin@acme.test", "password": PASSWORD}, csrf=False)
    assert status == 403
    status, _, location = await b.post("/console/login?next=//evil.example/", {"email": "admin@acme.test",
                                                                              "password": PASSWORD})
    assert location == "/console"


async def test_navigation_is_shaped_by_role(console):
    menus, homes = {}, {}
    for email in ("root@hq.test", "admin@acme.test", "manager@acme.test", "staff@acme.test"):
        b = await console.login(email)
        _, html, _ = await b.get("/console")
        menus[email] = menu(html)
        block = re.search(r'<section class="branch-links" aria-labelledby="branch-acme-main">(.*?)</section>', html, re.S)
        homes[email] = re.findall(r'href="(/console[^"]*)"', block[1]) if block else []
    # the home lists each branch with the pages about it that the role may open
    pages = ["live", "appointments", "calendar", "staffing", "branches", "reassign"]
    assert homes["admin@acme.test"] == homes["root@hq.test"] == [f"/console/{x}/acme-main" for x in pages]
    assert homes["staff@acme.test"] == ["/console/live/acme-main", "/console/appointments/acme-main"]
    assert menus["root@hq.test"] == ["/console", "/console/orgs", "/console/analytics", "/console/fleet",
                                     "/console/accounts", "/console/audit", "/console/password"]
    assert menus["admin@acme.test"] == ["/console", "/console/orgs/acme/catalogue", "/console/analytics",
                                        "/console/fleet", "/console/accounts", "/console/audit", "/console/password"]
    assert menus["manager@acme.test"] == ["/console", "/console/live/acme-main", "/console/appointments/acme-main",
                                          "/console/calendar/acme-main", "/console/analytics", "/console/staffing/acme-main",
                                          "/console/fleet", "/console/branches/acme-main", "/console/reassign/acme-main",
                                          "/console/password"]
    assert menus["staff@acme.test"] == ["/console", "/console/live/acme-main", "/console/appointments/acme-main",
                                        "/console/password"]


async def test_403_page_for_roles_and_other_tenants_in_the_visitors_language(console):
    staff = await console.login("staff@acme.test", language="fr")
    for path in ("/console/accounts", "/console/audit", "/console/accounts/new", "/console/accounts/1"):
        status, html, _ = await staff.get(path)
        assert status == 403 and h1(html) == "Non autorisé" and '<html lang="fr">' in html, (path, h1(html))
    manager = await console.login("manager@acme.test", language="sw")
    status, html, _ = await manager.get("/console/accounts")
    assert status == 403 and '<html lang="sw">' in html
    admin = await console.login("admin@acme.test", language="es")
    for email in ("admin@beta.test", "staff@beta.test", "root@hq.test"):
        status, html, _ = await admin.get(f"/console/accounts/{user_id(console, email)}")
        assert status == 403 and '<html lang="es">' in html, email
        status, _, _ = await admin.post(f"/console/accounts/{user_id(console, email)}/disable", {})
        assert status == 403
    status, _, _ = await admin.get("/console/accounts/999999")  # not revealed whether it exists
    assert status == 403
    _, html, _ = await admin.get("/console/accounts")
    assert "admin@beta.test" not in html and "root@hq.test" not in html and "staff@acme.test" in html
    with db(console) as c:
        assert c.execute("SELECT disabled FROM users WHERE email = 'admin@beta.test'").fetchone()[0] == 0


async def test_create_account_validates_email_role_place_and_password(console):
    admin = await console.login("admin@acme.test")
    base = {"email": "new.clerk@acme.test", "name": "New Clerk", "role": "staff", "org": "", "branch": "acme-main",
            "password": NEW_PASSWORD}
    cases = [({"email": "not-an-address"}, "email", "Enter a valid e-mail address"),
             ({"email": "staff@acme.test"}, "email", "Another account has this e-mail address."),
             ({"password": "short"}, "password", "at least 10 characters"),
             ({"password": "1234567890"}, "password", "one of the most common ones"),
             ({"password": "qwertyuiop"}, "password", "one of the most common ones"),
             ({"password": "new.clerk-2024!"}, "password", "must not contain the e-mail"),
             ({"role": "super_admin"}, "role", "Choose a role."),
             ({"branch": "beta-main"}, "branch", "Choose the branch."),
             ({"role": "org_admin", "org": "beta"}, "org", "Choose the organization.")]
    for change, field, text in cases:
        status, html, _ = await admin.post("/console/accounts/new", {**base, **change})
        assert status == 400 and text in html and f'href="#{field}"' in html, (change, html[:300])
    status, _, location = await admin.post("/console/accounts/new", base)
    assert status == 303 and location.startswith("/console/accounts/")
    with db(console) as c:
        row = c.execute("SELECT * FROM users WHERE email = 'new.clerk@acme.test'").fetchone()
    assert (row["role"], row["org_id"], row["branch_id"], row["name"]) == ("staff", "acme", "acme-main", "New Clerk")
    assert row["password_hash"].startswith("$argon2id$")
    await console.login("new.clerk@acme.test", NEW_PASSWORD)
    last = audit_rows(console)[-2]  # the new clerk's login follows the creation
    assert (last["actor_email"], last["action"], last["target"], last["org_id"]) == \
        ("admin@acme.test", "account.create", "new.clerk@acme.test", "acme")
    _, html, _ = await admin.get("/console/audit")
    assert "account.create" in html and "new.clerk@acme.test" in html
    beta = await console.login("admin@beta.test")
    _, html, _ = await beta.get("/console/audit")
    assert "new.clerk@acme.test" not in html  # one organization's log is not another's


async def test_disable_reset_end_sessions_delete(console, session):
    admin = await console.login("admin@acme.test")
    staff = await console.login("staff@acme.test")
    uid = user_id(console, "staff@acme.test")
    token = console.tokens["acme-staff"]
    # disable: its console session and its API token stop working at once, and it cannot log in
    assert (await admin.post(f"/console/accounts/{uid}/disable", {}))[:2][0] == 303
    status, _, r = await staff.get("/console", allow_redirects=False)
    assert status == 303
    await api(session, "GET", f"{console.url}/api/v1/auth/me", 401, headers={"Authorization": f"Bearer {token}"})
    await api(session, "POST", f"{console.url}/api/v1/auth/tokens", 401,
              json={"email": "staff@acme.test", "password": PASSWORD})
    b = console.anonymous()
    status, html, _ = await b.post("/console/login", {"email": "staff@acme.test", "password": PASSWORD})
    assert status == 400 and "Wrong e-mail address or password." in html
    _, html, _ = await admin.get("/console/accounts")
    assert "Disabled" in html
    await admin.post(f"/console/accounts/{uid}/enable", {})
    staff = await console.login("staff@acme.test")
    # reset: a common password is refused; a good one ends the sessions, the old password stops working
    status, html, _ = await admin.post(f"/console/accounts/{uid}/password", {"password": "password123"})
    assert status == 400 and "one of the most common ones" in html
    assert (await admin.post(f"/console/accounts/{uid}/password", {"password": NEW_PASSWORD}))[0] == 303
    assert (await staff.get("/console", allow_redirects=False))[0] == 303
    await console.login("staff@acme.test", NEW_PASSWORD)
    # end sessions
    staff = await console.login("staff@acme.test", NEW_PASSWORD)
    _, html, _ = await admin.get(f"/console/accounts/{uid}")
    assert re.search(r"Open sessions</dt><dd>2<", html)
    await admin.post(f"/console/accounts/{uid}/sessions", {})
    assert (await staff.get("/console", allow_redirects=False))[0] == 303
    # nobody disables or deletes themselves; deleting wants the box ticked
    me = user_id(console, "admin@acme.test")
    assert (await admin.post(f"/console/accounts/{me}/delete", {"confirm": "yes"}))[0] == 409
    assert (await admin.post(f"/console/accounts/{me}/disable", {}))[0] == 409
    assert (await admin.post(f"/console/accounts/{uid}/delete", {}))[0] == 400
    status, _, location = await admin.post(f"/console/accounts/{uid}/delete", {"confirm": "yes"})
    assert (status, location) == (303, "/console/accounts?done=deleted")
    with db(console) as c:
        assert c.execute("SELECT COUNT(*) FROM users WHERE id = ?", (uid,)).fetchone()[0] == 0
    actions = [r["action"] for r in audit_rows(console) if r["target"] == "staff@acme.test"]
    for a in ("account.disable", "account.enable", "account.password_reset", "account.sessions_end", "account.delete"):
        assert a in actions


async def test_change_role_ends_sessions_and_own_role_is_fixed(console):
    admin = await console.login("admin@acme.test")
    manager = await console.login("manager@acme.test")
    uid = user_id(console, "manager@acme.test")
    form = {"email": "manager@acme.test", "name": "Mia", "role": "staff", "org": "", "branch": "acme-main"}
    assert (await admin.post(f"/console/accounts/{uid}", form))[0] == 303
    assert (await manager.get("/console", allow_redirects=False))[0] == 303  # new rights: log in again
    me = user_id(console, "admin@acme.test")
    status, _, _ = await admin.post(f"/console/accounts/{me}", {"email": "admin@acme.test", "name": "Ada",
                                                               "role": "staff", "branch": "acme-main"})
    assert status == 303
    with db(console) as c:
        assert c.execute("SELECT role, name FROM users WHERE id = ?", (me,)).fetchone()[:] == ("org_admin", "Ada")
        assert c.execute("SELECT role FROM users WHERE id = ?", (uid,)).fetchone()[0] == "staff"


async def test_change_my_password_bootstrap_admin_too(console, session):
    root = await console.login("root@hq.test")
    other = await console.login("root@hq.test")
    form = {"current": "not it at all", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    status, html, _ = await root.post("/console/password", form)
    assert status == 400 and "This is not your current password." in html
    status, html, _ = await root.post("/console/password", {**form, "current": PASSWORD, "confirm": "something else"})
    assert status == 400 and "The two new passwords are not the same." in html
    status, html, _ = await root.post("/console/password", {**form, "current": PASSWORD, "password": "iloveyou12",
                                                            "confirm": "iloveyou12"})
    assert status == 400 and "one of the most common ones" in html
    status, _, location = await root.post("/console/password", {**form, "current": PASSWORD})
    assert (status, location) == (303, "/console/password?done=1")
    assert (await root.get("/console", allow_redirects=False))[0] == 200  # this session goes on
    assert (await other.get("/console", allow_redirects=False))[0] == 303  # the others end
    await api(session, "GET", f"{console.url}/api/v1/auth/me", 401, headers=console.h("super"))
    await console.login("root@hq.test", NEW_PASSWORD)
    staff = await console.login("staff@acme.test")
    status, _, _ = await staff.post("/console/password", {"current": PASSWORD, "password": NEW_PASSWORD,
                                                          "confirm": NEW_PASSWORD})
    assert status == 303
    assert [r["action"] for r in audit_rows(console)].count("password.change") == 2


async def test_console_pages_translated_and_junk_input_is_a_4xx(console):
    admin = await console.login("admin@acme.test", language="rw")
    uid = user_id(console, "staff@acme.test")
    for path in ("/console", "/console/accounts", "/console/accounts/new", f"/console/accounts/{uid}",
                 "/console/password", "/console/audit", "/console/audit?before=abc"):
        status, html, _ = await admin.get(path)
        assert status == 200 and '<html lang="rw">' in html, path
    for path, form in (("/console/accounts/new", {"email": "x" * 5000, "role": "x" * 5000}),
                       (f"/console/accounts/{uid}/nonsense", {}), ("/console/accounts/abc/disable", {}),
                       (f"/console/accounts/{uid}", {"email": "\x00"}), ("/console/password", {"current": "x" * 9999})):
        status, _, _ = await admin.post(path, form)
        assert 400 <= status < 500, (path, status)


async def test_live_page_shows_counters_and_waits_and_pushes_a_call(console, session):
    hq = console.app[HQ_KEY]
    kiosk, counter = Device("kiosk-5"), Device("counter-5")
    await kiosk.register(console, session)
    await counter.register(console, session, "counter")
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/staff/s1", 200, headers=console.h("acme-admin"),
              json={"name": "Amani"})
    await ingest_branch_events(hq, [issued(kiosk, "20300107", 1, T0 - 1200, "Tk" + "c" * 20),
                                    issued(kiosk, "20300107", 2, T0 - 60, "Tk" + "d" * 20),
                                    counter.event("counter.opened", {"counter": "c1", "staff": "s1"}, T0 - 100)])
    manager = await console.login("manager@acme.test")
    _, html, _ = await manager.get("/console")
    assert 'href="/console/live/acme-main"' in html
    status, html, _ = await manager.get("/console/live/acme-main")
    assert status == 200 and '<dd id="live-waiting">2</dd>' in html
    row = re.search(r'<tr data-counter="c1">(.*?)</tr>', html, re.S)[1]
    assert "Counter 1" in row and "Open" in row and "Amani" in row
    assert "People who have waited longer than the target of 15 min: 1." in html  # A001: 20 min
    assert "20 min" in html  # the longest wait
    # the service's own target wait (the catalogue's, written through to the branch's service)
    # replaces the HQ-wide one: at 30 min nobody is over, at 1 min A001 is (A002 waited just 1 min)
    general = {"letter": "A", "names": {"en": "General"}, "slot_minutes": 15, "capacity": 3}
    for minutes, over in ((30, 0), (1, 1)):
        await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/services/general", 200,
                  headers=console.h("acme-admin"), json=general | {"target_wait_minutes": minutes})
        _, html, _ = await manager.get("/console/live/acme-main")
        row = re.search(r'<tr data-service="general"[^>]*>(.*?)</tr>', html, re.S)[1]
        assert f"<td>{minutes} min</td>" in row, row
        assert ("warning-wait" in html) == bool(over)
        if over:
            assert f"People who have waited longer than the target of 1 min: {over}." in html
    # two services with different targets: the warning counts each against its own
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/services/other", 200,
              headers=console.h("acme-admin"), json={"letter": "B", "names": {"en": "Other"}, "target_wait_minutes": 5})
    await ingest_branch_events(hq, [issued(kiosk, "20300107", 3, T0 - 400, "Tk" + "e" * 20, service="other")])
    _, html, _ = await manager.get("/console/live/acme-main")
    assert "People who have waited longer than their service&#39;s target: 2." in html  # A001 past 1 min, A003 past 5
    row = re.search(r'<tr data-service="other"[^>]*>(.*?)</tr>', html, re.S)[1]
    assert "<td>5 min</td>" in row and "1 ⚠" in row
    for bad in (0, 241, "15", 1.5):
        await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/services/other", 400,
                  headers=console.h("acme-admin"), json={"letter": "B", "names": {"en": "Other"}, "target_wait_minutes": bad})
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/services/general", 200,
              headers=console.h("acme-admin"), json=general)  # back to the HQ-wide target
    for who, path in (("manager@beta.test", "/console/live/acme-main"), ("staff@acme.test", "/console/live/beta-main"),
                      ("staff@acme.test", "/console/live/nowhere")):
        b = await console.login(who)
        assert (await b.get(path))[0] == 403, (who, path)
        async with b.session.get(f"{console.url}{path}/events") as r:
            assert r.status == 403
    admin = await console.login("admin@acme.test")
    assert (await admin.get("/console/live/acme-main"))[0] == 200
    async with manager.session.get(f"{console.url}/console/live/acme-main/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"

        async def next_live() -> dict:
            while True:
                line = await asyncio.wait_for(stream.content.readline(), 10)
                if line.startswith(b"data: "):
                    return json.loads(line[6:])
        first = await next_live()
        assert first["waiting"] == 3  # A001, A002 and the other service's A003
        console.clock.t += 30
        await ingest_branch_events(hq, [counter.event("ticket.called", {"ticket": "20300107-A001", "counter": "c1"},
                                                      T0 + 30)])
        pushed = await next_live()
    assert pushed["waiting"] == 2
    row = re.search(r'<tr data-counter="c1">(.*?)</tr>', pushed["html"], re.S)[1]
    assert '<span class="label">A001</span> called' in row and "0 min" in row


async def test_staffing_advice_from_four_weeks_of_mondays(console, session):
    """Mondays 09:00-10:00 (Europe/Zurich), 20 arrivals a week, each served 6 minutes: 20 per hour,
    A = 2 Erlangs; Erlang C by the textbook sum decides how many counters call 80 % within 15 min."""
    import math
    from datetime import date, datetime, timedelta
    from zoneinfo import ZoneInfo

    hq = console.app[HQ_KEY]
    kiosk, counter = Device("kiosk-6"), Device("counter-6")
    await kiosk.register(console, session)
    await counter.register(console, session, "counter")
    zone = ZoneInfo("Europe/Zurich")
    events = []
    for weeks_back in (4, 3, 2, 1):
        day = date(2030, 1, 7) - timedelta(days=7 * weeks_back)
        start = datetime(day.year, day.month, day.day, 9, 0, tzinfo=zone).timestamp()
        tag = day.strftime("%Y%m%d")
        for i in range(20):
            at = start + 180 * i
            events.append(issued(kiosk, tag, i + 1, at, f"St{tag}{i:02d}".ljust(22, "z")))
            ticket = f"{tag}-A{i + 1:03d}"
            for kind, dt in (("ticket.called", 30), ("ticket.started", 60), ("ticket.completed", 420)):
                events.append(counter.event(kind, {"ticket": ticket, "counter": "c1"}, at + dt))
    kiosk_events = [e for e in events if e["origin"] == "kiosk-6"]
    counter_events = [e for e in events if e["origin"] == "counter-6"]
    result = await ingest_branch_events(hq, kiosk_events + counter_events)
    assert result.accepted == len(events), result.rejected[:3]

    def textbook(a: float, n: int) -> float:
        top = a ** n / math.factorial(n) * n / (n - a)
        return top / (sum(a ** k / math.factorial(k) for k in range(n)) + top)
    a, service_s, target = 20 * 360 / 3600, 360, 900
    level = {n: 1 - textbook(a, n) * math.exp(-(n - a) * target / service_s) if n > a else 0.0 for n in range(1, 7)}
    needed = min(n for n in level if level[n] >= 0.8)

    manager = await console.login("manager@acme.test")
    status, html, _ = await manager.get("/console/staffing/acme-main?weeks=4&share=80")
    assert status == 200
    row = re.search(r'<tr data-key="general-0-9">(.*?)</tr>', html, re.S)[1]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    assert cells[:6] == ["General", "Monday", "09:00", "20", "6 min", str(needed)], cells
    assert cells[6] == "1"  # one counter serves 'general' in the seed
    assert cells[7:10] == [f"{round(level[n] * 100)} %" for n in (needed - 1, needed, needed + 1)]
    assert cells[10:] == ["0", "0 %", "Erlang C", "15 min"]  # no counter was opened; nobody gave up
    assert len(re.findall(r'<tr data-key="', html)) == 1  # nothing outside that hour
    staff = await console.login("staff@acme.test")
    assert (await staff.get("/console/staffing/acme-main"))[0] == 403
    other = await console.login("manager@beta.test")
    assert (await other.get("/console/staffing/acme-main"))[0] == 403
    assert (await manager.get("/console/staffing/acme-main?weeks=abc&share=1000"))[0] == 200
    _, text, _ = await manager.get("/console/staffing/acme-main?weeks=4&share=80&format=csv")
    lines = text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("service,weekday,hour,arrivals_per_hour") and len(lines) == 2
    assert lines[1].startswith(f"general,0,9,20.0,360.0,2.0,{needed},1,") and lines[1].endswith(",900")
    # the service's own target wait: 3 minutes needs more counters for the same share
    strict = {n: 1 - textbook(a, n) * math.exp(-(n - a) * 180 / service_s) if n > a else 0.0 for n in range(1, 9)}
    needed_strict = min(n for n in strict if strict[n] >= 0.8)
    assert needed_strict > needed
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/services/general", 200,
              headers=console.h("acme-admin"), json={"letter": "A", "names": {"en": "General"}, "target_wait_minutes": 3})
    _, html, _ = await manager.get("/console/staffing/acme-main?weeks=4&share=80")
    row = re.search(r'<tr data-key="general-0-9">(.*?)</tr>', html, re.S)[1]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    assert cells[5] == str(needed_strict) and cells[-1] == "3 min", cells
    assert cells[7:10] == [f"{round(strict[n] * 100)} %" for n in (needed_strict - 1, needed_strict, needed_strict + 1)]
    assert "people within 3 min" in html


def outbox_events(srv: Server, branch: str, type_: str) -> list[dict]:
    with db(srv) as c:
        return [json.loads(r["envelope"])["payload"] for r in c.execute(
            "SELECT envelope FROM outbox WHERE branch_id = ? AND type = ? ORDER BY seq", (branch, type_))]


async def test_branch_settings_become_signed_config_events(console):
    admin = await console.login("admin@acme.test", language="fr")
    status, html, _ = await admin.get("/console/branches/acme-main")
    assert status == 200 and 'id="opens0" name="opens0" type="time" value="08:00"' in html
    hours = {f"opens{d}": "09:00" for d in range(6)} | {f"closes{d}": "16:30" for d in range(6)}
    status, _, location = await admin.post("/console/branches/acme-main/hours", hours | {"opens6": "", "closes6": ""})
    assert (status, location) == (303, "/console/branches/acme-main?done=hours")
    sent = outbox_events(console, "acme-main", "config.hours")[-1]
    assert sent["weekdays"] == {str(d): {"opens": "09:00", "closes": "16:30"} for d in range(6)}
    status, html, _ = await admin.post("/console/branches/acme-main/hours", {"opens0": "17:00", "closes0": "09:00"})
    assert status == 400 and 'aria-invalid="true"' in html
    await admin.post("/console/branches/acme-main/closed-days", {"day": "2030-01-14", "reason": "Fête"})
    assert outbox_events(console, "acme-main", "config.hours")[-1]["closed_days"] == [{"day": "2030-01-14",
                                                                                        "reason": "Fête"}]
    await admin.post("/console/branches/acme-main/closed-days/2030-01-14/delete", {})
    assert outbox_events(console, "acme-main", "config.hours")[-1]["closed_days"] == []
    assert (await admin.post("/console/branches/acme-main/closed-days", {"day": "2030-13-40"}))[0] == 400
    status, _, _ = await admin.post("/console/branches/acme-main/details", {"name": "Acme Centre", "address": "1 Main St",
                                                                            "timezone": "Africa/Kigali"})
    assert status == 303
    assert outbox_events(console, "acme-main", "config.branch")[-1]["timezone"] == "Africa/Kigali"
    assert (await admin.post("/console/branches/acme-main/details", {"name": "X", "timezone": "Mars/Base"}))[0] == 400
    status, _, _ = await admin.post("/console/branches/acme-main/staff", {"staff_id": "amani", "staff_name": "Amani",
                                                                          "pin": "4821"})
    assert status == 303
    with db(console) as c:
        row = c.execute("SELECT * FROM staff WHERE branch_id = 'acme-main' AND id = 'amani'").fetchone()
    assert row["name"] == "Amani" and row["pin_hash"] and "4821" not in row["pin_hash"]
    assert outbox_events(console, "acme-main", "config.staff")  # the staff list travels to the branch
    assert (await admin.post("/console/branches/acme-main/staff", {"staff_id": "x", "staff_name": "X", "pin": "12"}))[0] == 400
    actions = [r["action"] for r in audit_rows(console)]
    for a in ("branch.hours", "branch.closed_day", "branch.update", "branch.staff"):
        assert a in actions
    # a manager sets hours, not details or staff; staff see nothing; other tenants get 403
    manager = await console.login("manager@acme.test")
    assert (await manager.get("/console/branches/acme-main"))[0] == 200
    assert (await manager.post("/console/branches/acme-main/hours", hours))[0] == 303
    assert (await manager.post("/console/branches/acme-main/details", {"name": "Y", "timezone": "UTC"}))[0] == 403
    assert (await manager.post("/console/branches/acme-main/staff", {"staff_id": "y", "staff_name": "Y",
                                                                     "pin": "1234"}))[0] == 403
    staff = await console.login("staff@acme.test")
    assert (await staff.get("/console/branches/acme-main"))[0] == 403
    beta = await console.login("admin@beta.test")
    assert (await beta.get("/console/branches/acme-main"))[0] == 403
    assert (await beta.post("/console/branches/acme-main/hours", hours))[0] == 403


async def test_todays_appointments_with_what_became_of_each(console, session):
    """Booked at 08:15 and served; 08:30 never checked in (a no-show once its slot ended);
    09:00 checked in; 10:00 cancelled. Now is 08:50 in Zurich."""
    hq = console.app[HQ_KEY]
    codes = {}
    for hhmm, who in (("08:15", "Ada"), ("08:30", "Ben"), ("09:00", "Chloé"), ("10:00", "=1+2 Dan")):
        booked = await api(session, "POST", f"{console.url}/api/v1/public/bookings", 201, json={
            "branch": "acme-main", "service": "general", "start": f"2030-01-07T{hhmm}:00+01:00", "name": who,
            "phone": "+41 44 668 18 00"})
        codes[who] = booked["code"]
    await api(session, "POST", f"{console.url}/api/v1/public/bookings/{codes['=1+2 Dan']}/cancel", 200,
              json={"contact": "+41446681800"})
    kiosk, counter = Device("kiosk-4"), Device("counter-4")
    await kiosk.register(console, session)
    await counter.register(console, session, "counter")
    console.clock.t = T0 + 50 * 60
    base = {"service": "general", "day": "20300107", "priority": 0, "language": "en"}
    await ingest_branch_events(hq, [
        kiosk.event("ticket.issued", base | {"ticket": "20300107-A001", "number": 1, "label": "A001",
                                             "booking": codes["Ada"]}, T0 + 600),
        kiosk.event("ticket.issued", base | {"ticket": "20300107-A002", "number": 2, "label": "A002",
                                             "booking": codes["Chloé"]}, T0 + 2900),
        counter.event("ticket.called", {"ticket": "20300107-A001", "counter": "c1"}, T0 + 700),
        counter.event("ticket.started", {"ticket": "20300107-A001", "counter": "c1"}, T0 + 720),
        counter.event("ticket.completed", {"ticket": "20300107-A001", "counter": "c1"}, T0 + 1200)])
    staff = await console.login("staff@acme.test")
    status, html, _ = await staff.get("/console/appointments/acme-main")
    assert status == 200 and "Monday, January 7, 2030" in html

    def state(code: str) -> str:
        row = re.search(rf'<tr data-code="{code}">(.*?)</tr>', html, re.S)[1]
        return re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[-1]).strip()
    assert [state(codes[w]) for w in ("Ada", "Ben", "Chloé", "=1+2 Dan")] == ["Served", "No-show", "Checked in", "Cancelled"]
    assert "8:15" in html and "A002" in html and "Chloé" in html  # who, when, which ticket
    status, text, r = await staff.get("/console/appointments/acme-main?date=2030-01-07&format=csv")
    assert status == 200 and r.headers["Content-Type"].startswith("text/csv")
    import csv
    import io
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert table[0] == ["start", "name", "service", "booking_code", "ticket", "state", "checked_in_at", "finished_at"]
    assert table[1][6:] == ["2030-01-07T08:10:00+01:00", "2030-01-07T08:20:00+01:00"]  # Ada: checked in, served
    assert table[3][6:] == ["2030-01-07T08:48:20+01:00", ""]  # Chloé: checked in, waiting
    assert [(row[1], row[3], row[4], row[5]) for row in table[1:]] == [
        ("Ada", codes["Ada"], "A001", "served"), ("Ben", codes["Ben"], "", "no_show"),
        ("Chloé", codes["Chloé"], "A002", "checked_in"), ("'=1+2 Dan", codes["=1+2 Dan"], "", "cancelled")]
    assert table[1][0] == "2030-01-07T08:15:00+01:00"
    _, other_day, _ = await staff.get("/console/appointments/acme-main?date=2030-01-08")
    assert "No appointments on this day." in other_day
    assert (await staff.get("/console/appointments/acme-main?date=junk"))[0] == 200
    beta = await console.login("staff@beta.test")
    assert (await beta.get("/console/appointments/acme-main"))[0] == 403


async def test_super_admin_creates_an_organization_and_its_admin(console):
    root = await console.login("root@hq.test", language="sw")
    status, html, _ = await root.get("/console/orgs")
    assert status == 200 and 'data-org="acme"' in html and "admin@acme.test" in html
    assert (await root.post("/console/orgs", {"id": "Bad Id!", "name": "X"}))[0] == 400
    assert (await root.post("/console/orgs", {"id": "acme", "name": "Again"}))[0] == 400
    status, _, location = await root.post("/console/orgs", {"id": "gamma", "name": "Gamma Services"})
    assert (status, location) == (303, "/console/orgs?done=created")
    status, _, _ = await root.post("/console/accounts/new", {"email": "boss@gamma.test", "name": "Boss", "role": "org_admin",
                                                             "org": "gamma", "branch": "", "password": NEW_PASSWORD})
    assert status == 303
    _, html, _ = await root.get("/console/orgs")
    assert re.search(r'data-org="gamma">.*?boss@gamma.test', html, re.S)
    assert "org.create" in [r["action"] for r in audit_rows(console)]
    admin = await console.login("admin@acme.test")
    assert (await admin.get("/console/orgs"))[0] == 403
    assert (await admin.post("/console/orgs", {"id": "delta", "name": "D"}))[0] == 403


async def test_every_console_page_has_the_strict_csp_and_no_inline_code(console):
    root = await console.login("root@hq.test")
    uid = user_id(console, "staff@acme.test")
    for path in ("/console", "/console/orgs", "/console/accounts", "/console/accounts/new", f"/console/accounts/{uid}",
                 "/console/password", "/console/audit", "/console/live/acme-main", "/console/staffing/acme-main",
                 "/console/branches/acme-main", "/console/appointments/acme-main", "/console/calendar/acme-main",
                 "/console/calendar/acme-main/general/2030-01-07", "/console/fleet", "/console/login"):
        status, html, r = await root.get(path)
        assert status == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Cache-Control"] == "no-store"
        assert "<script>" not in html and " style=" not in html and "<style" not in html, path
        assert html.count('name="csrf_token"') == html.count("<form") - html.count('method="get"'), path


async def test_config_changes_through_the_api_are_in_the_audit_log(console, session):
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/hours", 200, headers=console.h("acme-manager"),
              json={"weekdays": {"0": {"opens": "07:30", "closes": "12:00"}}})
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/hours", 400, headers=console.h("acme-manager"),
              json={"weekdays": {"0": {"opens": "12:00", "closes": "07:30"}}})  # refused: nothing recorded
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/counters/c2", 200, headers=console.h("acme-admin"),
              json={"name": "Counter 2", "services": ["general"]})
    rows = [(r["actor_email"], r["action"], r["target"], r["org_id"]) for r in audit_rows(console)]
    assert rows.count(("manager@acme.test", "branch.hours", "acme-main", "acme")) == 1
    assert ("admin@acme.test", "counter.put", "acme-main/c2", "acme") in rows
    admin = await console.login("admin@acme.test")
    _, html, _ = await admin.get("/console/audit")
    assert "counter.put" in html and "acme-main/c2" in html
