"""The node client against real ``smartq node`` processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random

import pytest

from appliance.client import (
    Backoff,
    BadRequest,
    Conflict,
    NodeClient,
    NodeUnavailable,
    NotFound,
    StreamEvent,
    Unauthorized,
    parse_sse_lines,
)
from tests.appliance.procs import NodeProcess

from .conftest import NodeOnPort, Nodes, set_security, wait_for


def test_sse_block_parses_id_type_and_json_data() -> None:
    ev = parse_sse_lines(["id: k1:3", "event: ticket.called", 'data: {"ticket": {"id": "x"}}'])
    assert ev == StreamEvent("k1:3", "ticket.called", {"ticket": {"id": "x"}})


def test_sse_heartbeat_and_garbage_give_nothing() -> None:
    assert parse_sse_lines([": heartbeat"]) is None
    assert parse_sse_lines(["event: x", "data: {not json"]) is None


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(first=1, maximum=8, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    assert all(0.5 <= d <= 1 for d in delays[:1])
    assert all(4 <= d <= 8 for d in delays[4:])
    b.reset()
    assert b.next_delay() <= 1


async def test_issue_and_read_back_a_ticket(client: NodeClient) -> None:
    t = await client.issue_ticket("general", language="fr", priority=1)
    assert t["label"].startswith("A") and t["status"] == "waiting"
    again = await client.ticket(t["id"])
    assert (again["language"], again["priority"]) == ("fr", 1)


async def test_error_replies_become_typed_errors(client: NodeClient) -> None:
    with pytest.raises(BadRequest) as bad_phone:
        await client.issue_ticket("general", phone="12")
    assert "phone" in bad_phone.value.message
    with pytest.raises(BadRequest):  # a wrong type: priority must be an integer
        await client.request("POST", "/tickets", {"service": "general", "priority": "high"})
    with pytest.raises(NotFound) as unknown:
        await client.issue_ticket("nope")
    assert unknown.value.code == "unknown_service"
    with pytest.raises(NotFound) as booking:
        await client.issue_ticket(booking_code="NOPE1")
    assert booking.value.code == "unknown_booking"
    with pytest.raises(NotFound):
        await client.ticket("20260101-Z999")
    with pytest.raises(Unauthorized) as pin:
        await client.login("c1", "0000")
    assert pin.value.code == "wrong_pin"
    with pytest.raises(Unauthorized):  # no session at all
        await client.set_counter_status("c1", "open")


async def test_staff_conflicts_are_409(client: NodeClient) -> None:
    await client.login("c3", "3456")
    await client.set_counter_status("c3", "close")
    with pytest.raises(Conflict) as closed:
        await client.call_next("c3")
    assert closed.value.code == "counter_not_open"
    t = await client.issue_ticket("documents")
    with pytest.raises(Conflict):  # completing a ticket nobody is serving
        await client.ticket_action("c3", t["id"], "complete")


async def test_login_token_is_sent_on_staff_actions_and_logout_ends_the_session(
    client: NodeClient,
) -> None:
    await client.login("c1", "1234")
    token = client.token
    assert token and (await client.set_counter_status("c1", "open"))["status"] == "open"
    await client.logout()
    assert client.token is None
    client.token = token  # the node forgot it: a stolen copy is worth nothing now
    with pytest.raises(Unauthorized) as gone:
        await client.set_counter_status("c1", "pause")
    assert gone.value.code == "session_expired"


async def test_an_expired_session_is_unauthorized(nodes: Nodes) -> None:
    node = nodes.start("kiosk", edit=lambda c: set_security(c, "session_ttl_s = 1"))
    async with NodeClient(node.url) as c:
        await c.login("c2", "2345")
        await asyncio.sleep(1.2)
        with pytest.raises(Unauthorized) as expired:
            await c.set_counter_status("c2", "open")
        assert expired.value.code == "session_expired"


async def test_transfer_to_a_counter_reserves_the_ticket_for_it(client: NodeClient) -> None:
    await client.login("c1", "1234")
    await client.set_counter_status("c1", "open")
    t = await client.issue_ticket("general")
    await client.call_ticket("c1", t["id"])
    moved = await client.transfer("c1", t["id"], to_counter="c3")
    assert (moved["status"], moved["counter"], moved["service"]) == ("waiting", "c3", "general")
    with pytest.raises(NotFound):
        await client.transfer("c1", t["id"], to_counter="c9")
    with pytest.raises(ValueError):
        await client.transfer("c1", t["id"])


async def test_unreachable_node_is_node_unavailable(dead_client: NodeClient) -> None:
    with pytest.raises(NodeUnavailable):
        await dead_client.state()
    with pytest.raises(NodeUnavailable):
        async for _ in dead_client.events():
            pass


@pytest.mark.slow
async def test_follow_delivers_state_then_events_and_reconnects_to_a_restarted_node(
    nodes: Nodes,
) -> None:
    node = nodes.start("kiosk")
    client = NodeClient(node.url, timeout=1.0)
    states: list[dict] = []
    events: list[StreamEvent] = []
    conn: list[bool] = []

    async def fast_sleep(_: float) -> None:
        await asyncio.sleep(0.05)

    task = asyncio.create_task(client.follow(
        on_state=states.append, on_event=events.append,
        on_connection=lambda ok, why: conn.append(ok), sleep=fast_sleep))
    restarted: NodeProcess | None = None
    try:
        await wait_for(lambda: conn, what="first connection")
        async with NodeClient(node.url) as other:
            first = await other.issue_ticket("general")
        issued = await wait_for(lambda: [e for e in events if e.type == "ticket.issued"], what="event")
        assert issued[0].data["ticket"]["label"] == first["label"] and len(states) == 1
        # The node stops; the client notices. The same node (same data) comes back on the
        # same port: the client reconnects by itself and resynchronises from /state.
        node.stop()
        await wait_for(lambda: not conn[-1], what="loss noticed")
        restarted = await asyncio.to_thread(NodeOnPort, node.config, node.port, log_path=node.log_path)
        await wait_for(lambda: conn[-1], timeout=30, what="reconnected")
        assert len(states) >= 2 and any(w["id"] == first["id"] for w in states[-1]["waiting"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        if restarted is not None:
            restarted.stop()
