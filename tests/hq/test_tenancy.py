"""Roles and tenant isolation on a real server: nobody reaches another org's data (403/404)."""

from __future__ import annotations

import pytest

from hqtest import PASSWORD, api

V = "/api/v1"
# (method, path into the OTHER tenant "beta", body)
FOREIGN = [
    ("GET", "/orgs/beta", None),
    ("GET", "/orgs/beta/branches", None),
    ("POST", "/orgs/beta/branches", {"id": "beta-x", "name": "x", "timezone": "UTC"}),
    ("GET", "/branches/beta-main", None),
    ("PATCH", "/branches/beta-main", {"name": "hijacked"}),
    ("GET", "/branches/beta-main/services", None),
    ("PUT", "/branches/beta-main/services/general", {"letter": "A", "names": {"en": "Hijacked"}}),
    ("GET", "/branches/beta-main/counters", None),
    ("PUT", "/branches/beta-main/counters/c1", {"name": "x", "services": []}),
    ("GET", "/branches/beta-main/hours", None),
    ("PUT", "/branches/beta-main/hours", {"weekdays": {}}),
    ("POST", "/branches/beta-main/closed-days", {"day": "2030-01-09"}),
    ("DELETE", "/branches/beta-main/closed-days/2030-01-09", None),
    ("GET", "/branches/beta-main/devices", None),
    ("POST", "/branches/beta-main/devices", {"id": "k9", "role": "kiosk", "public_key": "00" * 32}),
    ("GET", "/branches/beta-main/staff", None),
    ("PUT", "/branches/beta-main/staff/s1", {"name": "x", "pin": "1234"}),
    ("GET", "/branches/beta-main/outbox", None),
    ("GET", "/branches/beta-main/bookings?date=2030-01-07", None),
    ("GET", "/branches/beta-main/live", None),
    ("GET", "/branches/beta-main/analytics", None),
    ("POST", "/users", {"email": "x@beta.test", "password": "0123456789ab", "role": "staff", "branch": "beta-main"}),
    ("POST", "/users", {"email": "y@beta.test", "password": "0123456789ab", "role": "org_admin", "org": "beta"}),
]
ROLES = ["acme-admin", "acme-manager", "acme-staff"]


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("method,path,body", FOREIGN, ids=[f"{m} {p}" for m, p, _ in FOREIGN])
async def test_no_role_reaches_another_tenant(server, session, who, method, path, body):
    async with session.request(method, f"{server.url}{V}{path}", json=body, headers=server.h(who)) as resp:
        assert resp.status in (403, 404), await resp.text()
    # and nothing changed over there
    branch = await api(session, "GET", f"{server.url}{V}/branches/beta-main", 200, headers=server.h("super"))
    assert branch["name"] == "beta main" and branch["services"][0]["names"] == {"en": "General", "de": "Allgemein"}


async def test_lists_show_only_the_callers_tenant(server, session):
    orgs = await api(session, "GET", f"{server.url}{V}/orgs", 200, headers=server.h("acme-admin"))
    assert [o["id"] for o in orgs["orgs"]] == ["acme"]
    users = await api(session, "GET", f"{server.url}{V}/users", 200, headers=server.h("acme-admin"))
    assert {u["email"].split("@")[1] for u in users["users"]} == {"acme.test"}
    every = await api(session, "GET", f"{server.url}{V}/orgs", 200, headers=server.h("super"))
    assert [o["id"] for o in every["orgs"]] == ["acme", "beta"]


@pytest.mark.parametrize("who,method,path,body,status", [
    ("acme-staff", "PUT", "/branches/acme-main/services/general", {"letter": "A", "names": {"en": "x"}}, 403),
    ("acme-staff", "PUT", "/branches/acme-main/hours", {"weekdays": {}}, 403),
    ("acme-manager", "POST", "/branches/acme-main/devices", {"id": "k1", "role": "kiosk", "public_key": "00" * 32}, 403),
    ("acme-manager", "PATCH", "/branches/acme-main", {"name": "x"}, 403),
    ("acme-manager", "POST", "/orgs", {"id": "gamma", "name": "G"}, 403),
    ("acme-admin", "POST", "/orgs", {"id": "gamma", "name": "G"}, 403),
    ("acme-manager", "GET", "/users", None, 403),
    ("acme-admin", "POST", "/users", {"email": "z@x.test", "password": "0123456789ab", "role": "super_admin"}, 403),
    ("acme-manager", "PUT", "/branches/acme-main/counters/c2", {"name": "Counter 2", "services": ["general"]}, 200),
    ("acme-staff", "GET", "/branches/acme-main/analytics", None, 200),
])
async def test_roles_inside_the_tenant(server, session, who, method, path, body, status):
    async with session.request(method, f"{server.url}{V}{path}", json=body, headers=server.h(who)) as resp:
        assert resp.status == status, await resp.text()


