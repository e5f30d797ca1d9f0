"""How every CLI that calls LLMs runs its calls: one client, its usage table printed whatever happens,
and a request that failed for good turned into one line and exit status 1."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from rpo.utils.llm.client import LLMClient, LLMError
from rpo.utils.llm.config import PipelineConfig

T = TypeVar("T")
RESUME_HINT = "what was written is kept: rerun the same command to resume"


def run_calls(pipeline: PipelineConfig, work: Callable[[LLMClient], Awaitable[T]],
              roles: Sequence[str] | None = None, resume_hint: str = RESUME_HINT) -> T:
    """Run `work` with one client for `roles` (default: every role of the pipeline), whose keys and hosts
    are checked before the first call; the usage table goes to stderr at the end, failed or not."""

    async def go() -> T:
        async with LLMClient(pipeline, roles=list(roles if roles is not None else pipeline.roles)) as client:
            try:
                return await work(client)
            finally:
                print(client.usage_table(), file=sys.stderr)

    try:
        return asyncio.run(go())
    except LLMError as err:
        print(f"error: {err} ({resume_hint})", file=sys.stderr)
        sys.exit(1)
