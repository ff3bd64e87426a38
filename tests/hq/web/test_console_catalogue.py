"""The service catalogue in the console over real HTTP on a real HQ (no browser): an org admin
defines a service once, offers it in two branches with a local override, changes and withdraws
it; every change is the branch's signed config.service event; booking and the public pages follow
the catalogue; other roles and other tenants get 403. The nodes' side (kiosks list it after one
link round) is in test_console_catalogue_browser.py."""

from __future__ import annotations

import json
import re

import pytest

from hqtest import PASSWORD, Server, api
from webtest import Browser, db, h1

V = "/api/v1"
FORM = {"service_id": "tax", "letter": "T", "name_en": "Taxes", "name_fr": "Impôts", "name_rw": "Imisoro",
        "name_sw": "Kodi", "name_es": "Impuestos", "slot_minutes": "20", "capacity": "2", "icon": "money",
        "bookable": "yes"}


@pytest.fixture()
async def console(server: Server, session):
    await api(session, "POST", f"{server.url}{V}/orgs/acme/branches", 201, headers=server.h("super"),
              json={"id": "acme-east", "name": "acme east", "timezone": "Europe/Zurich", "languages": ["en", "fr"]})
    await api(session, "PUT", f"{server.url}{V}/branches/acme-east/hours", 200, headers=server.h("super"),
              json={"weekdays": {str(d): {"opens": "08:00", "closes": "17:00"} for d in range(5)}})
    browsers: list[Browser] = []

    async def login(email: str, language: str | None = None) -> Browser:
        b = Browser(server.url, language)
        browsers.append(b)
        status, _, location = await b.post("/console/login", {"email": email, "password": PASSWORD})
        assert (status, location) == (303, "/console"), email
        return b
    server.login = login
    yield server
    for b in browsers:
        await b.close()


def service_events(srv: Server, branch: str) -> list[dict]:
    with db(srv) as c:
        return [json.loads(r["envelope"])["payload"] for r in c.execute(
            "SELECT envelope FROM outbox WHERE branch_id = ? AND type = 'config.service' ORDER BY seq", (branch,))]


async def test_a_service_defined_once_is_offered_in_two_branches_with_an_override(console, session):
    admin = await console.login("admin@acme.test")
    status, html, _ = await admin.get("/console")
    assert 'href="/console/orgs/acme/catalogue"' in html  # in the org admin's menu
    status, _, location = await admin.post("/console/orgs/acme/catalogue", FORM)
    assert (status, location) == (303, "/console/orgs/acme/catalogue/tax?done=created")
    assert service_events(console, "acme-main")[-1]["id"] != "tax"  # defined, not offered anywhere yet
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-main",
                                    {"offered": "yes", "slot_minutes-acme-main": "", "capacity-acme-main": ""})
    assert status == 303
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-east",
                                    {"offered": "yes", "slot_minutes-acme-east": "30", "capacity-acme-east": "5"})
    assert status == 303
    main, east = service_events(console, "acme-main")[-1], service_events(console, "acme-east")[-1]
    assert main == {"id": "tax", "letter": "T", "names": {"en": "Taxes", "fr": "Impôts", "rw": "Imisoro",
                                                           "sw": "Kodi", "es": "Impuestos"},
                    "rules": {}, "order": 1, "icon": "money"}
    assert east["id"] == "tax" and east["icon"] == "money" and "enabled" not in east
    # The branches' own services (what booking reads) carry the catalogue's values and the overrides.
    sup = console.h("super")
    svc = {s["id"]: s for s in (await api(session, "GET", f"{console.url}{V}/branches/acme-east/services", 200,
                                          headers=sup))["services"]}
    assert (svc["tax"]["slot_minutes"], svc["tax"]["capacity"], svc["tax"]["bookable"]) == (30, 5, True)
    svc = {s["id"]: s for s in (await api(session, "GET", f"{console.url}{V}/branches/acme-main/services", 200,
                                          headers=sup))["services"]}
    assert (svc["tax"]["slot_minutes"], svc["tax"]["capacity"]) == (20, 2)
    public = await api(session, "GET", f"{console.url}{V}/public/branches/acme-east", 200)
    assert "tax" in [s["id"] for s in public["services"]]
    # Editing the definition reaches every branch that offers it; the override stays.
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax", FORM | {"name_en": "Taxes and fees",
                                                                                 "capacity": "3"})
    assert status == 303
    assert service_events(console, "acme-main")[-1]["names"]["en"] == "Taxes and fees"
    assert service_events(console, "acme-east")[-1]["names"]["en"] == "Taxes and fees"
    svc = {s["id"]: s for s in (await api(session, "GET", f"{console.url}{V}/branches/acme-east/services", 200,
                                          headers=sup))["services"]}
    assert svc["tax"]["capacity"] == 5
    _, html, _ = await admin.get("/console/orgs/acme/catalogue")
    assert "Taxes and fees" in html and "acme east, acme main" in html
    # Withdrawn from one branch: the kiosk's config says so, booking and the public list drop it.
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-east",
                                    {"slot_minutes-acme-east": "30", "capacity-acme-east": "5"})
    assert status == 303
    assert service_events(console, "acme-east")[-1]["enabled"] is False
    public = await api(session, "GET", f"{console.url}{V}/public/branches/acme-east", 200)
    assert "tax" not in [s["id"] for s in public["services"]]
    got = await api(session, "GET", f"{console.url}{V}/public/branches/acme-east/availability?service=tax"
                    "&date=2030-01-08")
    assert got["error"]["code"] == "not_bookable"
    _, html, _ = await Browser(console.url).get("/book/acme-east")
    assert "Taxes" not in html
    actions = [r[0] for r in db(console).execute("SELECT action FROM audit WHERE action LIKE 'catalogue.%'")]
    assert actions == ["catalogue.create", "catalogue.offer", "catalogue.offer", "catalogue.update", "catalogue.offer"]


