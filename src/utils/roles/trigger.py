"""Trigger selection: which of a profile's constraints a turn's query puts in play, and judging only those.

A conditional constraint ("when the user asks about X, ...") says nothing about a reply to a query
that is not about X. Counting it as "followed" there would inflate follow rates, make the refine
threshold easier and keep vacuous constraints in preference prompts, so, as the authors do, each
turn's triggered constraints are selected once before judging and only they are judged.

Why the LLM selector is built this way:
- one call per turn (not per response): every response to a query shares its triggered set;
- the whole system prompt is shown with the query, as the authors do, so a rule is read in the
  context of the role it belongs to; rules that apply whatever the message, rules whose condition
  depends on the reply rather than the message ("place names in the reply in English"), and
  doubtful cases count as triggered, rules asked "from time to time" do not;
- the answer names the triggered rules by number; numbers out of range, repeated numbers, an
  empty selection (as the authors treat it: a failed answer, since almost every profile holds a
  rule that applies to any reply) or a malformed answer are retried in the same conversation, and
  after `max_attempts` the turn's selection is unknown (None), counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import json_repair
from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.parsing import AnswerTally, ParseFailure, ask_structured, first_value
from rpo.utils.roles.protocols import Judge
from rpo.utils.schema import Messages, ProfileCore, Verdicts
from rpo.utils.stats import counter

TRIGGERED_KEYS = ("triggered", "triggered_rules", "rules", "indices", "numbers")


@dataclass
class TriggerStats(AnswerTally):
    """What trigger selection decided: turns selected or unknown, and how many constraints were in play."""

    UNUSABLE: ClassVar[str] = ("first unusable trigger answer: {first_unusable} "
                               "(rerun to ask again, or --no-trigger to judge every constraint)")

    selected: int = counter("turns selected")
    unknown: int = counter("unknown after retries")
    retries: int = counter("format retries")
    in_play: int = counter("constraints in play")
    offered: int = counter("constraints offered")


def _rule_number(item: Any) -> int:
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    if isinstance(item, str) and item.strip().isdigit():
        return int(item.strip())
    raise ParseFailure("bad_item")


def parse_triggered(text: str, n_constraints: int) -> list[int]:
    """Sorted 0-based indices from an answer naming 1-based rule numbers, or `ParseFailure`."""
    data = json_repair.loads(text) if text and text.strip() else None
    numbers = first_value(data, TRIGGERED_KEYS) if isinstance(data, dict) else data
    if not isinstance(numbers, list):
        raise ParseFailure("no_json")
    if not numbers:
        raise ParseFailure("empty")
    seen: set[int] = set()
    for number in map(_rule_number, numbers):
        if not 1 <= number <= n_constraints:
            raise ParseFailure("out_of_range", got=number)
        if number in seen:
            raise ParseFailure("duplicate", got=number)
        seen.add(number)
    return sorted(number - 1 for number in seen)


class LLMTriggerSelector:
    """`TriggerSelector` backed by an LLM role; see the module docstring."""

    def __init__(
        self,
        client: LLMClient,
        role: str = "trigger",
        lang: str | None = None,
        max_attempts: int = 3,
        stats: TriggerStats | None = None,
    ):
        self.client = client
        self.role = role
        self.lang = lang
        self.max_attempts = max_attempts
        self.stats = stats or TriggerStats()

    async def select(self, profile: ProfileCore, history: Messages, query: str) -> list[int] | None:
        constraints = profile.constraints
        if not constraints:
            self.stats.selected += 1
            return []
        lang = resolve_lang(self.lang, profile)
        parsed = await ask_structured(
            self.client,
            self.role,
            render_lang("trigger", lang, system_prompt=render_system_prompt(profile, lang=lang), query=query),
            lang,
            lambda text: parse_triggered(text, len(constraints)),
            expected=None,
            keys=("reason", "triggered"),
            max_attempts=self.max_attempts,
            on_retry=self._count_retry,
            on_unusable=self.stats.note_unusable,
        )
        if parsed is None:
            self.stats.unknown += 1
            return None
        self.stats.selected += 1
        self.stats.in_play += len(parsed)
        self.stats.offered += len(constraints)
        return parsed

    def _count_retry(self) -> None:
        self.stats.retries += 1


async def judge_in_play(
    judge: Judge,
    profile: ProfileCore,
    triggered: Sequence[int] | None,
    history: Messages,
    query: str,
    response: str,
) -> Verdicts:
    """Verdicts on the triggered constraints only, index-aligned with the profile (None = not in play).

    The judge sees a copy of the profile holding just the triggered constraints, so it never rules on
    one that is not in play. `triggered=None` (no selection) judges every constraint; an empty
    selection needs no call.
    """
    if triggered is None:
        return await judge.judge(profile, history, query, response)
    n = len(profile.constraints)
    if not triggered:
        return Verdicts(follows=[None] * n)  # type: ignore[list-item]
    in_play = profile.model_copy(update={"constraints": [profile.constraints[k] for k in triggered]})
    verdicts = await judge.judge(in_play, history, query, response)
    if verdicts.follows is None:
        return Verdicts(follows=None)
    follows: list[bool | None] = [None] * n
    reasons = [""] * n if verdicts.reasons else []
    for position, k in enumerate(triggered):
        follows[k] = verdicts.follows[position]
        if reasons:
            reasons[k] = verdicts.reasons[position]
    return Verdicts(follows=follows, reasons=reasons)  # type: ignore[arg-type]
