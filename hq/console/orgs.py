"""Organizations, /console/orgs (super admins): the list with their branches and admins, and a
new organization. Its admins are created on the accounts page (role "Organization admin")."""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from hq import tenants
from hq.auth import Principal
from hq.console import audit
from hq.console.views import _text, crender, page
from hq.errors import ApiError
from hq.pages.app import redirect
from hq.pages.i18n import N_
from hq.web import hq_of


def _load(c: sqlite3.Connection) -> list[dict[str, Any]]:
    out = []
    for o in c.execute("SELECT * FROM orgs ORDER BY name, id").fetchall():
        out.append({"id": o["id"], "name": o["name"],
                    "branches": [r[0] for r in c.execute("SELECT name FROM branches WHERE org_id = ? ORDER BY name",
                                                         (o["id"],))],
                    "admins": [r[0] for r in c.execute("SELECT email FROM users WHERE org_id = ? AND role = 'org_admin'"
                                                       " ORDER BY email", (o["id"],))]})
    return out


@page(("super_admin",))
async def orgs_page(request: web.Request, p: Principal) -> web.Response:
    hq = hq_of(request)
    values, errors = {"id": "", "name": ""}, {}
    if request.method == "POST":
        form = await request.post()
        values = {"id": _text(form, "id", 40).lower(), "name": _text(form, "name", 120)}
        try:
            tenants.check_id(values["id"], "id")
        except ApiError:
            errors["id"] = N_("Use lowercase letters, digits, - and _ (up to 40).")
        if not values["name"]:
            errors["name"] = N_("Enter the organization's name.")
        if not errors:
            now = hq.now()

            def create(c: sqlite3.Connection) -> bool:
                try:
                    tenants.Writer(c, hq.key, hq.now_ms()).create_org(values)
                except ApiError:
                    return False
                audit.record(c, p, values["id"], "org.create", values["id"], values["name"], now)
                return True
            if await hq.db.write(create):
                return redirect("/console/orgs?done=created")
            errors["id"] = N_("An organization with this id exists.")
    return crender(request, "console/orgs.html", status=400 if errors else 200, orgs=await hq.db.read(_load),
                   values=values, errors=errors, done=request.query.get("done", ""))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/orgs", orgs_page)
    app.router.add_post("/console/orgs", orgs_page)
