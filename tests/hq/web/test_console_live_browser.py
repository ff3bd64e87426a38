"""The console against a real HQ process and a real branch node linked to it, in chromium: a
manager watches the queues; a member of staff logs in at the node's counter, the node issues and
calls a ticket, and the call appears on the manager's page by push (no reload); opening hours a
manager sets in the console reach the node, which then says the branch is closed and when it
opens. axe-core finds nothing on the live page in the five languages; screenshots.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from browser import axe_violations, reflow_problems, screenshots
from linktest import ORG, HQProcess, admin_token, enroll_sample, hq_settings, midday_timezone, wait_for
from procs import NodeProcess

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

BRANCH = "kigali-main"
LANGS = ["en", "fr", "rw", "sw", "es"]
MANAGER, MANAGER_PASSWORD = "manager@demo.test", "watching the queues today"


class Site:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tz = midday_timezone()
        self.hq = HQProcess(folder / "hq")
        settings = {**hq_settings(folder / "hq" / "data", self.hq.port), "web_rate_per_minute": 0}
        (folder / "hq" / "hq.toml").write_text("[hq]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        self.hq.start()
        self.url = self.hq.url
        asyncio.run(self._enroll())
        self.node = NodeProcess(folder / "branch" / "kiosk.toml", log_path=folder / "kiosk.log")
        wait_for(lambda: self.node.request("GET", "/api/v1/state")[1]["hq"]["status"] == "online")

    async def _enroll(self) -> None:
        async with aiohttp.ClientSession() as s:
            await enroll_sample(s, self.url, self.folder / "branch", tz=self.tz)
            auth = {"Authorization": f"Bearer {await admin_token(s, self.url)}"}
            async with s.post(f"{self.url}/api/v1/users", headers=auth, json={
                    "email": MANAGER, "password": MANAGER_PASSWORD, "role": "branch_manager", "org": ORG,
                    "branch": BRANCH}) as r:
                assert r.status == 201, await r.text()

    def stop(self) -> None:
        self.node.stop()
        self.hq.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    s = Site(tmp_path_factory.mktemp("console-live"))
    yield s
    s.stop()


def manager_page(browser: Any, site: Site, lang: str = "en") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(f"{site.url}/console/login")
    page.fill("#email", MANAGER)
    page.fill("#password", MANAGER_PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{site.url}/console")
    return page


def test_manager_sees_a_node_call_appear_live(site: Site, browser: Any):
    page = manager_page(browser, site)
    page.get_by_role("link", name="Live queues").first.click()
    page.wait_for_url(f"{site.url}/console/live/{BRANCH}")
    expect = playwright_api.expect
    expect(page.locator("#console-live")).to_have_attribute("data-live", "open")
    page.evaluate("window.__sameDocument = true")
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "general"})
    assert status == 201, ticket
    expect(page.locator("#live-waiting")).not_to_have_text("0")  # the issued ticket arrived by push
    status, login = site.node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
    assert status == 200, login
    auth = {"Authorization": f"Bearer {login['token']}"}
    assert site.node.request("POST", "/api/v1/counters/c1/open", headers=auth)[0] == 200
    for _ in range(20):
        status, called = site.node.request("POST", "/api/v1/counters/c1/call-next", headers=auth)
        assert status == 200, called
        if called["id"] == ticket["id"]:
            break
    row = page.locator('#live-counters tr[data-counter="c1"]')
    expect(row).to_contain_text(ticket["label"])
    assert "Open" in row.inner_text() and "amina" in row.inner_text().lower()
    assert page.evaluate("window.__sameDocument") is True  # updated by push, not by a reload
    screenshots(page, "console-live")
    page.context.close()


def test_live_page_axe_in_five_languages(site: Site, browser: Any):
    problems: dict[str, Any] = {}
    for lang in LANGS:
        page = manager_page(browser, site, lang)
        page.goto(f"{site.url}/console/live/{BRANCH}")
        assert page.locator("html").get_attribute("lang") == lang
        if found := axe_violations(page):
            problems[lang] = found
        if lang == "en" and (reflow := reflow_problems(page)):
            problems["reflow"] = reflow
        page.context.close()
    assert problems == {}


def test_hours_set_in_the_console_close_the_nodes_kiosk_with_the_opening_time(site: Site, browser: Any):
    """It is about noon at the branch (midday_timezone): hours of 06:00-07:00 every day close it;
    the node folds config.hours and its state says closed, opening tomorrow at 06:00, which the
    kiosk shows as "Closed. Opens tomorrow at 06:00." (kiosk_ui.viewmodels, tests/kiosk_ui)."""
    page = manager_page(browser, site)
    page.get_by_role("link", name="Settings").first.click()
    for wd in range(7):
        page.fill(f"#opens{wd}", "06:00")
        page.fill(f"#closes{wd}", "07:00")
    page.get_by_role("button", name="Save the opening hours").click()
    assert "The opening hours were saved and sent to the branch." in page.locator("main").inner_text()
    page.context.close()

    def hours() -> Any:
        h = (site.node.request("GET", "/api/v1/state")[1].get("branch") or {}).get("hours") or {}
        return h if h.get("open") is False else None
    h = wait_for(hours, timeout=30)
    assert h["opens_at"][11:16] == "06:00"
    state = site.node.request("GET", "/api/v1/state")[1]
    assert h["opens_at"][:10] > state["now"][:10]  # tomorrow: today's hour has passed



def test_a_target_wait_the_manager_sets_makes_the_live_page_warn_at_it(site: Site, browser: Any):
    """The manager sets the service's target wait to 1 minute on the branch's settings page; a
    ticket the node issued then passes it, and the live page warns by push (no reload)."""
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "general"})
    assert status == 201, ticket
    page = manager_page(browser, site, "fr")
    page.get_by_role("link", name="Paramètres").first.click()
    page.fill("#target_general", "0")
    page.get_by_role("button", name="Enregistrer les objectifs d'attente").click()
    assert page.locator("#target_general").get_attribute("aria-invalid") == "true"  # 1 to 240 minutes
    assert page.locator("#target_general").input_value() == "0"  # what was typed stays
    page.fill("#target_general", "1")
    page.get_by_role("button", name="Enregistrer les objectifs d'attente").click()
    assert page.locator("#target_general").input_value() == "1"
    page.goto(f"{site.url}/console/live/{BRANCH}")
    expect = playwright_api.expect
    expect(page.locator("#console-live")).to_have_attribute("data-live", "open")
    row = page.locator('#live-services tr[data-service="general"]')
    expect(row).to_contain_text("1 min")
    page.evaluate("window.__sameDocument = true")
    # the ticket passes one minute: the next push (at most every 10 s) carries the warning
    expect(page.locator(".warning-wait")).to_be_visible(timeout=90_000)
    expect(row).to_have_class("over")
    assert page.evaluate("window.__sameDocument") is True
    screenshots(page, "console-live-target")
    page.context.close()
