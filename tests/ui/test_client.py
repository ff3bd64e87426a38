"""The node client against a real HTTP server on 127.0.0.1."""

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

from .contract_node import ContractNode, serve


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
    t = await client.issue_ticket("general", language="fr")
    assert t["label"] == "A001" and t["status"] == "waiting"
    assert (await client.ticket(t["id"]))["language"] == "fr"


async def test_error_replies_become_typed_errors(client: NodeClient, node: ContractNode) -> None:
    with pytest.raises(BadRequest) as e:
        await client.issue_ticket("nope")
    assert e.value.code == "bad_service"
    with pytest.raises(NotFound):
        await client.ticket("20260101-Z999")
    with pytest.raises(Conflict):
        await client.call_next("c1")  # closed counter
    with pytest.raises(Unauthorized):
        await client.login("c1", "0000")


async def test_call_next_with_nobody_waiting_is_none(client: NodeClient) -> None:
    await client.set_counter_status("c1", "open")
    assert await client.call_next("c1") is None


async def test_login_token_is_sent_on_staff_actions(client: NodeClient, node: ContractNode) -> None:
    node.require_login = True
    with pytest.raises(Unauthorized):
        await client.set_counter_status("c1", "open")
    await client.login("c1", "1234")
    assert (await client.set_counter_status("c1", "open"))["status"] == "open"


async def test_unreachable_node_is_node_unavailable(dead_client: NodeClient) -> None:
    with pytest.raises(NodeUnavailable):
        await dead_client.state()
    with pytest.raises(NodeUnavailable):
        async for _ in dead_client.events():
            pass


async def test_follow_delivers_state_then_events_and_reconnects(node: ContractNode) -> None:
    from .conftest import free_port

    port = free_port()
    runner, url = await serve(node, port)
    client = NodeClient(url, timeout=1.0)
    states: list[dict] = []
    events: list[StreamEvent] = []
    conn: list[bool] = []
    got = asyncio.Event()

    def on_event(ev: StreamEvent) -> None:
        events.append(ev)
        got.set()

    async def fast_sleep(_: float) -> None:
        await asyncio.sleep(0.05)

    task = asyncio.create_task(client.follow(
        on_state=states.append, on_event=on_event,
        on_connection=lambda ok, why: conn.append(ok), sleep=fast_sleep))
    try:
        while not conn:
            await asyncio.sleep(0.01)
        node.issue("general")
        await asyncio.wait_for(got.wait(), 5)
        assert events[0].type == "ticket.issued" and events[0].data["ticket"]["label"] == "A001"
        assert len(states) == 1
        # The node goes away and comes back on the same port: the client notices and resyncs.
        await runner.cleanup()
        while conn[-1]:
            await asyncio.sleep(0.01)
        runner, _ = await serve(node, port)
        while not conn[-1]:
            await asyncio.sleep(0.02)
        assert len(states) == 2 and states[1]["waiting"][0]["label"] == "A001"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await runner.cleanup()
