"""The calendar, staffing and fleet pages in a real browser (Debian's chromium via Playwright)
against a real HQ process: a manager blocks a slot with the mouse-free form and sees it in the
week; staff and other tenants get the 403 page; axe-core finds nothing on these pages in the five
languages (a form with its error too); they reflow at 320 px and 200 % zoom; the appointments
list prints without the menu; screenshots in artifacts/web/console-*.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from browser import axe_violations, reflow_problems, screenshots, tab_to
from hq.signing import public_key_hex
from linktest import HQProcess, admin_token
from sync.protocol import PREFIX, encode, sign_headers

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

LANGS = ["en", "fr", "rw", "sw", "es"]
PASSWORD = "blue heron at dawn"
TZ = "Africa/Kigali"


class Site:
    def __init__(self, folder: Path) -> None:
        self.hq = HQProcess(folder / "hq", extra={"web_rate_per_minute": 0, "booking_rate_per_minute": 0}).start()
        self.url = self.hq.url
        self.tomorrow = (datetime.now(ZoneInfo(TZ)) + timedelta(days=1)).date()
        asyncio.run(self._seed())

    async def _seed(self) -> None:
        async with aiohttp.ClientSession() as s:
            auth = {"Authorization": f"Bearer {await admin_token(s, self.url)}"}

            async def call(method: str, path: str, body: Any, status: int = 201) -> Any:
                async with s.request(method, f"{self.url}/api/v1{path}", headers=auth, json=body) as r:
                    assert r.status == status, await r.text()
                    return await r.json()
            for org in ("acme", "beta"):
                await call("POST", "/orgs", {"id": org, "name": org.title()})
                await call("POST", f"/orgs/{org}/branches", {"id": f"{org}-main", "name": f"{org.title()} Main",
                                                            "timezone": TZ, "languages": LANGS})
                await call("PUT", f"/branches/{org}-main/services/general", {
                    "letter": "A", "slot_minutes": 60, "capacity": 2,
                    "names": {"en": "General", "fr": "Général", "rw": "Rusange", "sw": "Jumla", "es": "General"}}, 200)
                await call("PUT", f"/branches/{org}-main/hours",
                           {"weekdays": {str(d): {"opens": "08:00", "closes": "16:00"} for d in range(7)}}, 200)
                for role, who in (("branch_manager", "manager"), ("staff", "staff")):
                    await call("POST", "/users", {"email": f"{who}@{org}.test", "password": PASSWORD, "role": role,
                                                  "name": who.title(), "org": org, "branch": f"{org}-main"})
            start = datetime.combine(self.tomorrow, datetime.min.time(), tzinfo=ZoneInfo(TZ)).replace(hour=10)
            async with s.post(f"{self.url}/api/v1/public/bookings", json={
                    "branch": "acme-main", "service": "general", "start": start.isoformat(), "name": "Aline",
                    "phone": "+41 44 668 18 00"}) as r:
                assert r.status == 201, await r.text()
            # A kiosk whose printer runs low, reporting over the branch link as a node does.
            key = Ed25519PrivateKey.generate()
            await call("POST", "/branches/acme-main/devices", {"id": "kiosk", "role": "kiosk",
                                                               "public_key": public_key_hex(key.public_key())})
            body = encode({"app_version": "0.1.0", "role": "kiosk", "clock_ms": int(time.time() * 1000), "pending": 0,
                           "printer": "paper_low", "printer_message": "paper roll nearly empty", "peers": []})
            headers = sign_headers(key, device="kiosk", branch="acme-main", method="POST", path=f"{PREFIX}/health",
                                   body=body, to="hq:acme-main")
            async with s.post(f"{self.url}{PREFIX}/health", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    s = Site(tmp_path_factory.mktemp("console-calendar"))
    yield s
    s.hq.stop()


def logged_in(browser: Any, site: Site, email: str, lang: str = "en") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(f"{site.url}/console/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{site.url}/console")
    return page


def test_manager_blocks_a_slot_by_keyboard_and_sees_it_in_the_week(site: Site, browser: Any):
    page = logged_in(browser, site, "manager@acme.test")
    page.get_by_role("link", name="Calendar", exact=True).click()
    day = site.tomorrow.isoformat()
    page.locator(f'th[data-day="{day}"] a').click()
    page.wait_for_url(f"**/console/calendar/acme-main/general/{day}")
    tab_to(page, "#day-slots input[type=checkbox]")
    page.keyboard.press("Space")
    page.fill("#reason", "staff meeting")
    page.get_by_role("button", name="Block the chosen slots", exact=True).click()
    assert "The slots were blocked" in page.locator("main [role=status]").inner_text()
    assert page.locator("#day-slots tbody tr").first.locator(".slot-state").inner_text() == "Blocked (staff meeting)"
    page.get_by_role("link", name="Back to the week").click()
    first = page.locator(f'#calendar tbody tr:first-child td').nth((site.tomorrow.weekday()))
    assert "Blocked" in first.inner_text()
    ten = page.locator("#calendar tbody tr", has_text="10:00").locator("td").nth(site.tomorrow.weekday())
    assert ten.inner_text().startswith("1 / 2")  # Aline's booking
    page.context.close()


def test_staff_and_other_tenants_get_the_403_page(site: Site, browser: Any):
    staff = logged_in(browser, site, "staff@acme.test", lang="fr")
    for path in ("/console/calendar/acme-main", "/console/fleet", "/console/staffing/acme-main"):
        response = staff.goto(site.url + path)
        assert response.status == 403 and staff.locator("h1").inner_text() == "Non autorisé", path
    staff.context.close()
    other = logged_in(browser, site, "manager@beta.test", lang="es")
    response = other.goto(f"{site.url}/console/calendar/acme-main")
    assert response.status == 403 and other.locator("h1").inner_text() == "No permitido"
    other.goto(f"{site.url}/console/fleet")
    assert "kiosk" not in other.locator("main").inner_text()
    other.context.close()


def test_axe_finds_nothing_on_calendar_staffing_fleet_and_appointments_in_five_languages(site: Site, browser: Any):
    manager = logged_in(browser, site, "manager@acme.test")
    day = site.tomorrow.isoformat()
    pages = [("calendar", "/console/calendar/acme-main"), ("calendar-day", f"/console/calendar/acme-main/general/{day}"),
             ("staffing", "/console/staffing/acme-main"), ("fleet", "/console/fleet"),
             ("appointments", f"/console/appointments/acme-main?date={day}")]
    problems: dict[str, Any] = {}
    for lang in LANGS:
        manager.context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
        for name, path in pages:
            manager.set_viewport_size({"width": 1280, "height": 800})
            manager.goto(site.url + path)
            assert manager.locator("html").get_attribute("lang") == lang
            if found := axe_violations(manager):
                problems[f"{lang} {name}"] = found
            if lang == "en":
                screenshots(manager, f"console-{name}")
                if reflow := reflow_problems(manager):
                    problems[f"reflow {name}"] = reflow
        # the day's block form with its error shown (nothing chosen)
        manager.set_viewport_size({"width": 1280, "height": 800})
        manager.goto(f"{site.url}/console/calendar/acme-main/general/{day}")
        manager.locator("form[action$='/block'] button.button:not(.secondary)").first.click()
        assert manager.locator(".error-summary").count() == 1
        if found := axe_violations(manager):
            problems[f"{lang} calendar-day errors"] = found
    assert problems == {}
    # The appointments list prints without the menu, the language switcher and the day controls.
    manager.context.add_cookies([{"name": "smartq_lang", "value": "en", "url": site.url}])
    manager.goto(f"{site.url}/console/appointments/acme-main?date={day}")
    manager.emulate_media(media="print")
    navs = manager.locator("header nav")
    assert navs.count() == 2 and all(navs.nth(i).is_hidden() for i in range(2))  # menu and languages
    assert manager.locator("form.filters").is_hidden()
    assert manager.locator("#appointments").is_visible() and "Aline" in manager.locator("#appointments").inner_text()
    manager.context.close()
