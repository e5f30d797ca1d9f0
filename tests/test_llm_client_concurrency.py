"""bounded_map: completion order, the in-flight bound, laziness, and error propagation."""

from __future__ import annotations

import asyncio
from typing import ClassVar

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


class RecordingBar:
    """Stands in for tqdm: what the bar was told."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, **options):
        self.options, self.n = options, 0
        RecordingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, k: int) -> None:
        self.n += k


async def _echo(item):
    await asyncio.sleep(0)
    return item


def _bar(monkeypatch, items, **options) -> RecordingBar:
    from rpo.utils.llm import concurrency

    RecordingBar.made = []
    monkeypatch.setattr(concurrency, "tqdm", RecordingBar)

    async def go():
        return [pair async for pair in bounded_map(_echo, items, 2, desc="sysbench", **options)]

    asyncio.run(go())
    [bar] = RecordingBar.made
    return bar


def test_progress_counts_the_users_unit_with_a_total(monkeypatch):
    dialogues = [["q1", "q2", "q3"], ["q1"], ["q1", "q2"]]
    bar = _bar(monkeypatch, dialogues, unit="turn", weight=len)
    assert (bar.options["unit"], bar.options["total"], bar.n) == ("turn", 6, 6)


def test_progress_of_a_lazy_input_takes_its_total(monkeypatch):
    bar = _bar(monkeypatch, (d for d in [["a", "b"], ["c"]]), unit="turn", weight=len, total=3)
    assert (bar.options["total"], bar.n) == (3, 3)
    bar = _bar(monkeypatch, ["x", "y"])
    assert (bar.options["unit"], bar.options["total"], bar.n) == ("item", 2, 2)
