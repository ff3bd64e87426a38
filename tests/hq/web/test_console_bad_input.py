"""Bad input to every console form and filter is answered with a page (a 4xx, the form again, or
a redirect), never a 500: junk, very long, empty, negative and impossible values in every field
any console form reads, posted by an org admin and a branch manager to every POST route, and junk
query strings on the GET pages. (Each form's own validation is tested with its page.)"""

from __future__ import annotations

from test_console import console, user_id  # noqa: F401  (the logged-in browsers fixture)

JUNK = ["", "x" * 5000, "-1", "2030-02-30", "é" * 300]
FIELDS = ["email", "name", "role", "org", "branch", "password", "current", "new", "new2", "service_id", "letter",
          "name_en", "name_fr", "slot_minutes", "capacity", "icon", "bookable", "target_wait_minutes", "offered",
          "slot_minutes-acme-main", "capacity-acme-main", "target_wait_minutes-acme-main", "day", "reason",
          "opens0", "closes0", "notices_en", "name_c1_en", "staff_id", "staff_name", "pin", "target_general",
          "timezone", "address", "slots", "cancel", "to", "id", "confirm", "share", "weeks"]
POSTS = ["/console/accounts/new", "/console/accounts/{uid}", "/console/accounts/{uid}/disable",
         "/console/accounts/{uid}/reset", "/console/accounts/{uid}/sessions", "/console/accounts/{uid}/delete",
         "/console/password", "/console/orgs", "/console/orgs/acme/catalogue", "/console/orgs/acme/catalogue/general",
         "/console/orgs/acme/catalogue/general/offers/acme-main", "/console/branches/acme-main/details",
         "/console/branches/acme-main/hours", "/console/branches/acme-main/closed-days",
         "/console/branches/acme-main/closed-days/2030-13-45/delete", "/console/branches/acme-main/notices",
         "/console/branches/acme-main/counter-names", "/console/branches/acme-main/staff",
         "/console/branches/acme-main/targets", "/console/calendar/acme-main/general/2030-01-08/block",
         "/console/calendar/acme-main/general/2030-01-08/unblock",
         "/console/calendar/acme-main/general/2030-01-08/capacity",
         "/console/calendar/acme-main/general/9999-12-31/block", "/console/calendar/acme-main/nope/2030-01-08/block",
         "/console/reassign/acme-main/bookings/XXXX", "/console/reassign/acme-main/tickets/20300107-A001"]
GETS = ["/console/analytics?from=x&to=y&by=zz&branch=nope&service=%00", "/console/analytics?to=0001-01-05",
        "/console/analytics/heatmap?from=9999-12-01&to=9999-12-31", "/console/analytics/bottlenecks?share=x",
        "/console/analytics/estimates?day=0001-01-01", "/console/staffing/acme-main?weeks=-1&share=x",
        "/console/calendar/acme-main?service=nope&week=2030-99-01", "/console/calendar/acme-main?week=9999-12-31",
        "/console/calendar/acme-main/general/9999-12-31", "/console/appointments/acme-main?date=0001-01-01",
        "/console/audit?before=-5", "/console/orgs/acme/catalogue?take=%00", "/console/fleet?format=xml",
        "/console/accounts/99999999999999999999999"]


async def test_no_console_form_or_filter_answers_bad_input_with_a_500(console):  # noqa: F811
    uid = user_id(console, "staff@acme.test")
    errors = []
    for who in ("admin@acme.test", "manager@acme.test"):
        b = await console.login(who)
        for path in GETS:
            status, _, _ = await b.get(path)
            if status >= 500:
                errors.append((who, path, status))
        for path in POSTS:
            for junk in JUNK:
                status, _, _ = await b.post(path.format(uid=uid), {f: junk for f in FIELDS})
                if status >= 500:
                    errors.append((who, path, junk[:12], status))
    assert errors == []
