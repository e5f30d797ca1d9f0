"""What a stage does with an item that fails for good.

A request that fails past its retries (`LLMError`) or an item that yields nothing usable marks that
item failed: it is counted, never written (so it is never "done") and a rerun retries exactly the
failed items, while the rest of the stage finishes and prints its summary. Each stage's counters
carry `failed` and `first_failure` for this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

R = TypeVar("R")


class CountsFailures(Protocol):
    failed: int
    first_failure: str


def note_failure(stats: CountsFailures, item_id: str, reason: BaseException | str) -> None:
    """Count one failed item, keeping the first reason for the stage's last line."""
    stats.failed += 1
    if not stats.first_failure:
        stats.first_failure = f"{item_id}: {reason}"


async def gather_or_cancel(*awaitables: Awaitable[R]) -> list[R]:
    """`asyncio.gather`, except that the first failure cancels the others (no calls are left running
    for an item that has already failed) before it propagates."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
