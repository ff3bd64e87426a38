"""HQ's citizens' pages (DESIGN §9): load, live push latency and page weight.

A real HQ process (`python -m hq`) with the sample branch enrolled and a real kiosk node linked
to it (the branch-link test helpers start them), all on 127.0.0.1:

1. load: --visitors simulated visitors (own cookies each), each looping through the booking
   flow's pages: the office, a day's slots, the booking form, a ticket's status page, and every
   --book-every rounds a booking POST; page views/s and latency p50/p99 over --seconds, first
   paced (together they offer --rate views/s, the budget's 300), then closed loop (the ceiling);
2. push: a status page open in Debian's chromium (Playwright); --calls times the node calls a
   ticket at counter 1 and the time until that ticket appears in the page's "now serving" list
   is taken from the page itself (a MutationObserver): node call -> HQ -> SSE -> DOM;
3. weight: each page's transferred size gzipped, with the CSS and (status page) JS it loads.

    .venv/bin/python -m bench.bench_web [--visitors 200] [--rate 300] [--seconds 10] [--calls 50] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bench.common import call_to_dom, latency_summary, write

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "uplink"), str(ROOT / "tests" / "appliance"), str(ROOT / "tests" / "hq" / "web")]

from linktest import HQProcess, enroll_sample, hq_settings, midday_timezone, wait_for  # noqa: E402
from procs import NodeProcess  # noqa: E402

BRANCH = "kigali-main"


class Site:
    def __init__(self, folder: Path, workers: int) -> None:
        self.folder, self.tz = folder, midday_timezone()
        self.hq = HQProcess(folder / "hq")
        settings = {**hq_settings(folder / "hq" / "data", self.hq.port), "web_rate_per_minute": 0,
                    "workers": workers, "log_level": "WARNING"}
        (folder / "hq" / "hq.toml").write_text("[hq]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        self.hq.start()
        self.url = self.hq.url
        asyncio.run(self._enroll())
        self.node = NodeProcess(folder / "branch" / "kiosk.toml", log_path=folder / "kiosk.log")
        wait_for(lambda: self.node.request("GET", "/api/v1/state")[1]["hq"]["status"] == "online")

    async def _enroll(self) -> None:
        async with aiohttp.ClientSession() as s:
            token = await enroll_sample(s, self.url, self.folder / "branch", tz=self.tz)
            async with s.put(f"{self.url}/api/v1/branches/{BRANCH}/services/bench", headers={
                    "Authorization": f"Bearer {token}"}, json={"letter": "Z", "slot_minutes": 15, "capacity": 10000,
                                                              "names": {"en": "Bench"}}) as r:
                assert r.status == 200, await r.text()

    def stop(self) -> None:
        try:
            self.node.stop()
        finally:
            self.hq.stop()  # even when the node did not stop cleanly


async def load(site: Site, visitors: int, seconds: float, book_every: int, rate: float) -> dict[str, Any]:
    """Closed loop when ``rate`` is 0, else each visitor paced so that all offer ``rate`` views/s."""
    day = datetime.now(ZoneInfo(site.tz)).date().isoformat()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{site.url}/b/{BRANCH}/book/slot?service=bench&date={day}") as r:
            starts = re.findall(r'name="start" value="(\d+)">', await r.text())
    tokens = []
    for _ in range(20):
        status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "general"})
        tokens.append(ticket["status_url"].removeprefix(site.url))
    await asyncio.sleep(1.0)  # the link delivers them to HQ
    pages = ["/", f"/b/{BRANCH}", f"/b/{BRANCH}/book/slot?service=bench&date={day}"]
    latencies: dict[str, list[float]] = {"office": [], "slots": [], "book": [], "status": [], "book_post": []}
    errors: dict[str, int] = {}
    gap = visitors / rate if rate else 0.0
    began = time.monotonic()
    stop_at = began + seconds
    done_at: list[float] = []  # completion times: the rate counts only views done inside the window
    rng = random.Random(7)

    async def visitor(n: int) -> None:
        nonlocal errors
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar, headers={"Accept-Encoding": "gzip"}) as s:
            rounds = 0
            # Open loop when paced: each visitor's requests follow a schedule of its own, so a slow
            # answer does not lower the offered rate (visitors start spread over one gap).
            next_at = time.monotonic() + rng.random() * (gap or 1.0)
            await asyncio.sleep(next_at - time.monotonic())
            while time.monotonic() < stop_at:
                start = rng.choice(starts)
                for kind, path in (("office", pages[1]), ("slots", pages[2]),
                                   ("book", f"/b/{BRANCH}/book/contact?service=bench&start={start}"),
                                   ("status", rng.choice(tokens))):
                    t0 = time.perf_counter()
                    async with s.get(site.url + path) as r:
                        await r.read()
                        ok = r.status == 200
                    latencies[kind].append(time.perf_counter() - t0)
                    done_at.append(time.monotonic())
                    if not ok:
                        errors[f"{kind} {r.status}"] = errors.get(f"{kind} {r.status}", 0) + 1
                    if gap:
                        next_at += gap * (0.5 + rng.random())
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                rounds += 1
                if book_every and rounds % book_every == 0:
                    csrf = jar.filter_cookies(aiohttp.client.URL(site.url)).get("smartq_csrf")
                    t0 = time.perf_counter()
                    async with s.post(f"{site.url}/b/{BRANCH}/book/contact", allow_redirects=False, data={
                            "csrf_token": csrf.value if csrf else "", "service": "bench", "start": start,
                            "email": f"v{n}@example.org"}) as r:
                        await r.read()
                        if r.status != 303:
                            errors[f"book_post {r.status}"] = errors.get(f"book_post {r.status}", 0) + 1
                    latencies["book_post"].append(time.perf_counter() - t0)

    cpu0, load0 = server_cpu_s(site), os.getloadavg()[0]
    await asyncio.gather(*(visitor(i) for i in range(visitors)))
    elapsed = time.monotonic() - began
    in_window = sum(1 for t in done_at if t <= stop_at)
    cpu = server_cpu_s(site) - cpu0
    views = [x for k, v in latencies.items() for x in v]
    return {"visitors": visitors, "offered_views_per_s": rate or "closed loop", "seconds": round(elapsed, 2), "page_views": len(views),
            "views_per_s": round(in_window / seconds, 1), "errors": errors,
            # the server's own cost, comparable when other work steals the cores; and that work
            "server_cpu_ms_per_view": round(cpu * 1000 / max(1, len(views)), 3),
            "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], "all": latency_summary(views),
            **{k: latency_summary(v) for k, v in latencies.items() if v}}


async def push(site: Site, calls: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from browser import ARGS, CHROMIUM

    status, watched = site.node.request("POST", "/api/v1/tickets", {"service": "payments"})
    tickets = [site.node.request("POST", "/api/v1/tickets", {"service": "general"})[1] for _ in range(calls)]
    status, login = site.node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
    auth = {"Authorization": f"Bearer {login['token']}"}
    site.node.request("POST", "/api/v1/counters/c1/open", headers=auth)
    wait_for(lambda: _ok(watched["status_url"]))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page()
        await page.goto(watched["status_url"])
        await page.locator("#live[data-live=open]").wait_for()
        samples, missed = await call_to_dom(page, site.node, tickets, auth, "serving")
        await browser.close()
    return {"calls": calls, "missed": missed, "call_to_dom": latency_summary(samples)}


def server_cpu_s(site: Site) -> float:
    """User+system CPU seconds of the HQ process and its worker children (/proc)."""
    assert site.hq.proc is not None
    root, total = site.hq.proc.pid, 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(entry.name) == root or int(fields[1]) == root:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _ok(url: str) -> bool:
    import urllib.request
    try:
        return urllib.request.urlopen(url).status == 200
    except OSError:
        return False


async def weight(site: Site) -> dict[str, Any]:
    day = datetime.now(ZoneInfo(site.tz)).date().isoformat()
    status, ticket = site.node.request("POST", "/api/v1/tickets", {"service": "general"})
    wait_for(lambda: _ok(ticket["status_url"]))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), auto_decompress=False,
                                     headers={"Accept-Encoding": "gzip"}) as s:
        async with s.get(f"{site.url}/b/{BRANCH}/book/slot?service=bench&date={day}") as r:
            import gzip
            start = re.findall(r'name="start" value="(\d+)">', gzip.decompress(await r.read()).decode())[0]
        async with s.get(f"{site.url}/b/{BRANCH}/book/contact?service=bench&start={start}") as r:
            await r.read()
        csrf = s.cookie_jar.filter_cookies(aiohttp.client.URL(site.url))["smartq_csrf"].value
        async with s.post(f"{site.url}/b/{BRANCH}/book/contact", allow_redirects=False, data={
                "csrf_token": csrf, "service": "bench", "start": start, "email": "w@example.org"}) as r:
            confirmation = r.headers["Location"]
        out = {}
        for name, path in (("offices", "/"), ("office", f"/b/{BRANCH}"), ("service", f"/b/{BRANCH}/book"),
                           ("day", f"/b/{BRANCH}/book/day?service=bench"),
                           ("slots", f"/b/{BRANCH}/book/slot?service=bench&date={day}"),
                           ("book", f"/b/{BRANCH}/book/contact?service=bench&start={start}"),
                           ("confirmation", confirmation), ("status", ticket["status_url"].removeprefix(site.url)),
                           ("login", "/account/login")):
            async with s.get(site.url + path) as r:
                html_bytes = await r.read()
                gz = r.headers.get("Content-Encoding") == "gzip"
            text = gzip.decompress(html_bytes).decode() if gz else html_bytes.decode()
            assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', text)
            total = len(html_bytes)
            for a in assets:
                async with s.get(site.url + a) as r:
                    total += len(await r.read())
            out[name] = {"html_gz_bytes": len(html_bytes), "with_assets_gz_bytes": total, "assets": assets}
    return {"pages": out, "largest_kb": round(max(v["with_assets_gz_bytes"] for v in out.values()) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--book-every", type=int, default=5, help="each visitor books every N rounds (0: never)")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="HQ server processes")
    parser.add_argument("--rate", type=float, default=300.0, help="page views/s all visitors offer in the paced phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        site = Site(Path(tmp), args.workers)
        try:
            figures = {"workers": args.workers, "weight": asyncio.run(weight(site)),
                       "push": asyncio.run(push(site, args.calls)),
                       "paced": asyncio.run(load(site, args.visitors, args.seconds, args.book_every, args.rate)),
                       "saturated": asyncio.run(load(site, args.visitors, args.seconds, args.book_every, 0))}
        finally:
            site.stop()
    write("web", figures)


if __name__ == "__main__":
    main()
