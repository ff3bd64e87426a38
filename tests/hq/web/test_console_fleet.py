"""Fleet health on a real HQ (no browser): devices post signed health reports over the branch
link; only a registered device speaks, and only for itself; the console's fleet page shows each
device's last heard, pending events, printer, version and clock offset, and what needs attention.
The report from a real node with the fake network printer is in test_console_fleet_node.py."""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp

from hq.web import HQ_KEY
from hqtest import T0, Server
from sync.protocol import PREFIX, encode, sign_headers
from test_console import console  # noqa: F401  (the fixture)
from webtest import Device, db


def report(**over: Any) -> dict[str, Any]:
    return {"app_version": "0.1.0", "role": "kiosk", "clock_ms": int(time.time() * 1000), "pending": 0,
            "printer": "ok", "printer_message": "ready", "peers": []} | over


async def post_health(srv: Server, dev: Device, body: Any, *, branch: str | None = None,
                      device: str | None = None) -> tuple[int, Any]:
    raw = encode(body)
    branch = branch or dev.branch
    headers = sign_headers(dev.key, device=device or dev.id, branch=branch, method="POST", path=f"{PREFIX}/health",
                           body=raw, to=f"hq:{branch}")
    headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as s, s.post(f"{srv.url}{PREFIX}/health", data=raw, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def rows(html: str) -> dict[str, list[str]]:
    out = {}
    for key, row in re.findall(r'<tr data-device="([^"]+)"[^>]*>(.*?)</tr>', html, re.S):
        out[key] = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    return out


def attention(html: str) -> dict[str, str]:
    return {k: re.sub(r"<[^>]+>", "", v).split("–", 1)[1].strip()
            for k, v in re.findall(r'<li data-device="([^"]+)">(.*?)</li>', html, re.S)}


async def test_devices_report_their_own_health_and_the_page_says_what_needs_attention(console, session):
    kiosk, counter, display, old = Device("kiosk-9"), Device("counter-9"), Device("display-9"), Device("old-9")
    await kiosk.register(console, session)
    await counter.register(console, session, "counter")
    await display.register(console, session, "display")
    await old.register(console, session, "display")
    seen = int(T0 * 1000) - 30_000  # the kiosk heard the display 30 s before now
    assert await post_health(console, kiosk, report(printer="paper_low", printer_message="paper roll nearly empty",
                                                    pending=3, peers=[{"device": "display-9", "status": "ok",
                                                                       "last_seen_ms": seen}])) == (200, {"stored": True})
    assert (await post_health(console, counter, report(role="counter", printer=None, pending=250,
                                                       clock_ms=int(time.time() * 1000) + 95_000)))[0] == 200
    assert (await post_health(console, old, report(role="display", printer=None, app_version="0.0.9")))[0] == 200
    # An unregistered device, a device signing for another branch, and a device that names
    # another device in the header it signs are all refused; nothing is stored for them.
    stranger = Device("stranger-9")
    assert (await post_health(console, stranger, report()))[0] == 403
    assert (await post_health(console, kiosk, report(), branch="beta-main"))[0] == 403
    assert (await post_health(console, kiosk, report(), device="counter-9"))[0] == 401
    for junk in ([], {"app_version": "x"}, report(pending=-1), report(printer="on fire"), report(peers="all"),
                 report(app_version="<script>"), report(peers=[{"device": ""}])):
        status, answer = await post_health(console, kiosk, junk)
        assert status == 400 and answer["error"]["code"] == "bad_request", junk
    with db(console) as c:
        stored = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT device_id, printer, pending, role FROM device_health ORDER BY device_id")}
    assert stored == {"counter-9": (None, 250, "counter"), "kiosk-9": ("paper_low", 3, "kiosk"),
                      "old-9": (None, 0, "display")}

    manager = await console.login("manager@acme.test")
    status, html, _ = await manager.get("/console/fleet")
    assert status == 200
    table = rows(html)
    assert table["acme-main/kiosk-9"][5:7] == ["Paper low", "0.1.0"] and table["acme-main/kiosk-9"][4] == "3"
    assert table["acme-main/kiosk-9"][3].startswith("0 min")
    assert [table[f"acme-main/{d}-9"][2] for d in ("kiosk", "counter", "display")] == ["Kiosk", "Counter", "Display"]
    assert table["acme-main/display-9"][3].startswith("0 min")  # heard by the kiosk, never reported itself
    assert table["acme-main/display-9"][4:] == ["–", "–", "–", "–"]
    assert table["acme-main/counter-9"][5] == "No printer" and table["acme-main/counter-9"][7].startswith("95")
    problems = attention(html)
    assert problems["acme-main/kiosk-9"] == "Printer: Paper low"
    assert problems["acme-main/counter-9"] == "Events not yet at HQ: 250; Clock off by 95 s"
    assert problems["acme-main/old-9"] == "Older app version (newest: 0.1.0)"
    assert "acme-main/display-9" not in problems
    # Ten minutes later nobody has reported again: everyone is silent.
    console.clock.t = T0 + 600
    _, later, _ = await manager.get("/console/fleet")
    assert attention(later)["acme-main/display-9"] == "Not heard from for 10 min"
    _, text, _ = await manager.get("/console/fleet?format=csv")
    assert text.lstrip("\ufeff").splitlines()[0].startswith("branch,device,role,last_heard")


async def test_fleet_page_is_for_admins_and_managers_of_their_branches(console, session):
    kiosk = Device("kiosk-8")
    await kiosk.register(console, session)
    beta = Device("kiosk-8b", branch="beta-main")
    from hqtest import api
    from hq.signing import public_key_hex
    await api(session, "POST", f"{console.url}/api/v1/branches/beta-main/devices", 201, headers=console.h("super"),
              json={"id": beta.id, "role": "kiosk", "public_key": public_key_hex(beta.key.public_key())})
    assert (await post_health(console, beta, report()))[0] == 200
    staff = await console.login("staff@acme.test", language="fr")
    status, html, _ = await staff.get("/console/fleet")
    assert status == 403 and '<html lang="fr">' in html
    for who, sees, hidden in (("manager@acme.test", "acme-main/kiosk-8", "beta-main/kiosk-8b"),
                              ("admin@beta.test", "beta-main/kiosk-8b", "acme-main/kiosk-8"),
                              ("root@hq.test", "beta-main/kiosk-8b", None)):
        b = await console.login(who)
        status, html, _ = await b.get("/console/fleet")
        assert status == 200 and sees in rows(html), who
        assert hidden is None or hidden not in html, who
    assert "Never heard from" in attention(html)["acme-main/kiosk-8"]
    assert console.app[HQ_KEY].settings.fleet_silent_after_s == 300