async def test_catalogue_forms_refuse_bad_input_and_letter_clashes(console):
    admin = await console.login("admin@acme.test", "fr")
    status, html, _ = await admin.post("/console/orgs/acme/catalogue", FORM | {"letter": "7", "name_en": "",
                                                                                "slot_minutes": "2", "icon": "rocket"})
    assert status == 400 and html.count('aria-invalid="true"') == 4 and '<html lang="fr">' in html
    status, _, _ = await admin.post("/console/orgs/acme/catalogue", FORM | {"service_id": "Bad Id!"})
    assert status == 400
    # The seeded "general" service of acme-main has the letter A: offering another A there is refused.
    await admin.post("/console/orgs/acme/catalogue", FORM | {"service_id": "alpha", "letter": "A"})
    status, html, _ = await admin.post("/console/orgs/acme/catalogue/alpha/offers/acme-main", {"offered": "yes"})
    assert status == 400 and 'href="#offered-acme-main"' in html
    assert [s["id"] for s in service_events(console, "acme-main")].count("alpha") == 0
    status, _, _ = await admin.post("/console/orgs/acme/catalogue", FORM)
    status, html, _ = await admin.post("/console/orgs/acme/catalogue", FORM)
    assert status == 400 and 'href="#service_id"' in html  # the id exists
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-main",
                                    {"offered": "yes", "capacity-acme-main": "-1"})
    assert status == 400
    assert (await admin.get("/console/orgs/acme/catalogue/nothing"))[0] == 404
    # the edit form of a service that is not in the catalogue creates nothing
    assert (await admin.post("/console/orgs/acme/catalogue/nothing", FORM))[0] == 404
    assert (await admin.post("/console/orgs/acme/catalogue/Bad%20Id!", FORM))[0] == 404
    with db(console) as c:
        assert c.execute("SELECT count(*) FROM catalogue WHERE id NOT IN ('tax', 'alpha')").fetchone()[0] == 0


