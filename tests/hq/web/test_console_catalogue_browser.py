"""The console's catalogue and reassignment against a real HQ process and real branch nodes, in
chromium: two branches of one organization, each with a kiosk node enrolled by code (the west
one with a counter too), linked to HQ over mutual TLS.

- an org admin adds a service to the catalogue and offers it in both branches: after one link
  round both nodes list it and the kiosk view-model (what the Kivy kiosk shows) offers it; once
  withdrawn from one branch, that kiosk no longer does;
- a PIN an org admin sets in the console logs a member of staff in at the west counter node;
- a manager reassigns a booking from east to west: the west kiosk checks its code in, the east
  one refuses it; a ticket waiting at east moves to west, leaves the east line, and checks in at
  west in its original place;
- hours set in the console make the kiosk refuse a walk-in and say when it opens;
- managers and staff get the 403 page on the catalogue, other tenants on every page added here;
- axe-core finds nothing on the catalogue, service and reassign pages in the five languages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from browser import axe_violations, reflow_problems, screenshots
from linktest import FAST, ORG, HQProcess, admin_token, free_port, midday_timezone, wait_for
from procs import NodeProcess

from appliance.config import load_config
from appliance.sample import write_sample
from hq.enroll import register_branch

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

LANGS = ["en", "fr", "rw", "sw", "es"]
BRANCHES = {"east": "East Office", "west": "West Office"}
PW = "steady hands at the counter"
ADMIN, MANAGER, STAFF, OTHER = "admin@demo.test", "manager@demo.test", "staff@demo.test", "admin@other.test"
DEVICES = {"kiosk-east": ("east", "kiosk", ["--numbers", "1-499"]), "kiosk-west": ("west", "kiosk", ["--numbers", "1-499"]),
           "counter-west": ("west", "counter", ["--counters", "c1"])}


def run_async(coro: Any) -> Any:
    """Run a coroutine on its own loop in a worker thread: Playwright's sync API holds this
    thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def hq_cli(hq: HQProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hq", "--config", str(hq.folder / "hq.toml"), *args],
                          capture_output=True, text=True, timeout=60)


def enroll(hq: HQProcess, folder: Path, device: str, branch: str, role: str, extra: list[str]) -> Path:
    """A fresh device enrolled by its one-time code (as tests/uplink/test_enrollment.py does)."""
    data_dir, config = folder / device / "data", folder / device / "device.toml"
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "enroll", "--hq", hq.url, "--data-dir",
                             str(data_dir), "--config-out", str(config), "--poll-s", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        code = re.match(r"SMARTQ_ENROLL_CODE (\S+)$", proc.stdout.readline().strip())
        assert code, proc.stderr.read() if proc.stderr else ""
        done = hq_cli(hq, "enroll", "--code", code[1], "--branch", branch, "--role", role, "--id", device, *extra)
        assert done.returncode == 0, done.stderr
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return config


