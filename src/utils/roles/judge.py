"""The LLM judge: one call per response decides every constraint, in order.

Why it is built this way:
- one call per response (not per constraint) keeps cost linear in the number of responses;
- the prompt asks what the paper's judge prompt (appendix I) asks: each rule is the standard, judged
  one by one against the reply, and a rule that cannot apply to the reply at all counts as followed
  (to be used only when certain). `strict=True` adds one line demanding a literal reading (counts,
  words, formats, openings and endings must match exactly). It is off by default because neither
  the paper nor the authors judge that way: it turns borderline verdicts (a count off by one, an
  ending paraphrased) into failures, which lowers follow rates, sends more replies to refinement
  and widens the gaps g that RPO pairs are weighted by;
- each item restates its constraint, then reasons, then gives the verdict, so the verdict comes
  after the model has re-read the rule and thought about it;
- answers are parsed tolerantly (`json_repair`), items are aligned by position, and only when
  positions do not line up by fuzzy matching of the restated constraint;
- a malformed or wrong-sized answer is retried inside the same conversation (which also gives the
  retry its own cache key); after `max_attempts` the response is *unjudged* (`follows=None`) and
  counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.roles.parsing import (
    REASON_KEYS,
    RESTATED_KEYS,
    VERDICT_KEYS,
    AnswerTally,
    ParseFailure,
    align,
    ask_structured,
    extract_list,
    first_value,
    parse_bool,
)
from rpo.utils.schema import Messages, ProfileCore, Verdicts
from rpo.utils.stats import counter


@dataclass
class JudgeStats(AnswerTally):
    """How many responses were judged, retried, left unjudged."""

    UNUSABLE: ClassVar[str] = "first unusable judge answer: {first_unusable} (rerun to ask again)"

    judged: int = counter("judged")
    unjudged: int = counter("unjudged")
    retries: int = counter("format retries")
    fuzzy_aligned: int = counter("aligned by fuzzy match")


def parse_verdicts(text: str, constraints: Sequence[str]) -> tuple[list[bool], list[str], bool]:
    """(follows, reasons, fuzzy) from a judge answer, or `ParseFailure` saying what was wrong."""
    items = extract_list(text)
    if not all(isinstance(item, dict) for item in items):
        raise ParseFailure("bad_item")
    restated = [first_value(item, RESTATED_KEYS) for item in items]
    order = align([r if isinstance(r, str) else None for r in restated], constraints)
    if order is None:
        raise ParseFailure("wrong_count" if len(items) != len(constraints) else "bad_item", got=len(items))
    follows: list[bool] = []
    reasons: list[str] = []
    for index in order:
        verdict = parse_bool(first_value(items[index], VERDICT_KEYS))
        if verdict is None:
            raise ParseFailure("bad_item")
        follows.append(verdict)
        reason = first_value(items[index], REASON_KEYS)
        reasons.append(reason if isinstance(reason, str) else "")
    return follows, reasons, order != list(range(len(constraints)))


class LLMJudge:
    """`Judge` backed by an LLM role; see the module docstring."""

    def __init__(
        self,
        client: LLMClient,
        role: str = "judge",
        lang: str | None = None,
        max_attempts: int = 3,
        stats: JudgeStats | None = None,
        template: str = "judge",
        strict: bool = False,
    ):
        self.client = client
        self.role = role
        self.lang = lang
        self.max_attempts = max_attempts
        self.stats = stats or JudgeStats()
        self.template = template
        self.strict = strict

    async def judge(self, profile: ProfileCore, history: Messages, query: str, response: str) -> Verdicts:
        """Verdicts for every constraint of `profile` (history is not shown: constraints are per turn)."""
        return await self.judge_list(profile.constraints, query, response, resolve_lang(self.lang, profile))

    async def judge_list(
        self, constraints: Sequence[str], query: str, response: str, lang: str, **extra: Any
    ) -> Verdicts:
        """Judge `response` against the given statements with this judge's template."""
        if not constraints:
            self.stats.judged += 1
            return Verdicts(follows=[], reasons=[])
        prompt = render_lang(
            self.template,
            lang,
            constraints=list(constraints),
            query=query,
            response=response,
            strict=self.strict,
            **extra,
        )
        parsed = await ask_structured(
            self.client,
            self.role,
            prompt,
            lang,
            lambda text: parse_verdicts(text, constraints),
            expected=len(constraints),
            keys=("constraint", "reason", "follows"),
            max_attempts=self.max_attempts,
            on_retry=self._count_retry,
            on_unusable=self.stats.note_unusable,
        )
        if parsed is None:
            self.stats.unjudged += 1
            return Verdicts(follows=None)
        follows, reasons, fuzzy = parsed
        self.stats.judged += 1
        self.stats.fuzzy_aligned += int(fuzzy)
        return Verdicts(follows=follows, reasons=reasons)

    def _count_retry(self) -> None:
        self.stats.retries += 1


def follow_rate(follows: Sequence[bool | None] | None) -> float:
    """Share of the constraints in play that are followed.

    None entries are constraints the turn's query does not trigger and do not count; nothing in
    play counts as fully followed; an unjudged response (None) as 0.
    """
    if follows is None:
        return 0.0
    in_play = [verdict for verdict in follows if verdict is not None]
    return sum(in_play) / len(in_play) if in_play else 1.0
