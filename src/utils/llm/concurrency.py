"""Run many async calls at once, at most N in flight, yielding results as they finish.

Stages feed it a lazy iterable (e.g. a JSONL reader), so memory holds only what is in flight, and
write each result as soon as it arrives, so an interrupted run resumes from what is on disk.

The progress bar counts what the user thinks in, which is not always the item: a dialogue of five
turns is five turns. `unit` names it and `weight(item)` says how many of it an item holds; the
total is known up front for a sized input (a list) or given as `total` for a lazy one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sized
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    concurrency: int,
    desc: str | None = None,
    unit: str = "item",
    weight: Callable[[T], int] | None = None,
    total: int | None = None,
) -> AsyncIterator[tuple[T, R]]:
    """Yield `(item, await fn(item))` in completion order, never more than `concurrency` in flight.

    With `desc`, a progress bar counts `unit`s: `weight(item)` of them per finished item (1 without
    `weight`), out of `total` (default: the sum over a sized `items`).
    The first exception cancels everything still running and propagates; so does closing the
    generator early.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    size = weight or (lambda item: 1)
    if total is None and isinstance(items, Sized):
        total = sum(size(item) for item in items) if weight else len(items)
    source = iter(items)
    pending: dict[asyncio.Future[R], T] = {}
    finished: asyncio.Queue[asyncio.Future[R]] = asyncio.Queue()  # O(1) per completion at any width

    def refill() -> None:
        while len(pending) < concurrency:
            try:
                item = next(source)
            except StopIteration:
                return
            task = asyncio.ensure_future(fn(item))
            pending[task] = item
            task.add_done_callback(finished.put_nowait)

    with tqdm(total=total, desc=desc, unit=unit, disable=desc is None, dynamic_ncols=True) as bar:
        try:
            refill()
            while pending:
                task = await finished.get()
                item = pending.pop(task)
                result = task.result()
                refill()  # keep the slot busy while the caller handles this result
                bar.update(size(item))
                yield item, result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