def loopback(config: Path, port: int, peers: dict[str, int]) -> None:
    text = config.read_text()
    static = ", ".join(f'"{d}@127.0.0.1:{p}"' for d, p in peers.items())
    text = text.replace('[lan]\nlisten = "0.0.0.0:8441"\nmdns = true',
                        f'[lan]\nlisten = "127.0.0.1:{port}"\nmdns = false\nstatic_peers = [{static}]')
    text = text.replace("[hq]\n", "[hq]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items()), 1)
    config.write_text(text)


class Site:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tz = midday_timezone()
        tls = free_port()
        self.hq = HQProcess(folder / "hq", extra={"link_tls_port": tls, "link_url": f"https://127.0.0.1:{tls}",
                                                  "web_rate_per_minute": 0}).start()
        self.url = self.hq.url
        self.nodes: dict[str, NodeProcess] = {}
        try:
            run_async(self._branches())
            configs = {d: enroll(self.hq, folder, d, b, role, extra) for d, (b, role, extra) in DEVICES.items()}
            ports = {d: free_port() for d in configs}
            for device, config in configs.items():
                branch = DEVICES[device][0]
                loopback(config, ports[device], {d: p for d, p in ports.items() if d != device and DEVICES[d][0] == branch})
                self.nodes[device] = NodeProcess(config, log_path=folder / f"{device}.log")
            for node in self.nodes.values():
                wait_for(lambda n=node: n.request("GET", "/api/v1/state")[1]["hq"]["status"] == "online", 60)
        except BaseException:
            self.stop()
            raise

    async def _branches(self) -> None:
        async with aiohttp.ClientSession() as s:
            self.token = await admin_token(s, self.url)
            auth = {"Authorization": f"Bearer {self.token}"}
            for org in (ORG, "other"):
                async with s.post(f"{self.url}/api/v1/orgs", json={"id": org, "name": org.title()}, headers=auth) as r:
                    assert r.status == 201, await r.text()
            for branch, name in BRANCHES.items():
                write_sample(self.folder / f"template-{branch}", branch_id=branch, branch_name=name, timezone=self.tz,
                             port_base=0)
                config = dataclasses.replace(load_config(self.folder / f"template-{branch}" / "kiosk.toml"), roster=())
                await register_branch(s, self.url, self.token, ORG, config, hours=("00:00", "23:45"),
                                      weekdays=range(7))
            async with s.post(f"{self.url}/api/v1/orgs/other/branches", headers=auth, json={
                    "id": "elsewhere", "name": "Elsewhere", "timezone": self.tz}) as r:
                assert r.status == 201, await r.text()
            for email, role, org, branch in ((ADMIN, "org_admin", ORG, None), (MANAGER, "branch_manager", ORG, "east"),
                                             (STAFF, "staff", ORG, "east"), (OTHER, "org_admin", "other", None)):
                async with s.post(f"{self.url}/api/v1/users", headers=auth, json={
                        "email": email, "password": PW, "role": role, "org": org,
                        **({"branch": branch} if branch else {})}) as r:
                    assert r.status == 201, await r.text()

    def state(self, device: str) -> dict[str, Any]:
        status, body = self.nodes[device].request("GET", "/api/v1/state")
        assert status == 200, body
        return body

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.hq.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    s = Site(tmp_path_factory.mktemp("console-catalogue"))
    yield s
    s.stop()


def login(browser: Any, site: Site, email: str, lang: str = "en") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "smartq_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(f"{site.url}/console/login")
    page.fill("#email", email)
    page.fill("#password", PW)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{site.url}/console")
    return page


def kiosk_services(site: Site, device: str, language: str = "en") -> list[dict[str, Any]]:
    """What the kiosk offers: its view-model (kiosk_ui, no window) fed by the node's local API."""
    return run_async(_kiosk(site, device, lambda vm: list(vm.services), language))


async def _kiosk(site: Site, device: str, fn: Any, language: str = "en") -> Any:
    for k, v in (("KIVY_NO_ARGS", "1"), ("KIVY_NO_CONFIG", "1"), ("KIVY_LOG_MODE", "PYTHON"), ("KIVY_NO_FILELOG", "1")):
        os.environ.setdefault(k, v)
    from appliance.client import NodeClient
    from kiosk_ui.viewmodels import KioskViewModel, SilentSpeaker
    client = NodeClient(site.nodes[device].url, timeout=5.0)
    try:
        vm = KioskViewModel(client, clock=time.monotonic, speaker=SilentSpeaker(), phone_region="RW",
                            language=language)
        await vm.refresh()
        result = fn(vm)
        return await result if asyncio.iscoroutine(result) else result
    finally:
        await client.close()


def test_an_org_admin_adds_a_catalogue_service_and_both_branches_kiosks_offer_it(site: Site, browser: Any):
    page = login(browser, site, ADMIN)
    page.get_by_role("link", name="Service catalogue").click()
    page.fill("#service_id", "tax")
    page.fill("#letter", "T")
    for lang, name in (("en", "Taxes"), ("fr", "Impôts"), ("rw", "Imisoro"), ("sw", "Kodi"), ("es", "Impuestos")):
        page.fill(f"#name_{lang}", name)
    page.fill("#slot_minutes", "20")
    page.fill("#capacity", "2")
    page.select_option("#icon", "money")
    page.get_by_role("button", name="Add the service").click()
    assert "The service was added to the catalogue." in page.locator("main").inner_text()
    page.get_by_role("button", name="Save the offer in East Office").click()
    page.fill("#capacity-west", "4")
    page.get_by_role("button", name="Save the offer in West Office").click()
    assert page.locator('form[data-branch="west"] legend').inner_text().endswith("offered")
    screenshots(page, "console-catalogue-service")
    page.context.close()

    for device in ("kiosk-east", "kiosk-west"):  # after one link round, each node lists it
        tax = wait_for(lambda d=device: next((s for s in site.state(d)["services"] if s["id"] == "tax"), None), 30)
        assert tax["letter"] == "T" and tax["icon"] == "money" and tax["names"]["fr"] == "Impôts"
        offered = {s["id"]: s for s in kiosk_services(site, device, "fr")}
        assert offered["tax"]["name"] == "Impôts" and offered["tax"]["icon"] == "money"
    status, ticket = site.nodes["kiosk-west"].request("POST", "/api/v1/tickets", {"service": "tax"})
    assert status == 201 and ticket["label"].startswith("T"), ticket

    # Withdrawn from east: its kiosk stops offering it, the west one still does.
    page = login(browser, site, ADMIN)
    page.goto(f"{site.url}/console/orgs/{ORG}/catalogue/tax")
    page.uncheck("#offered-east")
    page.get_by_role("button", name="Save the offer in East Office").click()
    assert page.locator('form[data-branch="east"] legend').inner_text().endswith("withdrawn")
    page.context.close()
    wait_for(lambda: any(s["id"] == "tax" and s.get("enabled") is False for s in site.state("kiosk-east")["services"]), 30)
    assert "tax" not in [s["id"] for s in kiosk_services(site, "kiosk-east")]
    assert "tax" in [s["id"] for s in kiosk_services(site, "kiosk-west")]
    status, refused = site.nodes["kiosk-east"].request("POST", "/api/v1/tickets", {"service": "tax"})
    assert status == 409 and refused["error"]["code"] == "service_withdrawn"


def test_a_pin_set_in_the_console_logs_a_counter_in_at_the_node(site: Site, browser: Any):
    page = login(browser, site, ADMIN)
    page.goto(f"{site.url}/console/branches/west")
    page.fill("#staff_id", "zawadi")
    page.fill("#staff_name", "Zawadi Mushi")
    page.fill("#pin", "5829")
    page.get_by_role("button", name="Save the staff member").click()
    assert "The staff member and PIN were saved and sent to the branch." in page.locator("main").inner_text()
    page.context.close()

    def logged_in() -> dict[str, Any] | None:
        status, body = site.nodes["counter-west"].request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "5829"})
        return body if status == 200 else None
    assert wait_for(logged_in, 30)["staff"] == {"id": "zawadi", "name": "Zawadi Mushi"}
    status, _ = site.nodes["counter-west"].request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "5820"})
    assert status == 401


