"""bounded_map: completion order, the in-flight bound, laziness, and error propagation."""

from __future__ import annotations

import asyncio

import pytest
from rpo.utils.llm.concurrency import bounded_map


def collect(fn, items, concurrency):
    async def go():
        return [pair async for pair in bounded_map(fn, items, concurrency)]

    return asyncio.run(go())


def test_yields_every_item_in_completion_order_within_bound():
    state = {"now": 0, "max": 0}

    async def work(i: int) -> int:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.02 * (i % 3))
        state["now"] -= 1
        return i * i

    pairs = collect(work, list(range(20)), concurrency=5)
    assert sorted(pairs) == [(i, i * i) for i in range(20)]
    assert state["max"] == 5
    assert pairs[0][0] % 3 == 0  # the quickest finish first


def test_pulls_items_lazily():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def go():
        gen = bounded_map(work, source(), concurrency=4)
        first = await gen.__anext__()
        await gen.aclose()
        return first

    asyncio.run(go())
    assert len(pulled) <= 5


def test_exception_propagates_and_cancels_the_rest():
    cancelled = []

    async def work(i: int) -> int:
        if i == 3:
            raise ValueError("boom on 3")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    with pytest.raises(ValueError, match="boom on 3"):
        collect(work, range(10), concurrency=4)
    assert sorted(cancelled) == [0, 1, 2]


def test_rejects_bad_concurrency():
    async def work(i: int) -> int:
        return i

    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        collect(work, [1], concurrency=0)
