"""Pydantic models for every record the toolkit reads or writes.

Readers validate with these models so a bad record is reported with its file, line and field
instead of failing somewhere downstream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

_BARE_LIST_MARKER = re.compile(r"\s*(?:[-*•·]|\(?\d+[.)、:：．]?|\(?[A-Za-z][.)]|[一二三四五六七八九十]+[、.．])?\s*")


def blank_constraint(text: str) -> bool:
    """Whether a constraint states nothing: empty, blank, or a bare list marker such as `1. `.

    Such a rule would be judged, reversed and trained on as if it said something."""
    return _BARE_LIST_MARKER.fullmatch(text) is not None


def first_blank_constraint(constraints: Sequence[str], reversed_constraints: Sequence[str | None] = ()) -> str | None:
    """The field and wording of the first constraint (or reversal) that states nothing, or None."""
    for k, constraint in enumerate(constraints):
        if blank_constraint(constraint):
            return f"constraints[{k}]: empty constraint {constraint!r}"
    for k, reversal in enumerate(reversed_constraints):
        if reversal is not None and blank_constraint(reversal):
            return f"reversed_constraints[{k}]: empty reversal {reversal!r} (null marks a constraint without one)"
    return None


class _Record(BaseModel):
    """Base: unknown keys are kept (optional fields such as timings travel through untouched)."""

    model_config = ConfigDict(extra="allow")


class ProfileCore(_Record):
    """The part of a system profile that a system prompt is rendered from."""

    name: str
    description: str = ""
    skills: list[str] = Field(default_factory=list)
    constraints: list[str]


class SystemProfile(ProfileCore):
    """A SysBank record in normalised form."""

    id: str
    source: str = ""
    system_prompt: str = ""
    inspired_corpus: str | None = None
    gen_model: str | None = None


class UserProfile(_Record):
    """A user persona that drives the user side of self-play."""

    id: str
    persona: str
    profile: str = ""


class Sample(_Record):
    """One sampled response and the judge's per-constraint verdicts.

    `follows` is None when the judge could not produce a well-formed verdict after retries: the
    sample is kept (and counted) as unjudged, never guessed. A sample the token cap cut off
    (`truncated`) is kept unjudged too, so pair construction, which pairs judged samples only,
    never treats it as an answer the model chose to end there.
    """

    response: str
    follows: list[StrictBool | None] | None
    truncated: bool = False  # cut off by the token cap: never judged, never paired

    @model_validator(mode="after")
    def _truncated_is_unjudged(self) -> Sample:
        if self.truncated and self.follows is not None:
            raise ValueError("follows: a truncated sample is never judged, expected null")
        return self


class Turn(_Record):
    """One turn of a session detail.

    `triggered`, when present, holds the sorted indices of the constraints this turn's query
    triggers: only those are judged, and the other `follows` entries are None ("not in play").
    Without it every constraint is in play (files written before trigger selection).
    """

    query: str
    reference_response: str
    triggered: list[int] | None = None
    samples: list[Sample] = Field(default_factory=list)


class SessionDetail(_Record):
    """Output of sampling + judging, input of pair construction."""

    session_id: str
    profile: ProfileCore
    reversed_constraints: list[str | None]
    turns: list[Turn]
    lang: Literal["en", "zh"] | None = None  # the prompt language every stage used (None: detected)

    @model_validator(mode="after")
    def _lengths_match(self) -> SessionDetail:
        n = len(self.profile.constraints)
        if len(self.reversed_constraints) != n:
            raise ValueError(
                f"field reversed_constraints: {len(self.reversed_constraints)} items, but profile.constraints has {n}"
            )
        for t, turn in enumerate(self.turns):
            in_play = set(range(n))
            if turn.triggered is not None:
                if turn.triggered != sorted(set(turn.triggered)) or not in_play.issuperset(turn.triggered):
                    raise ValueError(
                        f"field turns[{t}].triggered: expected sorted distinct indices in 0..{n - 1}, got {turn.triggered}"
                    )
                in_play = set(turn.triggered)
            for s, sample in enumerate(turn.samples):
                if sample.follows is None:
                    continue
                if len(sample.follows) != n:
                    raise ValueError(
                        f"field turns[{t}].samples[{s}].follows: {len(sample.follows)} items, expected {n}"
                    )
                for k, verdict in enumerate(sample.follows):
                    if (verdict is None) == (k in in_play):
                        expected = "true or false" if k in in_play else "null (constraint not triggered)"
                        raise ValueError(f"field turns[{t}].samples[{s}].follows[{k}]: expected {expected}")
        return self


class SelfPlayTurn(BaseModel):
    """One kept turn: the plain query, the accepted reply, its verdicts and how many rewrites it took.

    `triggered`, when present, holds the sorted indices of the constraints the query triggers; only
    those were judged (the other `follows` entries are None) and sampling can reuse the selection.
    """

    model_config = ConfigDict(extra="allow")

    query: str
    reference_response: str
    triggered: list[int] | None = None
    follows: list[bool | None] | None = None
    refinements: int = 0


class SelfPlaySession(BaseModel):
    """A self-play session: what the sampling stage (`dpo_data_construction`) reads."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    profile: ProfileCore
    turns: list[SelfPlayTurn]
    user_id: str | None = None
    end_reason: str = ""
    lang: Literal["en", "zh"] | None = None  # the prompt language of the session (None: detected)


Messages = list[dict[str, str]]  # OpenAI chat format: [{"role": ..., "content": ...}]


@dataclass
class Verdicts:
    """A judge's answer for one response: `follows[i]` for constraint i, or None when unjudged."""

    follows: list[bool] | None
    reasons: list[str] = field(default_factory=list)
