"""HQ's chain of events for a branch keeps commit order, also when the pass that chains queued
booking events (PostgreSQL, hq/outbox.py) failed and nothing has run it since."""

from __future__ import annotations

import asyncio

import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hq import outbox
from hq.db_pg import CHAIN_LOCK
from hq.signing import event_hash, public_key_hex
from hq.web import HQ_KEY
from hqtest import T0, api
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sync.protocol import encode, sign_headers

BRANCH = "acme-main"


def _chain_of(c, branch: str) -> list[dict]:
    rows = c.execute("SELECT envelope FROM outbox WHERE branch_id = ? ORDER BY seq", (branch,)).fetchall()
    return [orjson.loads(r[0]) for r in rows]


async def _stranded(hq, payload: dict, now_ms: int) -> None:
    """A booking event committed whose chaining pass did not run (the process died, or the pass
    failed): queued on PostgreSQL, chained at once on SQLite (one writer, nothing to defer)."""
    db = getattr(hq.db, "_db", hq.db)  # beneath hq.metrics.MeteredDatabase
    chain, db.chain = getattr(db, "chain", None), None
    try:
        await hq.db.write(lambda c: outbox.emit(c, hq.key, BRANCH, "booking.created", payload, now_ms, defer=True))
    finally:
        db.chain = chain
    if hq.db.dialect == "postgresql":
        assert await hq.db.read(lambda c: outbox.queued_for(c, BRANCH))


async def test_a_direct_event_never_overtakes_a_queued_one(server):
    hq = server.app[HQ_KEY]
    now_ms = int(T0 * 1000)
    await _stranded(hq, {"code": "AAAA-BBBB", "seq_probe": 1}, now_ms)
    # The console cancels that booking (a direct event, as hq/reassign.py emits it).
    await hq.db.write(lambda c: outbox.emit(c, hq.key, BRANCH, "booking.cancelled", {"code": "AAAA-BBBB"}, now_ms + 1))
    chain = await hq.db.read(lambda c: _chain_of(c, BRANCH))
    types = [e["type"] for e in chain]
    assert types.index("booking.created") < types.index("booking.cancelled"), types
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    assert all(e["prev"] == event_hash(p) for p, e in zip(chain, chain[1:]))  # one unbroken chain
    assert not await hq.db.read(lambda c: outbox.queued_for(c, BRANCH))


async def test_a_branch_pull_delivers_events_whose_chaining_pass_failed(server, session):
    hq = server.app[HQ_KEY]
    key = Ed25519PrivateKey.generate()
    await api(session, "POST", f"{server.url}/api/v1/branches/{BRANCH}/devices", 201, headers=server.h("acme-admin"),
              json={"id": "kiosk-1", "role": "kiosk", "public_key": public_key_hex(key.public_key())})
    await _stranded(hq, {"code": "CCCC-DDDD"}, int(T0 * 1000))
    body = encode({"vv": {}, "limit": 1000})
    headers = sign_headers(key, device="kiosk-1", branch=BRANCH, method="POST", path="/sync/v1/pull", body=body,
                           to=outbox.hq_origin(BRANCH))
    async with session.post(f"{server.url}/sync/v1/pull", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        answer = await r.json(content_type=None)
    got = [e for e in answer["events"] if e["origin"] == outbox.hq_origin(BRANCH)]
    assert [e["payload"].get("code") for e in got if e["type"] == "booking.created"] == ["CCCC-DDDD"]
    assert answer["vv"][outbox.hq_origin(BRANCH)] == got[-1]["seq"]


@pytest.mark.parametrize("hq_backend", [pytest.param("postgresql", marks=pytest.mark.pg)], indirect=True)
async def test_a_booking_is_answered_while_the_chain_is_held(server, session, hq_backend):
    """PostgreSQL answers a booking once it is committed: its event is chained by the next pass,
    which runs one at a time over every HQ process. While another process's pass holds the
    chain the booking is still answered, its event waits in the queue, and a read of the chain
    afterwards has it. (SQLite chains inside the booking's transaction: nothing waits.)"""
    hq = server.app[HQ_KEY]
    with psycopg.connect(hq.settings.database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (CHAIN_LOCK,))  # a pass of another HQ process
        try:
            made = await asyncio.wait_for(api(session, "POST", f"{server.url}/api/v1/public/bookings", 201, json={
                "branch": BRANCH, "service": "general", "start": "2030-01-08T09:00:00+01:00",
                "email": "held@chain.test"}), timeout=20)
            assert await hq.db.read(lambda c: outbox.queued_for(c, BRANCH))  # committed, not chained yet
            async with session.get(f"{server.url}/metrics") as r:
                metrics = {(s.name, s.labels.get("branch")): s.value
                           for f in text_string_to_metric_families(await r.text()) for s in f.samples}
            assert metrics[("smartq_hq_booking_events_unchained", BRANCH)] == 1
        finally:
            other.execute("SELECT pg_advisory_unlock(%s)", (CHAIN_LOCK,))
    chain = (await api(session, "GET", f"{server.url}/api/v1/branches/{BRANCH}/outbox", 200,
                       params={"limit": 1000}, headers=server.h("acme-admin")))["events"]
    assert made["code"] in [e["payload"]["code"] for e in chain if e["type"] == "booking.created"]
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    assert not await hq.db.read(lambda c: outbox.queued_for(c, BRANCH))
