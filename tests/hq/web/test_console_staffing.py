"""Staffing advice with Erlang A and the counters actually open, on a real HQ from signed branch
events: four Mondays 09:00-10:00 where a fifth of the people gave up, two counters open part of
the hour. The figures are recomputed in the test from the generated data."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hq.console.erlang import erlang_a
from hq.ingest import ingest_branch_events
from hq.web import HQ_KEY
from hqtest import api
from test_console import console  # noqa: F401  (the fixture)
from webtest import Device, issued


async def test_erlang_a_where_people_give_up_next_to_the_counters_open(console, session):
    hq = console.app[HQ_KEY]
    await api(session, "PUT", f"{console.url}/api/v1/branches/acme-main/counters/c2", 200, headers=console.h("super"),
              json={"name": "Counter 2", "services": ["general"]})
    kiosk, counter = Device("kiosk-7"), Device("counter-7")
    await kiosk.register(console, session)
    await counter.register(console, session, "counter")
    zone = ZoneInfo("Europe/Zurich")
    kiosk_events, counter_events = [], []
    waits, gave_up = [], 0
    for weeks_back in (4, 3, 2, 1):
        day = date(2030, 1, 7) - timedelta(days=7 * weeks_back)
        start = datetime(day.year, day.month, day.day, 9, 0, tzinfo=zone).timestamp()
        tag = day.strftime("%Y%m%d")
        # c1 open 09:00-10:30 (counts 60 min in the 09 hour), c2 opened 09:20, never closed (midnight ends it)
        counter_events.append(counter.event("counter.opened", {"counter": "c1", "staff": "s1"}, start))
        counter_events.append(counter.event("counter.opened", {"counter": "c2", "staff": "s2"}, start + 1200))
        for i in range(20):
            at = start + 180 * i
            kiosk_events.append(issued(kiosk, tag, i + 1, at, f"Sa{tag}{i:02d}".ljust(22, "z")))
            ticket = f"{tag}-A{i + 1:03d}"
            if i % 5 == 4:  # one in five gives up after 4 minutes
                kiosk_events.append(kiosk.event("ticket.cancelled", {"ticket": ticket}, at + 240))
                gave_up += 1
                continue
            wait = 60 + 30 * (i % 3)
            waits.append(wait)
            for kind, dt in (("ticket.called", wait), ("ticket.started", wait + 10), ("ticket.completed", wait + 310)):
                counter_events.append(counter.event(kind, {"ticket": ticket, "counter": "c1"}, at + dt))
        counter_events.append(counter.event("counter.closed", {"counter": "c1", "staff": "s1"}, start + 5400))
    result = await ingest_branch_events(hq, kiosk_events + counter_events)
    assert result.accepted == len(kiosk_events) + len(counter_events), result.rejected[:3]

    # Independent figures: 20 people an hour, 5 min service, 20 % gave up, patience = mean wait / 0.2.
    per_hour, service_s, target = 20.0, 300.0, 900
    abandon = gave_up / 80
    patience = sum(waits) / len(waits) / abandon
    level = {n: erlang_a(per_hour / 3600, service_s, patience, n, target).service_level for n in range(1, 8)}
    needed = min(n for n in level if level[n] >= 0.9)
    opened = 1 + 40 / 60  # c1 the whole hour, c2 from 09:20

    manager = await console.login("manager@acme.test")
    status, html, _ = await manager.get("/console/staffing/acme-main?weeks=4&share=90")
    assert status == 200
    row = re.search(r'<tr data-key="general-0-9">(.*?)</tr>', html, re.S)[1]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    assert cells[:7] == ["General", "Monday", "09:00", "20", "5 min", str(needed), "2"], cells
    assert cells[7:10] == [f"{round(level[n] * 100)} %" for n in (needed - 1, needed, needed + 1)]
    assert cells[10] == "1.7" and cells[11] == f"{round(level[2] * 100)} %"
    assert cells[12] == f"Erlang A: 20 % gave up, mean patience {round(patience / 60)} min"
    _, text, _ = await manager.get("/console/staffing/acme-main?weeks=4&share=90&format=csv")
    table = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert len(table) == 1 and table[0]["model"] == "erlang_a" and table[0]["counters_needed"] == str(needed)
    assert float(table[0]["counters_open"]) == round(opened, 2)
    assert float(table[0]["mean_patience_s"]) == round(patience, 1) and float(table[0]["abandon_share"]) == 0.2
    assert float(table[0]["share_with_open"]) == round(level[2], 4)
