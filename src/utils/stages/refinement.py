"""Judging a turn's replies and rewriting the best one: the part self-play and sampling share.

The authors' scheme, in both stages: when the best judged reply follows less than a threshold of
the constraints in play, a critic rewrites it; each round starts from the best reply so far
(rewrites included) and the rounds stop at the threshold or after a fixed number. Every rewrite is
judged and returned, better or not, so sampling can add them all to the pool that pairs are drawn
from, as the authors do. A reply the token cap cut off is not judged (no call) and never chosen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from rpo.utils.roles.judge import follow_rate
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import Verdicts
from rpo.utils.stages.outcome import gather_or_cancel

JudgeOne = Callable[[str], Awaitable[Verdicts]]
RefineOne = Callable[["Judged"], Awaitable[Reply]]


@dataclass(frozen=True)
class Judged:
    """A reply with its verdicts; `round` is 0 for a sampled reply, k for the k-th rewrite."""

    reply: Reply
    verdicts: Verdicts
    round: int = 0

    @property
    def judged(self) -> bool:
        return self.verdicts.follows is not None

    @property
    def rate(self) -> float:
        return follow_rate(self.verdicts.follows)


async def judge_replies(replies: Sequence[Reply], judge_one: JudgeOne) -> list[Judged]:
    """Each reply with its verdicts, in order; a truncated reply gets none (follows None, no call)."""

    async def one(reply: Reply) -> Judged:
        if reply.truncated:
            return Judged(reply, Verdicts(follows=None))
        return Judged(reply, await judge_one(reply.text))

    return await gather_or_cancel(*(one(reply) for reply in replies))


def best_of(pool: Sequence[Judged]) -> Judged | None:
    """The judged reply with the highest follow rate (the first on a tie); None when none is judged."""
    judged = [item for item in pool if item.judged]
    return max(judged, key=lambda item: item.rate) if judged else None


async def refine_best(
    best: Judged, refine_one: RefineOne, judge_one: JudgeOne, threshold: float, rounds: int
) -> tuple[Judged, list[Judged]]:
    """The best reply at the end, and every rewrite made while the best so far followed less than
    `threshold` (at most `rounds`). A rewrite replaces the best when it is judged and follows at
    least as much."""
    rewrites: list[Judged] = []
    current = best
    for round_number in range(1, rounds + 1):
        if current.rate >= threshold:
            break
        [rewrite] = await judge_replies([await refine_one(current)], judge_one)
        rewrite = replace(rewrite, round=round_number)
        rewrites.append(rewrite)
        if rewrite.judged and rewrite.rate >= current.rate:
            current = rewrite
    return current, rewrites
