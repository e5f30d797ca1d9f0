"""The pluggable roles of the pipeline.

Stages depend only on these protocols, so an LLM-backed implementation (any OpenAI-compatible
endpoint) and an exact rule-based one (the offline demo's verifiable-constraint world) plug into
the same `src/dsc` code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rpo.utils.schema import Messages, ProfileCore, Verdicts


@dataclass(frozen=True)
class Reply:
    """One generated assistant reply; `truncated` when the token cap cut it off (`finish_reason:
    length`), so that nobody judges or pairs it as if the model had chosen to stop there."""

    text: str
    truncated: bool = False


class TriggerSelector(Protocol):
    async def select(self, profile: ProfileCore, history: Messages, query: str) -> list[int] | None:
        """Sorted indices of the constraints `query` triggers (unconditional ones always); None if unknown."""
        ...


class Judge(Protocol):
    async def judge(self, profile: ProfileCore, history: Messages, query: str, response: str) -> Verdicts:
        """Decide, per constraint and in order, whether `response` to `query` follows it."""
        ...


class Reverser(Protocol):
    async def reverse(self, profile: ProfileCore) -> list[str | None]:
        """The opposite of every constraint, index-aligned; None where it cannot be reversed."""
        ...


class Responder(Protocol):
    async def respond(self, messages: Messages, n: int) -> list[Reply]:
        """`n` sampled assistant replies to a chat (system prompt, history, current query)."""
        ...


class UserSimulator(Protocol):
    async def next_query(self, profile: ProfileCore, history: Messages, turn: int) -> str:
        """The user's next message in a self-play session."""
        ...


class Refiner(Protocol):
    async def refine(
        self, profile: ProfileCore, history: Messages, query: str, response: str, verdicts: Verdicts
    ) -> Reply:
        """A rewrite of `response` meant to follow the constraints `verdicts` marks as broken."""
        ...


class ReversalVerifier(Protocol):
    async def verify(
        self, profile: ProfileCore, query: str, response: str, indices: list[int], reversals: list[str]
    ) -> list[bool] | None:
        """Whether `response` satisfies each reversal (constraints `indices` of `profile`); None if unknown."""
        ...