def _next_slot(site: Site, branch: str) -> str:
    """Today's first free slot starting at least an hour from now (a started slot is not bookable)."""
    day = datetime.now(ZoneInfo(site.tz)).date().isoformat()
    got = run_async(_get(f"{site.url}/api/v1/public/branches/{branch}/availability?service=general&date={day}"))
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    return next(s["start"] for s in got["slots"] if s["available"] and datetime.fromisoformat(s["start"]) > later)


async def _get(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return await r.json()


async def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.json()


def test_a_manager_reassigns_a_booking_and_a_ticket_and_the_other_office_checks_them_in(site: Site, browser: Any):
    status, booked = run_async(_post(f"{site.url}/api/v1/public/bookings", {
        "branch": "east", "service": "general", "start": _next_slot(site, "east"), "name": "Ada",
        "email": "ada@example.org"}))
    assert status == 201, booked
    code = booked["code"]
    status, walk_in = site.nodes["kiosk-east"].request("POST", "/api/v1/tickets", {"service": "general"})
    assert status == 201, walk_in

    page = login(browser, site, MANAGER)
    page.get_by_role("link", name="Reassign", exact=True).click()
    row = page.locator(f'tr[data-code="{code}"]')
    row.locator("select").select_option("west/general")
    row.get_by_role("button", name=f"Move booking {code}").click()
    assert "The booking was moved" in page.locator("main").inner_text()
    # the walk-in reaches HQ over the link, then the manager moves it too
    ticket_row = page.locator(f'tr[data-ticket="{walk_in["id"]}"]')
    for _ in range(60):
        if ticket_row.count():
            break
        time.sleep(0.5)
        page.reload()
    ticket_row.locator("select").select_option("west/general")
    ticket_row.get_by_role("button", name=f"Move ticket {walk_in['label']}").click()
    notice = page.locator("main p.notice").inner_text()
    new_code = re.search(r"new code: (\S{4}-\S{4})", notice)[1]
    screenshots(page, "console-reassign")
    page.context.close()

    # East: the booking is cancelled there, the ticket left the line.
    def east_done() -> bool:
        status, t = site.nodes["kiosk-east"].request("GET", f"/api/v1/tickets/{walk_in['id']}")
        return status == 200 and t["status"] == "moved"

    def east_explained() -> str:
        ticket = site.nodes["kiosk-east"].request("GET", f"/api/v1/tickets/{walk_in['id']}")
        log = site.nodes["kiosk-east"].log_path.read_text(errors="replace").splitlines()[-15:]
        return f"ticket {ticket}; link {site.state('kiosk-east').get('hq')}; node log tail: {log}"
    wait_for(east_done, 30, explain=east_explained)

    def same_state() -> bool:  # HQ's fold of east (its ticket.moved included) equals the node's
        at_hq = run_async(_get(f"{site.url}/api/v1/branches/east/link", site.token))["state_hash"]
        return at_hq == site.state("kiosk-east")["state_hash"]
    wait_for(same_state, 30)
    status, refused = site.nodes["kiosk-east"].request("POST", "/api/v1/tickets", {"booking_code": code})
    assert status in (404, 409), refused

    # West: its kiosk checks both codes in; the moved ticket keeps its original arrival.
    def checked_in(c: str) -> Any:
        async def go(vm: Any) -> Any:
            vm.go("booking")
            vm.set_booking_code(c)
            return vm.ticket if await vm.issue_booking() else None
        return run_async(_kiosk(site, "kiosk-west", go))
    booking_ticket = wait_for(lambda: checked_in(code), 30)
    assert booking_ticket["service"] == "general" and booking_ticket["label"].startswith("A")
    moved_ticket = wait_for(lambda: checked_in(new_code), 30)
    # Its place: ahead of a walk-in taken at west now, because its effective time is the arrival at east.
    status, later = site.nodes["kiosk-west"].request("POST", "/api/v1/tickets", {"service": "general"})
    assert status == 201
    status, again = site.nodes["kiosk-west"].request("GET", f"/api/v1/tickets/{moved_ticket['id']}")
    assert again["position"] < later["position"], (again, later)


def test_hours_set_in_the_console_make_the_kiosk_refuse_a_walk_in_with_the_opening_time(site: Site, browser: Any):
    """It is about noon at the branches (midday_timezone): 06:00-07:00 every day closes east now."""
    page = login(browser, site, ADMIN)
    page.goto(f"{site.url}/console/branches/east")
    for wd in range(7):
        page.fill(f"#opens{wd}", "06:00")
        page.fill(f"#closes{wd}", "07:00")
    page.get_by_role("button", name="Save the opening hours").click()
    assert "The opening hours were saved and sent to the branch." in page.locator("main").inner_text()
    page.context.close()
    wait_for(lambda: site.state("kiosk-east")["branch"]["hours"]["open"] is False, 30)

    async def walk_in(vm: Any) -> tuple[bool, str, str]:
        took = await vm.tap_service("general")
        return took, vm.closed_text, vm.error
    took, closed_text, error = run_async(_kiosk(site, "kiosk-east", walk_in))
    assert not took and closed_text == "Closed. Opens tomorrow at 06:00." and error == closed_text
    took, closed_text, _ = run_async(_kiosk(site, "kiosk-east", walk_in, "fr"))
    assert not took and closed_text == "Fermé. Ouvre demain à 06:00."


def test_managers_staff_and_other_tenants_get_the_403_page(site: Site, browser: Any):
    pages = {who: login(browser, site, who) for who in (MANAGER, STAFF, OTHER)}
    for who, path in ((MANAGER, f"/console/orgs/{ORG}/catalogue"), (STAFF, f"/console/orgs/{ORG}/catalogue"),
                      (STAFF, f"/console/orgs/{ORG}/catalogue/tax"), (STAFF, "/console/reassign/east"),
                      (MANAGER, "/console/reassign/west"), (OTHER, f"/console/orgs/{ORG}/catalogue"),
                      (OTHER, f"/console/orgs/{ORG}/catalogue/tax"), (OTHER, "/console/reassign/east")):
        response = pages[who].goto(f"{site.url}{path}")
        assert response.status == 403 and pages[who].locator("h1").inner_text() == "Not allowed", (who, path)
    for p in pages.values():
        p.context.close()


def test_catalogue_and_reassign_pages_axe_in_five_languages(site: Site, browser: Any):
    problems: dict[str, Any] = {}
    for lang in LANGS:
        page = login(browser, site, ADMIN, lang)
        for path in (f"/console/orgs/{ORG}/catalogue", f"/console/orgs/{ORG}/catalogue/tax", "/console/reassign/east"):
            page.goto(f"{site.url}{path}")
            assert page.locator("html").get_attribute("lang") == lang
            if found := axe_violations(page):
                problems[f"{lang} {path}"] = found
            if lang == "en":  # no horizontal scrolling at 320 px wide and at 200% zoom
                if reflow := reflow_problems(page):
                    problems[f"reflow {path}"] = reflow
                page.set_viewport_size({"width": 1280, "height": 800})
        # a form with errors too
        page.goto(f"{site.url}/console/orgs/{ORG}/catalogue")
        page.fill("#service_id", "Bad Id!")
        page.locator("main form button[type=submit]").last.click()
        if found := axe_violations(page):
            problems[f"{lang} catalogue with errors"] = found
        page.context.close()
    assert problems == {}
