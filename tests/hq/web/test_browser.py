"""The citizens' pages in a real browser (Debian's chromium via Playwright) against a real HQ
process, and for live status a real kiosk node linked to it: the issue's "Must show" list.

One HQ, one node and one browser for the module; pages are reused where they can be.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from icalendar import Calendar

from hq.gateways import mask_recipient
from browser import ARTIFACTS, axe_violations, decode_qr, reflow_problems, screenshots, tab_to
from linktest import HQProcess, enroll_sample, hq_settings, midday_timezone, wait_for
from procs import NodeProcess

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

BRANCH = "kigali-main"
LANGS = ["en", "fr", "rw", "sw", "es"]
PASSWORD = "a long enough password"


class Site:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tz = midday_timezone()
        self.hq = HQProcess(folder / "hq")
        settings = {**hq_settings(folder / "hq" / "data", self.hq.port), "scheduler_enabled": True,
                    "web_rate_per_minute": 0, "notify_poll_s": 1, "branch_silent_after_s": 60}
        (folder / "hq" / "hq.toml").write_text("[hq]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        self.hq.start()
        self.url = self.hq.url
        self.token = asyncio.run(self._enroll())
        self.node = NodeProcess(folder / "branch" / "kiosk.toml", log_path=folder / "kiosk.log")
        wait_for(lambda: self.node.request("GET", "/api/v1/state")[1]["hq"]["status"] == "online")

    async def _enroll(self) -> str:
        async with aiohttp.ClientSession() as s:
            token = await enroll_sample(s, self.url, self.folder / "branch", tz=self.tz)
            auth = {"Authorization": f"Bearer {token}"}
            async with s.patch(f"{self.url}/api/v1/branches/{BRANCH}", headers=auth,
                               json={"address": "KN 3 Avenue, Kigali"}) as r:
                assert r.status == 200, await r.text()
            async with s.put(f"{self.url}/api/v1/branches/{BRANCH}/services/passport", headers=auth, json={
                    "letter": "P", "slot_minutes": 30, "capacity": 1, "names": {
                        "en": "Passports", "fr": "Passeports", "rw": "Pasiporo", "sw": "Pasipoti", "es": "Pasaportes"}}) as r:
                assert r.status == 200, await r.text()
        return token

    def stop(self) -> None:
        try:
            self.node.stop()
        finally:
            self.hq.stop()  # even when the node did not stop cleanly

    def log(self) -> str:
        return (self.folder / "hq" / "hq.log").read_text(encoding="utf-8", errors="replace")

    def code_for(self, email: str, purpose: str = "verify") -> str:
        """The one-time code the log gateway 'sent' to `email` (the newest)."""
        # the log gateway masks the address (a•••@example.org); the 6-digit code stays readable
        pattern = re.compile(rf"notification {purpose}:\S+ via email to {re.escape(mask_recipient(email))}: \D*(\d{{6}})")
        return wait_for(lambda: (m := pattern.findall(self.log())) and m[-1], timeout=20)

    def sent(self, key_prefix: str) -> bool:
        return f"notification {key_prefix}" in self.log()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def today(self) -> str:
        return datetime.now(ZoneInfo(self.tz)).date().isoformat()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    s = Site(tmp_path_factory.mktemp("web"))
    yield s
    s.stop()


def new_page(browser: Any, site: Site, lang: str = "en", **kw: Any) -> Any:
    context = browser.new_context(viewport={"width": 390, "height": 844}, **kw)
    context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    page.set_default_timeout(15000)
    return page


def book_via_pages(page: Any, site: Site, service: str, *, slot_index: int = 0, email: str | None = None) -> str:
    """Service -> first day -> a slot -> contact -> confirmation; returns the booking code."""
    page.goto(f"{site.url}/b/{BRANCH}/book")
    page.check(f"input[name=service][value={service}]")
    page.get_by_role("button").click()
    page.locator("input[name=date]").first.check()
    page.get_by_role("button").click()
    page.locator("input[name=start]:not([disabled])").nth(slot_index).check()
    page.get_by_role("button").click()
    if email:
        page.fill("#email", email)
    page.locator("main form button[type=submit]").click()
    return page.locator("#booking-code").inner_text()


def register(page: Any, site: Site, email: str) -> None:
    page.goto(f"{site.url}/account/register")
    page.fill("#contact", email)
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/account/verify")
    page.fill("#code", site.code_for(email))
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/account?welcome=1")


def test_citizen_registers_books_checks_in_by_qr_reschedules_and_cancels(site: Site, browser: Any):
    page = new_page(browser, site, accept_downloads=True)
    register(page, site, "amani@example.org")
    assert "amani@example.org" in page.locator("main").inner_text()

    code = book_via_pages(page, site, "general")  # the account's e-mail is filled in for us
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}", code)
    assert wait_for(lambda: site.sent(f"confirm:{code}:email"))  # the confirmation went out
    with page.expect_download() as download:
        page.get_by_text("(.ics)").click()
    event = Calendar.from_ical(Path(download.value.path()).read_bytes()).walk("VEVENT")[0]
    assert str(event["UID"]) == f"{code}@smartq" and str(event["STATUS"]) == "CONFIRMED"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "confirmation-qr.png"
    page.locator("svg.qr").screenshot(path=str(shot))
    token = decode_qr(shot)
    assert token.startswith("st1.")
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"booking_code": token})
    assert status == 201 and ticket["booking_code"] == code, ticket  # the kiosk's node checks it in

    second = book_via_pages(page, site, "general", slot_index=2)
    page.goto(f"{site.url}/account")
    page.get_by_role("link", name=second).click()
    page.get_by_role("link", name="Change the date or time").click()
    page.locator("input[name=date]").first.check()
    page.get_by_role("button").click()
    page.locator("input[name=start]:not([disabled])").nth(4).check()
    page.get_by_role("button", name="Move my booking to this time").click()
    assert "Your booking is moved" in page.locator("main").inner_text()
    page.get_by_role("button", name="Cancel this booking").click()
    assert "Your booking is cancelled" in page.locator("main").inner_text()
    assert wait_for(lambda: site.sent(f"reschedule:{second}:") and site.sent(f"cancel:{second}:email"))
    page.goto(f"{site.url}/account")
    rows = page.locator("tbody tr").all_inner_texts()
    assert any(code in r and "Checked in" in r for r in rows) and any(second in r and "Cancelled" in r for r in rows)
    page.context.close()


def test_two_browsers_take_the_last_place_at_once_one_books_one_sees_other_slots(site: Site, browser: Any):
    html = urllib.request.urlopen(f"{site.url}/b/{BRANCH}/book/slot?service=passport&date={site.today()}").read().decode()
    start = re.findall(r'name="start" value="(\d+)">', html)[-1]
    pages = [new_page(browser, site) for _ in range(2)]
    for i, page in enumerate(pages):
        page.goto(f"{site.url}/b/{BRANCH}/book/contact?service=passport&start={start}")
        page.fill("#email", f"racer{i}@example.org")
    for page in pages:  # both forms are in flight before either answer arrives
        page.evaluate("document.querySelector('main form').requestSubmit()")
    outcomes = []
    for page in pages:
        page.wait_for_selector("#booking-code, .notice")
        outcomes.append("booked" if page.locator("#booking-code").count() else "lost")
    assert sorted(outcomes) == ["booked", "lost"]
    loser = pages[outcomes.index("lost")]
    text = loser.locator("main").inner_text()
    assert "Someone else just took that place" in text
    assert loser.locator("input[name=start]").count() >= 1  # the nearest other slots, ready to take
    assert axe_violations(loser) == []
    loser.locator("input[name=start]").first.check()
    loser.locator("main form button[type=submit]").click()
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}", loser.locator("#booking-code").inner_text())
    for page in pages:
        page.context.close()


def test_status_page_shows_the_place_then_called_counter_without_reload(site: Site, browser: Any):
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "payments", "language": "fr"})
    assert status == 201 and ticket["status_url"].startswith(f"{site.url}/t/")
    wait_for(lambda: _reachable(ticket["status_url"]))
    page = new_page(browser, site, "fr")
    page.goto(ticket["status_url"])
    assert page.locator("#label").inner_text() == ticket["label"]
    assert page.locator("#position").inner_text() == str(ticket["position"])
    expect = playwright_api.expect
    expect(page.locator("#live")).to_have_attribute("data-live", "open")
    page.evaluate("window.__sameDocument = true")
    status, login = site.node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
    auth = {"Authorization": f"Bearer {login['token']}"}
    assert site.node.request("POST", "/api/v1/counters/c1/open", headers=auth)[0] == 200
    for _ in range(20):  # call-next at the node until it reaches our ticket (earlier tests left others waiting)
        status, called = site.node.request("POST", "/api/v1/counters/c1/call-next", headers=auth)
        assert status == 200, called
        if called["id"] == ticket["id"]:
            break
    assert called["id"] == ticket["id"]
    expect(page.locator("#headline")).to_contain_text("Counter 1")
    assert page.locator("#headline").inner_text() == "Appelé : veuillez vous rendre au Counter 1"
    assert page.evaluate("window.__sameDocument") is True  # updated by push, not by a reload
    assert page.locator("#live").get_attribute("data-alert") == "called"
    assert int(page.evaluate("document.documentElement.dataset.chimes || '0'")) >= 1  # the chime played
    assert ticket["label"] in page.locator("#serving").inner_text()
    page.context.close()


def _reachable(url: str) -> bool:
    try:
        return urllib.request.urlopen(url).status == 200
    except OSError:
        return False


def test_the_whole_booking_flow_with_the_keyboard_only(site: Site, browser: Any):
    page = new_page(browser, site)
    page.goto(f"{site.url}/b/{BRANCH}")
    tab_to(page, "a.button[href$='/book']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/book")
    tab_to(page, "input[name=service]")
    page.keyboard.press("Space")
    tab_to(page, "button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/book/day*")
    tab_to(page, "input[name=date]")
    page.keyboard.press("Space")
    tab_to(page, "button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/book/slot*")
    tab_to(page, "input[name=start]")
    page.keyboard.press("ArrowDown")  # radios move with the arrow keys; the chosen one is checked
    tab_to(page, "button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/book/contact*")
    tab_to(page, "#email")
    page.keyboard.type("keys.only@example.org")
    tab_to(page, "main form button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#booking-code")
    assert page.url.startswith(f"{site.url}/c/st1.")
    page.context.close()


def test_every_page_in_five_languages_passes_axe_holds_at_320px_and_200_percent_and_is_screenshot(site: Site,
                                                                                                 browser: Any):
    day = site.today()
    html = urllib.request.urlopen(f"{site.url}/b/{BRANCH}/book/slot?service=passport&date={day}").read().decode()
    # Slots that stay in the future for the whole sweep: a slot that starts meanwhile is no longer
    # bookable, and its contact page rightly answers "choose a time from the list".
    starts = [s for s in re.findall(r'name="start" value="(\d+)">', html) if int(s) > time.time() + 3600]
    full, free = starts[0], starts[1]
    booked = site.api("POST", "/api/v1/public/bookings", {"branch": BRANCH, "service": "passport",
                                                          "start": datetime.fromtimestamp(int(full), ZoneInfo(site.tz)).isoformat(),
                                                          "email": "sweep@example.org"})
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "general"})
    wait_for(lambda: _reachable(ticket["status_url"]))
    page = new_page(browser, site)
    register(page, site, "sweep.account@example.org")
    page.context.close()

    problems: dict[str, Any] = {}
    for lang in LANGS:
        page = new_page(browser, site, lang)
        # state this language's context needs: a manage grant and a logged-in citizen
        page.goto(f"{site.url}/manage")
        page.fill("#code", booked["code"])
        page.fill("#contact", "sweep@example.org")
        page.locator("main form button[type=submit]").click()
        page.wait_for_url(f"**/manage/{booked['code']}")
        pages: list[tuple[str, Any]] = [
            ("offices", "/"), ("branch", f"/b/{BRANCH}"), ("book-service", f"/b/{BRANCH}/book"),
            ("book-day", f"/b/{BRANCH}/book/day?service=passport"),
            ("book-slot", f"/b/{BRANCH}/book/slot?service=passport&date={day}"),
            ("book-contact", f"/b/{BRANCH}/book/contact?service=passport&start={free}"),
            ("book-lost", None), ("confirmation", f"/c/{booked['token']}"), ("manage-form", "/manage"),
            ("manage", f"/manage/{booked['code']}"), ("status", ticket["status_url"].removeprefix(site.url)),
            ("register", "/account/register"), ("verify", "/account/verify"), ("forgot", "/account/forgot"),
            ("reset", "/account/reset"), ("login", "/account/login"), ("account", "/account"),
            ("password", "/account/password"), ("delete", "/account/delete"), ("not-found", "/no/such/page"),
        ]
        for name, path in pages:
            if name == "book-lost":
                page.goto(f"{site.url}/b/{BRANCH}/book/contact?service=passport&start={full}")
                page.fill("#email", "late@example.org")
                page.locator("main form button[type=submit]").click()
                page.wait_for_selector(".notice")
            elif name == "account":
                page.goto(f"{site.url}/account/login")
                page.fill("#contact", "sweep.account@example.org")
                page.fill("#password", PASSWORD)
                page.locator("main form button[type=submit]").click()
                page.wait_for_url("**/account")
            else:
                page.goto(site.url + path)
            assert page.locator("html").get_attribute("lang") == lang, (lang, name)
            page.set_viewport_size({"width": 390, "height": 844})
            found = axe_violations(page)
            reflow = reflow_problems(page)
            if found or reflow:
                problems[f"{lang}/{name}"] = {"axe": found, "overflow": reflow}
            screenshots(page, f"{lang}-{name}")
        page.context.close()
    assert problems == {}
    assert len(list(ARTIFACTS.glob("*-390x844.png"))) >= len(LANGS) * 20
