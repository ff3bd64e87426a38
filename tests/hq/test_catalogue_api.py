"""The service catalogue as JSON on a real HQ: an org admin defines a service and offers it in
its branch (the branch's signed config.service follows); a withdrawal; managers get 403, another
organization 404; bad bodies 400."""

from __future__ import annotations

import json
from typing import Any

from hqtest import Server, api, connect_db

V = "/api/v1"
def db(srv: Server) -> Any:
    return connect_db(srv)


TAX = {"letter": "T", "names": {"en": "Taxes", "fr": "Impôts"}, "slot_minutes": 20, "capacity": 2, "icon": "money"}


async def test_an_org_admin_defines_offers_and_withdraws_a_service_by_api(server: Server, session):
    admin = server.h("acme-admin")
    entry = await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax", 200, headers=admin, json=TAX)
    assert entry["letter"] == "T" and entry["icon"] == "money"
    offer = await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax/offers/acme-main", 200, headers=admin,
                      json={"capacity": 5})
    assert offer == {"branch": "acme-main", "service": "tax", "enabled": True, "slot_minutes": None, "capacity": 5,
                     "target_wait_minutes": None}
    services = {s["id"]: s for s in (await api(session, "GET", f"{server.url}{V}/branches/acme-main/services", 200,
                                               headers=admin))["services"]}
    assert (services["tax"]["slot_minutes"], services["tax"]["capacity"]) == (20, 5)
    listed = await api(session, "GET", f"{server.url}{V}/orgs/acme/catalogue", 200, headers=admin)
    assert [(s["id"], s["offered_in"], len(s["offers"])) for s in listed["services"]] == [("tax", ["acme main"], 1)]
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax/offers/acme-main", 200, headers=admin,
              json={"enabled": False})
    with db(server) as c:
        sent = [json.loads(r[0])["payload"] for r in c.execute(
            "SELECT envelope FROM outbox WHERE branch_id = 'acme-main' AND type = 'config.service' ORDER BY seq")]
        audit = [r[0] for r in c.execute("SELECT detail FROM audit WHERE action LIKE 'catalogue.%'")]
    assert sent[-1]["id"] == "tax" and sent[-1]["enabled"] is False and audit == ["API"] * 3


async def test_catalogue_api_refuses_other_roles_tenants_and_bad_bodies(server: Server, session):
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax", 200, headers=server.h("acme-admin"), json=TAX)
    got = await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax", 403, headers=server.h("acme-manager"),
                    json=TAX)
    assert got["error"]["code"] == "forbidden"
    await api(session, "GET", f"{server.url}{V}/orgs/acme/catalogue", 404, headers=server.h("beta-admin"))
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax/offers/acme-main", 404,
              headers=server.h("beta-admin"), json={})
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax/offers/beta-main", 404,
              headers=server.h("acme-admin"), json={})
    for body in ({"letter": "t", "names": {"en": "x"}}, {"letter": "T"}, {**TAX, "icon": "rocket"},
                 {**TAX, "slot_minutes": 1}, [1, 2]):
        await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax", 400, headers=server.h("acme-admin"),
                  json=body)
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/Bad!", 400, headers=server.h("acme-admin"), json=TAX)
    await api(session, "PUT", f"{server.url}{V}/orgs/acme/catalogue/tax/offers/acme-main", 400,
              headers=server.h("acme-admin"), json={"capacity": -1})
    await api(session, "PUT", f"{server.url}{V}/orgs/nope/catalogue/tax", 404, headers=server.h("super"), json=TAX)
