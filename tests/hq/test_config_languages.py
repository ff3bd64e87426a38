"""Counter names and display notices in every language, set at HQ: the admin API takes them,
the signed config events carry them in the shapes the node folds (appliance.model), and the
config HQ writes for an enrolled device holds them as valid TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path

from appliance.config import parse_config
from hq.trust import device_config
from hq.web import HQ_KEY

from hqtest import api, connect_db

V = "/api/v1"
NAMES = {"en": "Counter 1", "fr": "Guichet 1", "rw": "Idirishya 1", "sw": "Dirisha 1", "es": "Ventanilla 1"}
NOTICES = {"en": ["Please keep your ticket."], "fr": ["Veuillez garder votre ticket."],
           "rw": ["Mubike itike yanyu."], "sw": ["Tafadhali hifadhi tiketi yako."], "es": ["Conserve su número."]}


async def _outbox(server, session, type_: str) -> dict:
    events = (await api(session, "GET", f"{server.url}{V}/branches/acme-main/outbox", 200, params={"limit": 1000},
                        headers=server.h("acme-admin")))["events"]
    return [e["payload"] for e in events if e["type"] == type_][-1]


async def test_counter_names_and_notices_in_five_languages_reach_the_config_events(server, session) -> None:
    admin = server.h("acme-admin")
    counter = await api(session, "PUT", f"{server.url}{V}/branches/acme-main/counters/c1", 200, headers=admin,
                        json={"name": "Counter 1", "names": NAMES, "services": ["general"]})
    assert counter["names"] == NAMES
    assert (await _outbox(server, session, "config.counter"))["names"] == NAMES
    branch = await api(session, "PATCH", f"{server.url}{V}/branches/acme-main", 200, headers=admin,
                       json={"notices": NOTICES})
    assert branch["notices"] == NOTICES
    # The node's shape (appliance.model.config_events): per-language lines, no common ones.
    payload = await _outbox(server, session, "config.branch")
    assert payload["notices"] == [] and payload["notices_by_language"] == NOTICES
    got = await api(session, "GET", f"{server.url}{V}/branches/acme-main", 200, headers=admin)
    assert got["notices"] == NOTICES and got["counters"][0]["names"] == NAMES

    # Back to one list for every language: no per-language lines are sent any more.
    await api(session, "PATCH", f"{server.url}{V}/branches/acme-main", 200, headers=admin, json={"notices": ["Hi"]})
    payload = await _outbox(server, session, "config.branch")
    assert payload["notices"] == ["Hi"] and "notices_by_language" not in payload
    # A counter without names sends none (the node then shows `name` everywhere).
    await api(session, "PUT", f"{server.url}{V}/branches/acme-main/counters/c2", 200, headers=admin,
              json={"name": "Counter 2", "services": []})
    assert "names" not in await _outbox(server, session, "config.counter")


async def test_bad_names_and_notices_are_a_clear_400(server, session) -> None:
    admin = server.h("acme-admin")
    for body, word in (({"name": "C", "names": {"not a language": "x"}}, "language code"),
                       ({"name": "C", "names": {"fr": ""}}, "names.fr"),
                       ({"name": "C", "names": ["Guichet"]}, "names must be an object"),
                       ({"name": "C", "names": {"fr": "x" * 121}}, "names.fr")):
        err = await api(session, "PUT", f"{server.url}{V}/branches/acme-main/counters/c1", 400, headers=admin, json=body)
        assert word in err["error"]["message"], (body, err)
    for notices, word in (({"fr": "not a list"}, "notices.fr"), ({"??": ["x"]}, "language code"),
                          ({"fr": ["x" * 201]}, "notices.fr"), ({"en": ["x"] * 21}, "notices.en"), ("text", "notices")):
        err = await api(session, "PATCH", f"{server.url}{V}/branches/acme-main", 400, headers=admin,
                        json={"notices": notices})
        assert word in err["error"]["message"], (notices, err)


async def test_an_enrolled_devices_config_holds_names_and_notices_per_language(server, session, tmp_path: Path) -> None:
    admin = server.h("acme-admin")
    await api(session, "PUT", f"{server.url}{V}/branches/acme-main/counters/c1", 200, headers=admin,
              json={"name": "Counter 1", "names": NAMES, "services": ["general"]})
    await api(session, "PATCH", f"{server.url}{V}/branches/acme-main", 200, headers=admin, json={"notices": NOTICES})
    key = (await api(session, "GET", f"{server.url}{V}/public/hq-key", 200))["public_key_b64"]
    with connect_db(server) as conn:
        text = device_config(conn, branch="acme-main", device="display-1", role="display", counters=[],
                             link_url=server.url, hq_public_key=key)
    config = parse_config(tomllib.loads(text), path=tmp_path / "display-1.toml")
    assert config.notices == () and config.notices_by_language == {k: tuple(v) for k, v in NOTICES.items()}
    assert next(c for c in config.counters if c.id == "c1").names == NAMES
