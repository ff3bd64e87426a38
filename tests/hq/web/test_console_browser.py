"""The console in a real browser (Debian's chromium via Playwright) against a real HQ process:
each role logs in through the form, sees its own menu, gets the 403 page on admin pages and
on other tenants' pages; the bootstrap admin changes its own password; axe-core finds nothing
on any console page in any of the five languages; screenshots go to artifacts/web/console-*.

One HQ process and one browser for the module.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from browser import axe_violations, reflow_problems, screenshots, tab_to
from linktest import ADMIN, PASSWORD, HQProcess, admin_token

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

LANGS = ["en", "fr", "rw", "sw", "es"]
STAFF_PASSWORD = "blue heron at dawn"


class Console:
    def __init__(self, folder: Path) -> None:
        self.hq = HQProcess(folder / "hq", extra={"web_rate_per_minute": 0}).start()
        self.url = self.hq.url
        self.ids = asyncio.run(self._seed())

    async def _seed(self) -> dict[str, int]:
        """Two organizations with a branch each; an org admin, a manager and a staff member in each."""
        ids = {}
        async with aiohttp.ClientSession() as s:
            auth = {"Authorization": f"Bearer {await admin_token(s, self.url)}"}
            for org in ("acme", "beta"):
                async with s.post(f"{self.url}/api/v1/orgs", headers=auth, json={"id": org, "name": org.title()}) as r:
                    assert r.status == 201, await r.text()
                async with s.post(f"{self.url}/api/v1/orgs/{org}/branches", headers=auth, json={
                        "id": f"{org}-main", "name": f"{org.title()} Main", "timezone": "Africa/Kigali"}) as r:
                    assert r.status == 201, await r.text()
                for role, who in (("org_admin", "admin"), ("branch_manager", "manager"), ("staff", "staff")):
                    body = {"email": f"{who}@{org}.test", "password": STAFF_PASSWORD, "role": role, "name": who.title(),
                            "org": org, "branch": f"{org}-main"}
                    async with s.post(f"{self.url}/api/v1/users", headers=auth, json=body) as r:
                        assert r.status == 201, await r.text()
                        ids[f"{who}@{org}.test"] = (await r.json())["id"]
        return ids


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    s = Console(tmp_path_factory.mktemp("console"))
    yield s
    s.hq.stop()


def logged_in(browser: Any, site: Console, email: str, password: str = STAFF_PASSWORD, lang: str = "en") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(f"{site.url}/console")
    assert page.url.endswith("/console/login?next=/console")
    page.fill("#email", email)
    page.fill("#password", password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{site.url}/console")
    return page


def menu(page: Any) -> list[str]:
    return page.locator("header nav .menu a").evaluate_all("els => els.map(e => e.getAttribute('href'))")


def test_each_role_its_menu_and_403_pages(site: Console, browser: Any):
    admin = logged_in(browser, site, "admin@acme.test")
    assert menu(admin) == ["/console", "/console/orgs/acme/catalogue", "/console/analytics", "/console/fleet",
                           "/console/accounts", "/console/audit", "/console/password"]  # no organizations
    admin.goto(f"{site.url}/console/accounts/{site.ids['staff@beta.test']}")  # another tenant's account
    assert admin.locator("h1").inner_text() == "Not allowed"
    screenshots(admin, "console-403-other-tenant")
    admin.context.close()
    for who, lang, title in (("manager@acme.test", "fr", "Non autorisé"), ("staff@acme.test", "es", "No permitido")):
        page = logged_in(browser, site, who, lang=lang)
        assert menu(page)[:3] == ["/console", "/console/live/acme-main", "/console/appointments/acme-main"]
        assert menu(page)[-1] == "/console/password"
        for path in ("/console/accounts", "/console/audit", f"/console/accounts/{site.ids['admin@acme.test']}"):
            response = page.goto(site.url + path)
            assert response.status == 403 and page.locator("h1").inner_text() == title, (who, path)
        page.context.close()


def test_org_admin_creates_an_account_by_keyboard_who_then_logs_in(site: Console, browser: Any):
    admin = logged_in(browser, site, "admin@acme.test")
    admin.goto(f"{site.url}/console/accounts/new")
    tab_to(admin, "#email")
    admin.keyboard.type("clerk@acme.test")
    admin.fill("#name", "Clerk")
    admin.select_option("#role", "staff")
    admin.select_option("#branch", "acme-main")
    admin.fill("#password", "password1234")  # among the commonest: refused
    admin.locator("main form button[type=submit]").click()
    assert "one of the most common ones" in admin.locator(".error-summary").inner_text()
    admin.fill("#password", "a quiet walk in kigali")
    admin.locator("main form button[type=submit]").click()
    assert "The account was created." in admin.locator("main").inner_text()
    clerk = logged_in(browser, site, "clerk@acme.test", "a quiet walk in kigali")
    assert "Staff" in clerk.locator("main").inner_text()
    admin.goto(f"{site.url}/console/audit")
    assert "account.create" in admin.locator("tbody").inner_text()
    clerk.context.close()
    admin.context.close()


def test_bootstrap_admin_changes_its_own_password(site: Console, browser: Any):
    root = logged_in(browser, site, ADMIN, PASSWORD)
    root.get_by_role("link", name="My password").click()
    root.fill("#current", PASSWORD)
    root.fill("#password", "an admin of many offices")
    root.fill("#confirm", "an admin of many offices")
    root.get_by_role("button", name="Change my password").click()
    assert "Your password was changed." in root.locator("main").inner_text()
    root.get_by_role("button", name="Log out").click()
    root.wait_for_url("**/console/login")
    root.context.close()
    logged_in(browser, site, ADMIN, "an admin of many offices").context.close()
    site.root_password = "an admin of many offices"


def test_axe_finds_nothing_on_any_console_page_in_five_languages(site: Console, browser: Any):
    password = getattr(site, "root_password", PASSWORD)
    anonymous = browser.new_context(viewport={"width": 1280, "height": 800})
    login = anonymous.new_page()
    staff = logged_in(browser, site, "staff@acme.test")
    root = logged_in(browser, site, ADMIN, password)
    pages = [(login, "login", "/console/login"), (root, "home", "/console"), (root, "accounts", "/console/accounts"),
             (root, "account-new", "/console/accounts/new"),
             (root, "account", f"/console/accounts/{site.ids['manager@acme.test']}"),
             (root, "password", "/console/password"), (root, "audit", "/console/audit"),
             (root, "live", "/console/live/acme-main"), (root, "staffing", "/console/staffing/acme-main"),
             (root, "branch", "/console/branches/acme-main"), (root, "orgs", "/console/orgs"), (staff, "appointments", "/console/appointments/acme-main"),
             (root, "catalogue", "/console/orgs/acme/catalogue"), (root, "reassign", "/console/reassign/acme-main"),
             (staff, "403", "/console/accounts")]
    problems: dict[str, Any] = {}
    for lang in LANGS:
        for page, name, path in pages:
            page.context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(site.url + path)
            assert page.locator("html").get_attribute("lang") == lang
            if found := axe_violations(page):
                problems[f"{lang} {name}"] = found
            if lang == "en":
                screenshots(page, f"console-{name}")
                if reflow := reflow_problems(page):
                    problems[f"reflow {name}"] = reflow
        # a form with its errors shown, in each language
        root.goto(f"{site.url}/console/accounts/new")
        root.locator("main form button[type=submit]").click()
        assert root.locator(".error-summary").count() == 1
        if found := axe_violations(root):
            problems[f"{lang} account-new errors"] = found
    assert problems == {}
    for context in (anonymous, staff.context, root.context):
        context.close()
