"""Bookings nobody checked in become no-shows after their slot (the scheduler's job), on a real
HQ: a check-in that reaches HQ late undoes the mark; a no-show cannot be moved or cancelled."""

from __future__ import annotations


from hq.ingest import ingest_branch_events
from hq.scheduler import no_show_job
from hq.web import HQ_KEY
from hqtest import T0, api, connect_db
from webtest import Device

B = "/api/v1/public"
PHONE = "+41 44 668 18 00"


def _status(srv, code: str) -> tuple[str, int | None]:
    with connect_db(srv) as c:
        return tuple(c.execute("SELECT status, no_show_at FROM bookings WHERE code = ?", (code,)).fetchone())


async def test_unchecked_bookings_become_no_shows_after_the_slot_and_a_late_check_in_undoes_it(server, session):
    hq = server.app[HQ_KEY]
    codes = {}
    for hhmm, who in (("08:15", "came"), ("08:15", "absent"), ("08:30", "late"), ("09:00", "later"), ("08:45", "cancelled")):
        codes[who] = (await api(session, "POST", f"{server.url}{B}/bookings", 201, json={
            "branch": "acme-main", "service": "general", "start": f"2030-01-07T{hhmm}:00+01:00", "phone": PHONE}))["code"]
    await api(session, "POST", f"{server.url}{B}/bookings/{codes['cancelled']}/cancel", 200, json={"contact": PHONE})
    kiosk = Device("kiosk-ns")
    await kiosk.register(server, session)
    base = {"service": "general", "day": "20300107", "priority": 0, "language": "en"}
    server.clock.t = T0 + 14 * 60
    await ingest_branch_events(hq, [kiosk.event("ticket.issued", base | {
        "ticket": "20300107-A001", "number": 1, "label": "A001", "booking": codes["came"]}, T0 + 14 * 60)])

    server.clock.t = T0 + 31 * 60  # 08:31: the 08:15 slot has ended, 08:30 has not
    assert await no_show_job(hq) == 1
    assert _status(server, codes["absent"]) == ("no_show", T0 + 31 * 60)
    assert _status(server, codes["came"]) == ("booked", None)  # checked in: the ticket tells the rest
    assert _status(server, codes["late"])[0] == "booked" and _status(server, codes["later"])[0] == "booked"
    assert _status(server, codes["cancelled"])[0] == "cancelled"
    assert await no_show_job(hq) == 0  # idempotent

    server.clock.t = T0 + 61 * 60  # 09:01: 08:30 and 08:45 ended
    assert await no_show_job(hq) == 1
    assert _status(server, codes["late"])[0] == "no_show"
    # A no-show can be neither moved nor cancelled; the citizen sees it as such.
    err = await api(session, "POST", f"{server.url}{B}/bookings/{codes['late']}/reschedule", 409,
                    json={"contact": PHONE, "start": "2030-01-07T11:00:00+01:00"})
    assert err["error"]["code"] == "no_show"
    err = await api(session, "POST", f"{server.url}{B}/bookings/{codes['late']}/cancel", 409, json={"contact": PHONE})
    assert err["error"]["code"] == "no_show"
    shown = await api(session, "POST", f"{server.url}{B}/bookings/{codes['late']}/lookup", 200, json={"contact": PHONE})
    assert shown["status"] == "no_show" and "token" not in shown

    # The branch was offline: its kiosk checked 'late' in at 08:40 and HQ hears of it at 09:02.
    server.clock.t = T0 + 62 * 60
    await ingest_branch_events(hq, [kiosk.event("ticket.issued", base | {
        "ticket": "20300107-A002", "number": 2, "label": "A002", "booking": codes["late"]}, T0 + 40 * 60)])
    assert _status(server, codes["late"]) == ("booked", None)
    assert await no_show_job(hq) == 0
    # The 09:00 booking was never checked in; the job ran again only 8 days later: too old to mark.
    server.clock.t = T0 + 8 * 86400
    assert await no_show_job(hq) == 0 and _status(server, codes["later"])[0] == "booked"
