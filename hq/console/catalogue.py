"""The service catalogue of an organization in the console (org admins and super admins):
/console/orgs/{org}/catalogue lists and creates services, /console/orgs/{org}/catalogue/{service}
edits one and offers it in the organization's branches with local overrides (docs/console.md).

Writes go through hq.catalogue.Catalogue, which writes each offer through to the branch's own
service and its signed config.service event, in the same transaction as the audit entry.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from appliance.config import SERVICE_ICONS
from hq import catalogue, tenants
from hq.auth import Principal
from hq.console import audit
from hq.console.views import ADMINS, _text, crender, page
from hq.errors import ApiError
from hq.pages.app import PageError, redirect
from hq.pages.i18n import LANGUAGES, N_
from hq.web import hq_of

ICON_NAMES = {"": N_("Chosen by the kiosk"), "person": N_("Person"), "money": N_("Money"),
              "document": N_("Document"), "id-card": N_("Identity card"), "health": N_("Health"),
              "info": N_("Information"), "mail": N_("Mail"), "calendar": N_("Calendar")}
assert set(ICON_NAMES) == {"", *SERVICE_ICONS}
TARGET_ERROR = N_("Enter a target wait from 1 to 240 minutes, or leave it empty.")
LETTER_TAKEN = N_("Another service of a branch that offers it uses this letter: change one of the two letters first.")


def _org(request: web.Request, p: Principal) -> str:
    """The organization of the URL if ``p`` administers it; else the 403 page (exists or not)."""
    org_id = request.match_info["org"]
    if p.role != "super_admin" and org_id != p.org_id:
        raise PageError(403, N_("This belongs to another organization."))
    return org_id


async def _org_row(request: web.Request, org_id: str) -> dict[str, Any]:
    row = await hq_of(request).db.read(lambda c: c.execute("SELECT * FROM orgs WHERE id = ?", (org_id,)).fetchone())
    if row is None:
        raise PageError(404, N_("This page does not exist."))
    return dict(row)


def _entry_form(form: Any) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The definition form: (values to show again, errors by field, body for hq.catalogue)."""
    values = {"service_id": _text(form, "service_id", 40).lower(), "letter": _text(form, "letter", 1).upper(),
              "slot_minutes": _text(form, "slot_minutes", 4), "capacity": _text(form, "capacity", 6),
              "icon": _text(form, "icon", 20), "bookable": "yes" if form.get("bookable") == "yes" else "",
              "target_wait_minutes": _text(form, "target_wait_minutes", 4)}
    values |= {f"name_{lang}": _text(form, f"name_{lang}", 120) for lang in LANGUAGES}
    errors: dict[str, str] = {}
    if not (len(values["letter"]) == 1 and "A" <= values["letter"] <= "Z"):
        errors["letter"] = N_("Enter one capital letter, A to Z.")
    if not values["name_en"]:
        errors["name_en"] = N_("Enter the service's name in English.")
    slot = int(values["slot_minutes"]) if values["slot_minutes"].isdigit() else -1
    if not 5 <= slot <= 480:
        errors["slot_minutes"] = N_("Enter a slot length from 5 to 480 minutes.")
    cap = int(values["capacity"]) if values["capacity"].isdigit() else -1
    if not 0 <= cap <= 10000:
        errors["capacity"] = N_("Enter how many people one slot takes, from 0 to 10000.")
    if values["icon"] not in ICON_NAMES:
        errors["icon"] = N_("Choose a pictogram from the list.")
    target = _target(values["target_wait_minutes"])
    if target is False:
        errors["target_wait_minutes"] = TARGET_ERROR
    body = {"letter": values["letter"], "names": {lang: values[f"name_{lang}"] for lang in LANGUAGES
                                                  if values[f"name_{lang}"]},
            "slot_minutes": slot, "capacity": cap, "icon": values["icon"], "bookable": values["bookable"] == "yes",
            "target_wait_minutes": target if target is not False else None}
    return values, errors, body


def _target(raw: str) -> int | None | bool:
    """A target wait typed in minutes: None when empty, False when not 1-240."""
    if raw == "":
        return None
    lo, hi = tenants.TARGET_MINUTES
    return int(raw) if raw.isdigit() and lo <= int(raw) <= hi else False


