"""The analytics pages in a real browser (Debian's chromium via Playwright): axe-core finds
nothing on any of them in any of the five languages, with charts and tables full of the
generated dataset (test_console_analytics.py) and with a filter form in error; the pages
reflow at 320 px and 200% zoom; screenshots go to artifacts/web/console-analytics-*."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from browser import axe_violations, reflow_problems, screenshots
from hqtest import PASSWORD, FakeClock, ThreadedServer, make_settings
from test_console_analytics import NOW, load

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

LANGS = ["en", "fr", "rw", "sw", "es"]
Q = "from=2030-10-25&to=2030-10-28"
PAGES = [("analytics", f"/console/analytics?{Q}"), ("analytics-staff", f"/console/analytics?{Q}&by=staff"),
         ("analytics-heatmap", f"/console/analytics/heatmap?{Q}"), ("analytics-offices", f"/console/analytics/offices?{Q}"),
         ("analytics-bottlenecks", f"/console/analytics/bottlenecks?{Q}"), ("analytics-estimates", "/console/analytics/estimates"),
         ("analytics-form-error", "/console/analytics?from=2030-13-01&to=yesterday")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    # SQLite for the module's one server (the browser sweep is about the pages; both backends'
    # figures are checked in test_console_analytics.py); a per-test PostgreSQL database would be
    # dropped under it after the first test.
    settings = make_settings(tmp_path_factory.mktemp("analytics"), database="sqlite:///hq.sqlite3")
    threaded = ThreadedServer(settings, FakeClock(NOW))
    with threaded as srv:
        def ingest(hq: Any, events: list, branch: str) -> Any:
            # on the server's own loop, as the branch link would call it
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                __import__("hq.ingest", fromlist=["x"]).ingest_branch_events(hq, events, branch=branch), threaded.loop))

        async def seed() -> None:
            async with aiohttp.ClientSession() as session:
                await load(srv, session, ingest)
        asyncio.run(seed())
        yield srv


def logged_in(browser: Any, url: str, email: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(f"{url}/console/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{url}/console")
    return page


def test_axe_finds_nothing_on_the_analytics_pages_in_five_languages(site, browser: Any):
    page = logged_in(browser, site.url, "admin@acme.test")
    problems: dict[str, Any] = {}
    for lang in LANGS:
        page.context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
        for name, path in PAGES:
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(site.url + path)
            assert page.locator("html").get_attribute("lang") == lang
            if name != "analytics-form-error":
                assert page.locator("main svg[role=img] title").count() >= 1, (lang, name)
                assert page.locator("main table").count() >= 1, (lang, name)
            else:
                assert page.locator(".error-summary").count() == 1
            if found := axe_violations(page):
                problems[f"{lang} {name}"] = found
            if lang == "en":
                screenshots(page, f"console-{name}")
                if reflow := reflow_problems(page):
                    problems[f"reflow {name}"] = reflow
    assert problems == {}
    page.context.close()


def test_filters_work_by_keyboard_without_javascript(site, browser: Any):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{site.url}/console/login")
    page.fill("#email", "manager@acme.test")
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").press("Enter")
    page.wait_for_url(f"{site.url}/console")
    page.goto(f"{site.url}/console/analytics")
    page.fill("#from", "2030-10-27")
    page.fill("#to", "2030-10-27")
    page.select_option("#by", "hour")
    page.locator("main form.filters button[type=submit]").press("Enter")
    page.wait_for_url("**/console/analytics?*by=hour*")
    assert page.locator("#analytics-table tbody tr").count() > 20  # the 25-hour day has hours 00-23
    context.close()
