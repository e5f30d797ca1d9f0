"""The pluggable roles of the pipeline.

Stages depend only on these protocols, so an LLM-backed implementation (any OpenAI-compatible
endpoint) and an exact rule-based one (the offline demo's verifiable-constraint world) plug into
the same `src/dsc` code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rpo.utils.records import ProfileCore

Messages = list[dict[str, str]]  # OpenAI chat format: [{"role": ..., "content": ...}]


@dataclass
class Verdicts:
    """A judge's answer for one response: `follows[i]` for constraint i, or None when unjudged."""

    follows: list[bool] | None
    reasons: list[str] = field(default_factory=list)


class Judge(Protocol):
    async def judge(self, profile: ProfileCore, history: Messages, query: str, response: str) -> Verdicts:
        """Decide, per constraint and in order, whether `response` to `query` follows it."""
        ...


class Reverser(Protocol):
    async def reverse(self, profile: ProfileCore) -> list[str | None]:
        """The opposite of every constraint, index-aligned; None where it cannot be reversed."""
        ...


class Responder(Protocol):
    async def respond(self, messages: Messages, n: int) -> list[str]:
        """`n` sampled assistant replies to a chat (system prompt, history, current query)."""
        ...


class UserSimulator(Protocol):
    async def next_query(self, profile: ProfileCore, history: Messages, turn: int) -> str:
        """The user's next message in a self-play session."""
        ...
