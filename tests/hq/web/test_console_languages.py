"""The console's branch settings take the display's notices and the counters' names in each of
the branch's languages and send them as the config events the branch folds (real HQ, real
HTTP, no browser; the browser sweep covers the page's accessibility)."""

from __future__ import annotations

import json

from hqtest import PASSWORD, Server, api
from webtest import Browser, db

BRANCH = "/console/branches/acme-main"


def last_payload(srv: Server, type_: str) -> dict:
    with db(srv) as c:
        rows = c.execute("SELECT envelope FROM outbox WHERE branch_id = 'acme-main' AND type = ? ORDER BY seq",
                         (type_,)).fetchall()
    return json.loads(rows[-1]["envelope"])["payload"]


async def login(srv: Server, email: str, language: str | None = None) -> Browser:
    b = Browser(srv.url, language)
    status, _, location = await b.post("/console/login", {"email": email, "password": PASSWORD})
    assert (status, location) == (303, "/console")
    return b


async def test_notices_and_counter_names_per_language_from_the_console(server: Server, session) -> None:
    await api(session, "PATCH", f"{server.url}/api/v1/branches/acme-main", 200, headers=server.h("acme-admin"),
              json={"languages": ["en", "fr", "rw", "sw", "es"], "notices": ["Welcome"]})
    manager = await login(server, "manager@acme.test", "fr")
    try:
        status, html, _ = await manager.get(BRANCH)
        # A list of notices starts every language's box; each counter has a box per language.
        # language names in the page's language ("anglais", not "English")
        assert status == 200 and "Annonces en kinyarwanda" in html and "Annonces en anglais" in html
        assert html.count(">Welcome</textarea>") == 5
        assert 'name="name_c1_sw"' in html and "Counter 1 en swahili" in html
        notices = {"notices_en": "Keep your ticket.\n\nPayments close at 15:00.", "notices_fr": "Gardez votre ticket.",
                   "notices_rw": "Mubike itike yanyu.", "notices_sw": "", "notices_es": "Conserve su número."}
        status, _, location = await manager.post(f"{BRANCH}/notices", notices)
        assert (status, location) == (303, f"{BRANCH}?done=notices")
        sent = last_payload(server, "config.branch")
        assert sent["notices"] == [] and sent["notices_by_language"] == {
            "en": ["Keep your ticket.", "Payments close at 15:00."], "fr": ["Gardez votre ticket."],
            "rw": ["Mubike itike yanyu."], "es": ["Conserve su número."]}  # sw: none, the display shows English
        names = {"name_c1_en": "Counter 1", "name_c1_fr": "Guichet 1", "name_c1_rw": "Konteri 1",
                 "name_c1_sw": "Dirisha 1", "name_c1_es": "Ventanilla 1"}
        status, _, location = await manager.post(f"{BRANCH}/counter-names", names)
        assert (status, location) == (303, f"{BRANCH}?done=counters")
        sent = last_payload(server, "config.counter")
        assert sent["id"] == "c1" and sent["names"] == {k.rsplit("_", 1)[1]: v for k, v in names.items()}
        assert sent["services"] == ["general"] and sent["name"] == "Counter 1"  # the rest unchanged
        status, html, _ = await manager.get(f"{BRANCH}?done=counters")
        assert 'value="Ventanilla 1"' in html and "Les noms des guichets ont été enregistrés" in html
        # Too long: the page again, with the error at the field, nothing sent.
        before = last_payload(server, "config.branch")
        status, html, _ = await manager.post(f"{BRANCH}/notices", {"notices_fr": "x" * 201})
        assert status == 400 and 'aria-invalid="true"' in html and "au plus 200 caractères" in html
        assert last_payload(server, "config.branch") == before
        status, html, _ = await manager.post(f"{BRANCH}/counter-names", {"name_c1_fr": "x" * 121})
        assert status == 400 and 'id="name_c1_fr-error"' in html
        with db(server) as c:
            actions = [r["action"] for r in c.execute("SELECT action FROM audit")]
        assert "branch.notices" in actions and "branch.counter_names" in actions
    finally:
        await manager.close()
    # Staff of the branch and other tenants may not change them.
    for email in ("staff@acme.test", "admin@beta.test"):
        other = await login(server, email)
        try:
            assert (await other.post(f"{BRANCH}/notices", {"notices_en": "Hacked"}))[0] == 403
            assert (await other.post(f"{BRANCH}/counter-names", {"name_c1_en": "Hacked"}))[0] == 403
        finally:
            await other.close()
