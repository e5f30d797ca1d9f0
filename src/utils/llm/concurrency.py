"""Run many async calls at once, at most N in flight, yielding results as they finish.

Stages feed it a lazy iterable (e.g. a JSONL reader), so memory holds only what is in flight, and
write each result as soon as it arrives, so an interrupted run resumes from what is on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    concurrency: int,
    desc: str | None = None,
) -> AsyncIterator[tuple[T, R]]:
    """Yield `(item, await fn(item))` in completion order, never more than `concurrency` in flight.

    The first exception cancels everything still running and propagates; so does closing the
    generator early.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
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

    with tqdm(total=total, desc=desc, disable=desc is None, dynamic_ncols=True) as bar:
        try:
            refill()
            while pending:
                task = await finished.get()
                item = pending.pop(task)
                result = task.result()
                refill()  # keep the slot busy while the caller handles this result
                bar.update(1)
                yield item, result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
