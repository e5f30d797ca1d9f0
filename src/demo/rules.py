"""Rule-based roles for the demo world, implementing the data toolkit's interfaces.

`RuleTriggerSelector`, `RuleJudge` and `RuleReverser` are exact drop-ins for the LLM trigger
selector, judge and reverser; the user simulator and the oracle responder stand in for the strong
model of self-play.
"""

from __future__ import annotations

import random

from rpo.demo.constraints import parse
from rpo.demo.world import ResponseWriter, make_query
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import Messages, ProfileCore, Verdicts


def triggered(constraints: list[str], query: str) -> list[int]:
    """Sorted indices of the constraints `query` puts in play."""
    return [k for k, text in enumerate(constraints) if parse(text).triggered_by(query)]


class RuleTriggerSelector:
    """`TriggerSelector`: a conditional ("if the user mentions W, ...") is in play when the query
    mentions W; every other constraint always is, so a turn is judged on what it asks of the reply."""

    async def select(self, profile: ProfileCore, history: Messages, query: str) -> list[int]:
        return triggered(profile.constraints, query)


class RuleJudge:
    """`Judge`: every constraint checked exactly."""

    async def judge(self, profile: ProfileCore, history: Messages, query: str, response: str) -> Verdicts:
        return Verdicts(follows=[parse(text).check(query, response) for text in profile.constraints])


class RuleReverser:
    """`Reverser`: the library's exact opposite of each constraint, None for non-reversible families."""

    async def reverse(self, profile: ProfileCore) -> list[str | None]:
        opposites = [parse(text).reverse() for text in profile.constraints]
        return [c.text if c is not None else None for c in opposites]


class WorldUserSimulator:
    """`UserSimulator`: seeded template queries, some carrying the profile's trigger words."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    async def next_query(self, profile: ProfileCore, history: Messages, turn: int) -> str:
        return make_query(self.rng, profile)


class OracleResponder:
    """`Responder` for self-play references: answers that follow every constraint; with `follow_prob`
    below 1, the noisy demonstrator instead, following each constraint with that probability (what the
    base policy is trained to imitate, so it can stand in for the base where no training is wanted).

    It reads the constraints from the rendered system prompt's numbered list and the query from
    the first paragraph of the last user message, exactly what the messages carry.
    """

    def __init__(self, seed: int, follow_prob: float = 1.0):
        self.rng = random.Random(seed)
        self.writer = ResponseWriter(self.rng)
        self.follow_prob = follow_prob

    async def respond(self, messages: Messages, n: int) -> list[Reply]:
        constraints = [parse(line.split(". ", 1)[1]) for line in _numbered_lines(messages[0]["content"])]
        query = messages[-1]["content"].split("\n\n", 1)[0]
        return [Reply(self.writer.write(constraints, query, self._targets(len(constraints)))) for _ in range(n)]

    def _targets(self, count: int) -> list[bool]:
        if self.follow_prob >= 1.0:
            return [True] * count
        return [self.rng.random() < self.follow_prob for _ in range(count)]


def _numbered_lines(system_prompt: str) -> list[str]:
    section = system_prompt.split("# Constraints", 1)[-1]
    return [line for line in section.splitlines() if line[:1].isdigit() and ". " in line]
