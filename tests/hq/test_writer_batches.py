"""PostgreSQL's writer threads take the batchable writes queued together in one go
(hq/db_pg.py _Workers): the queue's side of it, without a database."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hq.db_pg import MAX_BATCH, _Workers


@pytest.mark.parametrize("hq_backend", ["sqlite"], indirect=True)  # no database here: run once
async def test_a_writer_takes_every_batchable_write_queued_and_then_the_others(hq_backend):
    batches: list[list[int]] = []
    gate = threading.Event()

    def batch(args: list[int]) -> list[tuple[bool, object]]:
        batches.append(list(args))
        return [(True, a * 10) if a != 3 else (False, ValueError("slot full")) for a in args]

    def batched(arg: int) -> int:  # what one of them alone would run
        return batch([arg])[0][1]  # type: ignore[return-value]

    def busy(_: object) -> str:
        gate.wait(10)
        return "first"

    workers = _Workers(1, "test-write", batch=batch, batched=batched)
    try:
        first = asyncio.ensure_future(workers.run(busy, None))
        await asyncio.sleep(0.05)  # the one writer is busy: what follows queues up
        writes = [asyncio.ensure_future(workers.run(batched, i)) for i in range(1, 5)]
        other = asyncio.ensure_future(workers.run(str.upper, "config"))
        writes += [asyncio.ensure_future(workers.run(batched, i)) for i in range(5, MAX_BATCH + 8)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == "first"
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert await other == "CONFIG"
    finally:
        gate.set()
        workers.shutdown()
    assert [len(b) for b in batches] == [MAX_BATCH, 7]  # as many as were queued, at most MAX_BATCH
    assert batches[0] == list(range(1, MAX_BATCH + 1))  # in the order they came
    assert isinstance(results[2], ValueError) and "slot full" in str(results[2])  # its own outcome
    assert [r for i, r in enumerate(results) if i != 2] == [10 * n for n in range(1, MAX_BATCH + 8) if n != 3]