async def test_anonymous_and_bad_tokens_get_401(server, session):
    async with session.get(f"{server.url}{V}/branches/acme-main") as resp:
        assert resp.status == 401
    async with session.get(f"{server.url}{V}/branches/acme-main", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    async with session.post(f"{server.url}{V}/auth/tokens", json={"email": "admin@acme.test", "password": "wrong"}) as resp:
        assert resp.status == 401


async def test_cookie_session_requires_csrf_on_writes(server):
    import aiohttp
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(f"{server.url}{V}/auth/login", json={"email": "manager@acme.test", "password": PASSWORD}) as resp:
            assert resp.status == 200
            csrf = (await resp.json())["csrf_token"]
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        body = {"name": "Counter 9", "services": []}
        async with s.get(f"{server.url}{V}/branches/acme-main") as resp:
            assert resp.status == 200  # reads need no CSRF token
        async with s.put(f"{server.url}{V}/branches/acme-main/counters/c9", json=body) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf"
        async with s.put(f"{server.url}{V}/branches/acme-main/counters/c9", json=body,
                         headers={"X-CSRF-Token": "forged"}) as resp:
            assert resp.status == 403
        async with s.put(f"{server.url}{V}/branches/acme-main/counters/c9", json=body,
                         headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
        async with s.post(f"{server.url}{V}/auth/logout", headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 204
        async with s.get(f"{server.url}{V}/auth/me") as resp:
            assert resp.status == 401


async def test_secure_flag_is_set_by_default(tmp_path):
    import aiohttp

    from hqtest import FakeClock, make_settings, seed, start_server
    settings = make_settings(tmp_path, cookie_secure=True)
    runner, srv = await start_server(settings, FakeClock())
    try:
        async with aiohttp.ClientSession() as s:
            await seed(srv, s)
            async with s.post(f"{srv.url}{V}/auth/login", json={"email": "admin@acme.test", "password": PASSWORD}) as resp:
                assert "Secure" in resp.headers["Set-Cookie"]
    finally:
        await runner.cleanup()


async def test_passwords_are_argon2id_hashes(server):
    from hqtest import connect_db
    with connect_db(server) as c:
        hashes = [r[0] for r in c.execute("SELECT password_hash FROM users")]
    assert hashes and all(h.startswith("$argon2id$v=19$") and PASSWORD not in h for h in hashes)


async def test_rate_limit_on_booking_endpoints(tmp_path):
    import aiohttp

    from hqtest import FakeClock, make_settings, start_server
    runner, srv = await start_server(make_settings(tmp_path, booking_rate_per_minute=2, booking_rate_burst=1), FakeClock())
    try:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(5):
                async with s.get(f"{srv.url}{V}/public/branches/nope/availability?service=a&date=2030-01-07") as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert int(resp.headers["Retry-After"]) >= 1
            assert statuses == [404, 404, 404, 429, 429]
    finally:
        await runner.cleanup()


async def test_device_ids_are_per_organization_and_a_clash_reveals_nothing_of_others(server, session):
    """Two organizations each have a `kiosk`; a clash is reported only inside one's own org."""
    def key(n: int) -> str:
        return f"{n:02x}" * 32
    made = await api(session, "POST", f"{server.url}{V}/branches/acme-main/devices", 201, headers=server.h("acme-admin"),
                     json={"id": "kiosk", "role": "kiosk", "public_key": key(1)})
    assert made["id"] == "kiosk"
    await api(session, "POST", f"{server.url}{V}/branches/beta-main/devices", 201, headers=server.h("beta-admin"),
              json={"id": "kiosk", "role": "kiosk", "public_key": key(2)})
    async with session.post(f"{server.url}{V}/branches/acme-main/devices", headers=server.h("acme-admin"),
                            json={"id": "kiosk", "role": "kiosk", "public_key": key(3)}) as resp:
        assert resp.status == 409 and "this organization" in (await resp.json())["error"]["message"]
    for who, branch, mine in (("acme-admin", "acme-main", key(1)), ("beta-admin", "beta-main", key(2))):
        listed = await api(session, "GET", f"{server.url}{V}/branches/{branch}/devices", 200, headers=server.h(who))
        assert [d["public_key"] for d in listed["devices"] if d["id"] == "kiosk"] != []
        assert len([d for d in listed["devices"] if d["id"] == "kiosk"]) == 1