def _icons(request: web.Request) -> list[tuple[str, str]]:
    from hq.pages.app import T
    t = request[T]
    return [(k, t(v)) for k, v in ICON_NAMES.items()]


async def _write(request: web.Request, p: Principal, org_id: str, action: str, target: str, detail: str,
                 fn: Any) -> str | None:
    """Run ``fn(Catalogue)`` with its audit entry in one transaction; the refusal's code, if any."""
    hq = hq_of(request)
    now = hq.now()

    def write(c: sqlite3.Connection) -> str | None:
        fn(catalogue.Catalogue(tenants.Writer(c, hq.key, hq.now_ms()), org_id))
        audit.record(c, p, org_id, action, target, detail, now)
        return None
    try:
        return await hq.db.write(write)
    except ApiError as err:
        if err.status in (400, 409):
            return err.code
        raise


@page(ADMINS)
async def catalogue_page(request: web.Request, p: Principal) -> web.Response:
    org_id = _org(request, p)
    org = await _org_row(request, org_id)
    values: dict[str, str] = {"slot_minutes": "15", "capacity": "1", "bookable": "yes", "icon": "",
                              "target_wait_minutes": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.post()
        values, errors, body = _entry_form(form)
        try:
            tenants.check_id(values["service_id"], "service id")
        except ApiError:
            errors["service_id"] = N_("Use lowercase letters, digits, - and _ (up to 40).")
        if not errors:
            sid = values["service_id"]
            refused = await _write(request, p, org_id, "catalogue.create", f"{org_id}/{sid}",
                                   f"letter={body['letter']}, slot={body['slot_minutes']}, capacity={body['capacity']}",
                                   lambda cat: cat.create(sid, body))
            if refused is None:
                return redirect(f"/console/orgs/{org_id}/catalogue/{sid}?done=created")
            errors["service_id"] = N_("A service with this id is already in the catalogue.")
    services, outside = await hq_of(request).db.read(lambda c: (catalogue.entries(c, org_id),
                                                                 catalogue.outside(c, org_id)))
    take = next((s for s in outside if s["id"] == request.query.get("take")), None)
    if take is not None and request.method == "GET":  # "Add it to the catalogue": the form starts from it
        values = {"service_id": take["id"], "letter": take["letter"], "slot_minutes": str(take["slot_minutes"]),
                  "capacity": str(take["capacity"]), "icon": take["icon"], "bookable": "yes" if take["bookable"] else "",
                  "target_wait_minutes": str(take["target_wait_minutes"] or "")}
        values |= {f"name_{lang}": take["names"].get(lang, "") for lang in LANGUAGES}
    return crender(request, "console/catalogue.html", status=400 if errors else 200, org=org, services=services,
                   outside=outside, taking=take["id"] if take else "",
                   values=values, errors=errors, icons=_icons(request), languages=LANGUAGES,
                   done=request.query.get("done", ""), default_target_s=hq_of(request).settings.target_wait_s)


async def _service_page(request: web.Request, p: Principal, org_id: str, sid: str, *, errors: dict[str, str] | None = None,
                        values: dict[str, str] | None = None,
                        offer_values: dict[str, str] | None = None) -> web.Response:
    """The service's page; ``offer_values``: what was typed in an offer form refused, shown again."""
    hq = hq_of(request)

    def load(c: sqlite3.Connection) -> dict[str, Any] | None:
        row = c.execute("SELECT * FROM catalogue WHERE org_id = ? AND id = ?", (org_id, sid)).fetchone()
        if row is None:
            return None
        branches = [dict(r) for r in c.execute("SELECT id, name FROM branches WHERE org_id = ? ORDER BY name",
                                               (org_id,))]
        return {"entry": catalogue.entry_json(row), "offers": catalogue.offers(c, org_id, sid), "branches": branches}
    data = await hq.db.read(load)
    if data is None:
        raise PageError(404, N_("This page does not exist."))
    e = data["entry"]
    if values is None:
        values = {"letter": e["letter"], "slot_minutes": str(e["slot_minutes"]), "capacity": str(e["capacity"]),
                  "icon": e["icon"], "bookable": "yes" if e["bookable"] else "",
                  "target_wait_minutes": "" if e["target_wait_minutes"] is None else str(e["target_wait_minutes"])}
        values |= {f"name_{lang}": e["names"].get(lang, "") for lang in LANGUAGES}
    org = await _org_row(request, org_id)
    return crender(request, "console/catalogue_service.html", status=400 if errors else 200, org=org,
                   entry=e, offers=data["offers"], branches=data["branches"], values=values, errors=errors or {},
                   icons=_icons(request), languages=LANGUAGES, done=request.query.get("done", ""),
                   offer_values=offer_values or {}, default_target_s=hq.settings.target_wait_s)


@page(ADMINS)
async def service_page(request: web.Request, p: Principal) -> web.Response:
    org_id = _org(request, p)
    sid = request.match_info["service"]
    if request.method == "POST":
        values, errors, body = _entry_form(await request.post())
        if errors:
            return await _service_page(request, p, org_id, sid, errors=errors, values=values)
        try:
            refused = await _write(request, p, org_id, "catalogue.update", f"{org_id}/{sid}",
                                   f"letter={body['letter']}, slot={body['slot_minutes']}, capacity={body['capacity']}",
                                   lambda cat: cat.update(sid, body))
        except ApiError as err:  # not in the catalogue
            raise PageError(404, N_("This page does not exist.")) from err
        if refused:
            return await _service_page(request, p, org_id, sid, values=values, errors={"letter": LETTER_TAKEN})
        return redirect(f"/console/orgs/{org_id}/catalogue/{sid}?done=saved")
    return await _service_page(request, p, org_id, sid)


@page(ADMINS)
async def offer(request: web.Request, p: Principal) -> web.Response:
    """POST /console/orgs/{org}/catalogue/{service}/offers/{branch}: offer, change or withdraw."""
    org_id = _org(request, p)
    sid, branch_id = request.match_info["service"], request.match_info["branch"]
    form = await request.post()
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"enabled": form.get("offered") == "yes"}
    typed: dict[str, str] = {"offered-" + branch_id: "yes" if body["enabled"] else ""}
    bounds = {"slot_minutes": (5, 480), "capacity": (0, 10000), "target_wait_minutes": tenants.TARGET_MINUTES}
    for k, msg in (("slot_minutes", N_("Enter a slot length from 5 to 480 minutes, or leave it empty.")),
                   ("capacity", N_("Enter a capacity from 0 to 10000, or leave it empty.")),
                   ("target_wait_minutes", TARGET_ERROR)):
        raw = typed[f"{k}-{branch_id}"] = _text(form, f"{k}-{branch_id}", 6)
        if raw == "":
            body[k] = None
        elif raw.isdigit() and bounds[k][0] <= int(raw) <= bounds[k][1]:
            body[k] = int(raw)
        else:
            errors[f"{k}-{branch_id}"] = msg
    if errors:  # the branch's form shows what was typed, with the errors
        return await _service_page(request, p, org_id, sid, errors=errors, offer_values=typed)
    try:
        refused = await _write(request, p, org_id, "catalogue.offer", f"{branch_id}/{sid}",
                               ", ".join(f"{k}={v}" for k, v in body.items()),
                               lambda cat: cat.offer(sid, branch_id, body))
    except ApiError as err:  # an unknown service, or a branch of another organization
        raise PageError(404, N_("This page does not exist.")) from err
    if refused == "letter_taken":
        return await _service_page(request, p, org_id, sid, errors={f"offered-{branch_id}": LETTER_TAKEN},
                                   offer_values=typed)
    return redirect(f"/console/orgs/{org_id}/catalogue/{sid}?done=offer#offers")


def add_routes(app: web.Application) -> None:
    r = app.router
    for path, handler in (("/console/orgs/{org}/catalogue", catalogue_page),
                          ("/console/orgs/{org}/catalogue/{service}", service_page)):
        r.add_get(path, handler)
        r.add_post(path, handler)
    r.add_post("/console/orgs/{org}/catalogue/{service}/offers/{branch}", offer)