async def test_only_the_orgs_admins_use_the_catalogue(console):
    admin = await console.login("admin@acme.test")
    await admin.post("/console/orgs/acme/catalogue", FORM)
    for who in ("manager@acme.test", "staff@acme.test"):
        b = await console.login(who, "sw")
        for path in ("/console/orgs/acme/catalogue", "/console/orgs/acme/catalogue/tax"):
            status, html, _ = await b.get(path)
            assert status == 403 and '<html lang="sw">' in html, (who, path)
        assert (await b.post("/console/orgs/acme/catalogue", FORM | {"service_id": "x"}))[0] == 403
    beta = await console.login("admin@beta.test", "es")
    status, html, _ = await beta.get("/console/orgs/acme/catalogue")
    assert status == 403 and h1(html) == "No permitido"
    assert (await beta.post("/console/orgs/acme/catalogue/tax/offers/acme-main", {"offered": "yes"}))[0] == 403
    # acme's admin cannot offer acme's service in beta's branch, nor read beta's catalogue
    assert (await admin.post("/console/orgs/acme/catalogue/tax/offers/beta-main", {"offered": "yes"}))[0] == 404
    assert (await admin.get("/console/orgs/beta/catalogue"))[0] == 403
    assert service_events(console, "beta-main")[-1]["id"] == "general"
    root = await console.login("root@hq.test")
    status, html, _ = await root.get("/console/orgs/acme/catalogue")
    assert status == 200 and "Taxes" in html


def target_of(srv: Server, branch: str, service: str) -> int | None:
    with db(srv) as c:
        return c.execute("SELECT target_wait_minutes FROM services WHERE branch_id = ? AND id = ?",
                         (branch, service)).fetchone()[0]


async def test_target_wait_is_defined_once_overridden_per_branch_and_validated(console, session):
    admin = await console.login("admin@acme.test", "fr")
    status, html, _ = await admin.post("/console/orgs/acme/catalogue", FORM | {"target_wait_minutes": "0"})
    assert status == 400 and 'href="#target_wait_minutes"' in html and 'value="0"' in html  # typed value kept
    status, _, _ = await admin.post("/console/orgs/acme/catalogue", FORM | {"target_wait_minutes": "20"})
    assert status == 303
    for branch in ("acme-main", "acme-east"):
        status, _, _ = await admin.post(f"/console/orgs/acme/catalogue/tax/offers/{branch}", {"offered": "yes"})
        assert status == 303
    # the east branch's own target; a bad one is refused and what was typed stays in its form
    status, html, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-east",
                                       {"offered": "yes", "capacity-acme-east": "4", "target_wait_minutes-acme-east": "999"})
    assert status == 400 and 'href="#target_wait_minutes-acme-east"' in html
    assert re.search(r'id="capacity-acme-east"[^>]*value="4"', html), "the typed capacity is kept"
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-east",
                                    {"offered": "yes", "target_wait_minutes-acme-east": "5"})
    assert status == 303
    assert (target_of(console, "acme-main", "tax"), target_of(console, "acme-east", "tax")) == (20, 5)
    # the definition's target reaches the branches without an override; the override stays
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax", FORM | {"target_wait_minutes": "12"})
    assert status == 303
    assert (target_of(console, "acme-main", "tax"), target_of(console, "acme-east", "tax")) == (12, 5)
    _, html, _ = await admin.get("/console/orgs/acme/catalogue")
    assert "12 min" in html
    # emptied: the HQ-wide target_wait_s (NULL in the branch's service)
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/tax", FORM | {"target_wait_minutes": ""})
    assert status == 303 and target_of(console, "acme-main", "tax") is None
    # the JSON API takes the same field, and refuses a bad one
    sup = console.h("super")
    got = await api(session, "PUT", f"{console.url}{V}/orgs/acme/catalogue/tax/offers/acme-main", 200, headers=sup,
                    json={"target_wait_minutes": 30})
    assert got["target_wait_minutes"] == 30 and target_of(console, "acme-main", "tax") == 30
    for bad in (0, 241, "10", True):
        await api(session, "PUT", f"{console.url}{V}/orgs/acme/catalogue/tax", 400, headers=sup,
                  json={"letter": "T", "names": {"en": "Taxes"}, "target_wait_minutes": bad})
    svc = {s["id"]: s for s in (await api(session, "GET", f"{console.url}{V}/branches/acme-east/services", 200,
                                          headers=sup))["services"]}
    assert svc["tax"]["target_wait_minutes"] == 5
    # it is HQ's own figure: the branch's config.service event does not carry it
    assert "target_wait_minutes" not in service_events(console, "acme-east")[-1]


