"""GET /metrics of a real HQ (in-process server on 127.0.0.1, real SQLite): what it counts after
real bookings, ingested branch events and link contact, and who may read it."""

from __future__ import annotations

import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hq.ingest import ingest_branch_events
from hq.link import heard_from
from hq.web import HQ_KEY
from hqtest import T0, api, make_settings, seed, start_server
from webtest import Device, issued


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(session: aiohttp.ClientSession, url: str, expect: int = 200, **kw) -> str:
    async with session.get(f"{url}/metrics", **kw) as r:
        text = await r.text()
        assert r.status == expect, (r.status, text[:300])
        if expect == 200:
            assert r.content_type == "text/plain" and r.headers["Cache-Control"] == "no-store"
        return text


async def test_metrics_count_requests_bookings_events_link_and_outbox(server, session):
    srv = server
    hq = srv.app[HQ_KEY]
    body = {"branch": "acme-main", "service": "general", "start": "2030-01-07T10:00:00+01:00", "phone": "+41446681800"}
    codes = [(await api(session, "POST", f"{srv.url}/api/v1/public/bookings", 201, json=body))["code"] for _ in range(3)]
    await api(session, "POST", f"{srv.url}/api/v1/public/bookings", 409, json=body)  # full
    await api(session, "POST", f"{srv.url}/api/v1/public/bookings/{codes[0]}/cancel", 200,
              json={"contact": "+41446681800"})
    kiosk = Device("kiosk-1")
    await kiosk.register(srv, session)
    batch = [issued(kiosk, "20300107", n, T0 - 90 + n, f"Tok{n:03d}".ljust(22, "q")) for n in (1, 2, 3)]
    await ingest_branch_events(hq, batch, branch="acme-main")
    await ingest_branch_events(hq, batch[:1], branch="acme-main")  # a retried push: a duplicate
    await heard_from(hq, "acme-main")
    srv.clock.t += 42

    text = await scrape(session, srv.url)
    route = "/api/v1/public/bookings"
    assert value(text, "smartq_http_requests_total", route=route, status="201") == 3
    assert value(text, "smartq_http_requests_total", route=route, status="409") == 1
    assert value(text, "smartq_http_request_duration_seconds_count", route=route) == 4
    assert value(text, "smartq_http_request_duration_seconds_bucket", route=route, le="+Inf") == 4
    assert value(text, "smartq_hq_bookings_total", action="created") == 3
    assert value(text, "smartq_hq_bookings_total", action="cancelled") == 1
    assert value(text, "smartq_hq_bookings_upcoming", branch="acme-main") == 2
    assert value(text, "smartq_hq_events_ingested_total", branch="acme-main", result="accepted") == 3
    assert value(text, "smartq_hq_events_ingested_total", branch="acme-main", result="duplicate") == 1
    # the oldest event of the push was 89 s old when stored: the 60 s bucket misses it, 300 s has it
    assert value(text, "smartq_hq_ingest_lag_seconds_bucket", branch="acme-main", le="60.0") == 0
    assert value(text, "smartq_hq_ingest_lag_seconds_bucket", branch="acme-main", le="300.0") == 1
    assert value(text, "smartq_hq_branch_link_age_seconds", branch="acme-main") == 42
    # 3 confirmations and 1 cancellation notice wait (the dispatcher is off in tests): the outbox depth
    outbox = sum(v for (n, labels), v in samples(text).items() if n == "smartq_hq_notification_outbox")
    assert outbox == 4 and value(text, "smartq_hq_notification_outbox", channel="sms", state="due") == 4
    assert value(text, "smartq_hq_notification_oldest_due_seconds") == 42
    assert value(text, "smartq_hq_db_pool", kind="readers") == hq.settings.read_connections
    assert value(text, "smartq_hq_db_call_seconds_count", kind="write") > 0
    assert samples(text)[("smartq_hq_db_in_flight", frozenset({("kind", "read")}))] == 0  # all answered
    assert not re.search(r'route="/api/v1/public/bookings/[0-9A-Z]{4}-', text)  # route templates, never codes


async def test_metrics_are_for_loopback_clients_not_through_a_proxy(server, session):
    await scrape(session, server.url)
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        text = await scrape(session, server.url, 403, headers={header: "203.0.113.9"})
        assert "loopback" in text


async def test_a_metrics_token_lets_a_remote_scraper_in_and_nobody_else(tmp_path, clock):
    runner, srv = await start_server(make_settings(tmp_path, metrics_token="s3cret-scrape-token"), clock)
    try:
        async with aiohttp.ClientSession() as session:
            await seed(srv, session)
            await scrape(session, srv.url, 401)  # even from loopback: the token is the rule now
            await scrape(session, srv.url, 401, headers={"Authorization": "Bearer wrong"})
            await scrape(session, srv.url, 401, headers={"Authorization": srv.h("super")["Authorization"]})
            text = await scrape(session, srv.url, headers={"Authorization": "Bearer s3cret-scrape-token",
                                                           "X-Forwarded-For": "203.0.113.9"})
            assert value(text, "smartq_http_requests_total", route="/api/v1/auth/tokens", status="201") > 0
    finally:
        await runner.cleanup()
