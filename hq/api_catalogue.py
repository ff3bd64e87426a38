"""The service catalogue of an organization as JSON (org admins and super admins): the same
writes as the console's catalogue pages (hq/catalogue.py), each with its audit entry (detail API)."""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from hq import catalogue, tenants
from hq.auth import Principal, check_org
from hq.console import audit
from hq.web import authed, hq_of, jresp, read_json


@authed
async def list_catalogue(request: web.Request, p: Principal) -> web.Response:
    org_id = request.match_info["org"]
    check_org(p, org_id, "admin")

    def load(c: sqlite3.Connection) -> dict[str, Any]:
        tenants.get_org(c, org_id)
        return {"services": [e | {"offers": list(catalogue.offers(c, org_id, e["id"]).values())}
                             for e in catalogue.entries(c, org_id)]}
    return jresp(await hq_of(request).db.read(load))


async def _write(request: web.Request, p: Principal, action: str, target: str, fn: Any) -> web.Response:
    org_id = request.match_info["org"]
    check_org(p, org_id, "admin")
    body = await read_json(request)
    hq = hq_of(request)

    def write(c: sqlite3.Connection) -> dict[str, Any]:
        out = fn(catalogue.Catalogue(tenants.Writer(c, hq.key, hq.now_ms()), org_id), body)
        audit.record(c, p, org_id, action, target, "API", hq.now())
        return out  # type: ignore[no-any-return]
    return jresp(await hq.db.write(write))


@authed
async def put_entry(request: web.Request, p: Principal) -> web.Response:
    sid = request.match_info["service"]
    return await _write(request, p, "catalogue.update", f"{request.match_info['org']}/{sid}",
                        lambda cat, body: cat.put(sid, body))


@authed
async def put_offer(request: web.Request, p: Principal) -> web.Response:
    sid, branch = request.match_info["service"], request.match_info["branch"]
    return await _write(request, p, "catalogue.offer", f"{branch}/{sid}", lambda cat, body: cat.offer(sid, branch, body))