async def test_a_branch_manager_sets_the_branchs_target_waits(console):
    """On the branch's settings page: the override of a catalogue service's offer, or the own
    target of a service made by the API; empty falls back; bad input keeps what was typed."""
    admin = await console.login("admin@acme.test")
    await admin.post("/console/orgs/acme/catalogue", FORM | {"target_wait_minutes": "20"})
    await admin.post("/console/orgs/acme/catalogue/tax/offers/acme-main", {"offered": "yes"})
    manager = await console.login("manager@acme.test")
    status, html, _ = await manager.get("/console/branches/acme-main")
    assert status == 200 and 'id="target_tax"' in html and 'id="target_general"' in html
    assert "Empty: 20 min" in html and "Empty: 15 min" in html  # the catalogue's, HQ's
    status, html, _ = await manager.post("/console/branches/acme-main/targets",
                                         {"target_tax": "7", "target_general": "abc"})
    assert status == 400 and 'href="#target_general"' in html and re.search(r'id="target_tax"[^>]*value="7"', html)
    assert target_of(console, "acme-main", "tax") == 20  # nothing saved
    status, _, location = await manager.post("/console/branches/acme-main/targets",
                                             {"target_tax": "7", "target_general": "25"})
    assert (status, location) == (303, "/console/branches/acme-main?done=targets")
    assert (target_of(console, "acme-main", "tax"), target_of(console, "acme-main", "general")) == (7, 25)
    with db(console) as c:
        assert c.execute("SELECT target_wait_minutes FROM catalogue_offers WHERE branch_id = 'acme-main'"
                         " AND service_id = 'tax'").fetchone()[0] == 7
        assert c.execute("SELECT detail FROM audit WHERE action = 'branch.targets'").fetchone()[0] == "general=25, tax=7"
    # a change of the catalogue's definition keeps the branch's override
    await admin.post("/console/orgs/acme/catalogue/tax", FORM | {"target_wait_minutes": "30"})
    assert target_of(console, "acme-main", "tax") == 7
    await manager.post("/console/branches/acme-main/targets", {"target_tax": "", "target_general": ""})
    assert (target_of(console, "acme-main", "tax"), target_of(console, "acme-main", "general")) == (30, None)
    staff = await console.login("staff@acme.test")
    assert (await staff.post("/console/branches/acme-main/targets", {"target_general": "5"}))[0] == 403
    other = await console.login("manager@beta.test")
    assert (await other.post("/console/branches/acme-main/targets", {"target_general": "5"}))[0] == 403
    assert target_of(console, "acme-main", "general") is None


async def test_services_made_by_the_api_are_listed_and_can_be_taken_into_the_catalogue(console):
    """An org whose branches' services came through the API saw "The catalogue is empty." and no
    way on: the page lists them, and "Add it" fills the form from the branch's service."""
    admin = await console.login("admin@acme.test")
    status, html, _ = await admin.get("/console/orgs/acme/catalogue")
    assert status == 200 and '<li data-service="general">' in html and "acme main" in html
    assert 'href="/console/orgs/acme/catalogue?take=general#add"' in html
    status, html, _ = await admin.get("/console/orgs/acme/catalogue?take=general")
    assert re.search(r'id="service_id"[^>]*value="general"', html) and re.search(r'id="letter"[^>]*value="A"', html)
    assert re.search(r'id="name_en"[^>]*value="General"', html)
    form = {"service_id": "general", "letter": "A", "name_en": "General", "slot_minutes": "15", "capacity": "3",
            "icon": "", "bookable": "yes", "target_wait_minutes": ""}
    status, _, _ = await admin.post("/console/orgs/acme/catalogue", form)
    assert status == 303
    status, _, _ = await admin.post("/console/orgs/acme/catalogue/general/offers/acme-main", {"offered": "yes"})
    assert status == 303
    _, html, _ = await admin.get("/console/orgs/acme/catalogue")
    assert '<li data-service="general">' not in html and 'data-service="general"' in html  # now in the table
    # an unknown or another organization's service pre-fills nothing
    _, html, _ = await admin.get("/console/orgs/acme/catalogue?take=nothing")
    assert not re.search(r'id="service_id"[^>]*value="nothing"', html)
