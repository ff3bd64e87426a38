"""HQ console's live page (issue 10): node call -> the manager's page DOM, by SSE.

A real HQ process with the sample branch enrolled and a real kiosk node linked to it (bench_web's
Site), a branch manager's live page open in Debian's chromium (Playwright). --calls times the
node calls a ticket at counter 1; the time until that ticket shows in counter 1's row of the page
is taken from the page itself (a MutationObserver): node call -> branch link -> HQ ingest -> SSE
-> DOM.

    .venv/bin/python -m bench.bench_console [--calls 50] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench_web import BRANCH, Site
from bench.common import call_to_dom, latency_summary, write
from linktest import ORG, admin_token  # bench_web put tests/uplink on sys.path

MANAGER, PASSWORD = "manager@bench.test", "a manager who measures things"


async def add_manager(site: Site) -> None:
    async with aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {await admin_token(s, site.url)}"}
        async with s.post(f"{site.url}/api/v1/users", headers=auth, json={
                "email": MANAGER, "password": PASSWORD, "role": "branch_manager", "org": ORG, "branch": BRANCH}) as r:
            assert r.status == 201, await r.text()


async def push(site: Site, calls: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from browser import ARGS, CHROMIUM

    tickets = [site.node.request("POST", "/api/v1/tickets", {"service": "general"})[1] for _ in range(calls)]
    status, login = site.node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
    auth = {"Authorization": f"Bearer {login['token']}"}
    site.node.request("POST", "/api/v1/counters/c1/open", headers=auth)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page()
        await page.goto(f"{site.url}/console/login")
        await page.fill("#email", MANAGER)
        await page.fill("#password", PASSWORD)
        await page.locator("main form button[type=submit]").click()
        await page.wait_for_url(f"{site.url}/console")
        await page.goto(f"{site.url}/console/live/{BRANCH}")
        await page.locator("#console-live[data-live=open]").wait_for()
        samples, missed = await call_to_dom(page, site.node, tickets, auth, "console-live", 'tr[data-counter="c1"]')
        await browser.close()
    return {"calls": calls, "missed": missed, "call_to_dom": latency_summary(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="HQ server processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        site = Site(Path(tmp), args.workers)
        try:
            asyncio.run(add_manager(site))
            figures = {"workers": args.workers, "push": asyncio.run(push(site, args.calls))}
        finally:
            site.stop()
    write("console", figures)


if __name__ == "__main__":
    main()
