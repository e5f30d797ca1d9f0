"""The LLM judge: one call per response decides every constraint, in order.

Why it is built this way:
- one call per response (not per constraint) keeps cost linear in the number of responses;
- each item restates its constraint, then reasons, then gives the verdict, so the verdict comes
  after the model has re-read the rule and thought about it;
- answers are parsed tolerantly (`json_repair`), items are aligned by position, and only when
  positions do not line up by fuzzy matching of the restated constraint;
- a malformed or wrong-sized answer is retried inside the same conversation (which also gives the
  retry its own cache key); after `max_attempts` the response is *unjudged* (`follows=None`) and
  counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair
from rapidfuzz import fuzz, utils
from rpo.utils.interfaces import Messages, Verdicts
from rpo.utils.llm_client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.records import ProfileCore

FUZZY_MIN_SCORE = 80.0
_TRUE = {"true", "yes", "y", "1", "followed", "follows", "pass", "passed", "是", "遵守", "满足", "符合"}
_FALSE = {
    "false",
    "no",
    "n",
    "0",
    "not followed",
    "fail",
    "failed",
    "否",
    "未遵守",
    "不满足",
    "不符合",
    "违反",
}
VERDICT_KEYS = ("follows", "evaluation_result", "result", "verdict", "judgement", "judgment", "answer")
REASON_KEYS = ("reason", "reasoning", "explanation")
RESTATED_KEYS = ("constraint", "rule", "original", "original_cons")


class ParseFailure(Exception):
    """An answer that cannot be used; `reason` selects the wording of the retry request."""

    def __init__(self, reason: str, got: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.got = got


@dataclass
class JudgeStats:
    """Counters a stage prints at the end: how many responses were judged, retried, left unjudged."""

    judged: int = 0
    unjudged: int = 0
    retries: int = 0
    fuzzy_aligned: int = 0
    llm_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"judged {self.judged}, unjudged {self.unjudged}, format retries {self.retries}, "
            f"aligned by fuzzy match {self.fuzzy_aligned}"
        )


def resolve_lang(lang: str | None, profile: ProfileCore) -> str:
    """The prompt language: the one given, else detected from the profile's text."""
    if lang:
        return lang
    from rpo.utils.system_prompt import detect_lang

    return detect_lang(profile)


def parse_bool(value: Any) -> bool | None:
    """A verdict value as a bool, or None when it is not recognisably true or false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().strip(".。!！").lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def first_value(item: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in item:
            return item[key]
    return None


def extract_list(text: str) -> list[Any]:
    """The JSON list in a model answer (possibly fenced, truncated or wrapped in an object)."""
    data = json_repair.loads(text) if text and text.strip() else None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list) or not data:
        raise ParseFailure("no_json")
    return data


def align(restated: Sequence[str | None], targets: Sequence[str]) -> list[int] | None:
    """Map each target to the index of the item restating it; None when no full one-to-one match.

    Items are taken by position when the counts agree and no item clearly restates a different
    target; otherwise by the best fuzzy score (rapidfuzz), greedily, each item used once.
    """
    n = len(targets)

    def score(i: int, k: int) -> float:
        text = restated[i]
        return fuzz.ratio(text, targets[k], processor=utils.default_process) if text else 0.0

    if len(restated) == n:
        misplaced = any(
            restated[i]
            and score(i, i) < FUZZY_MIN_SCORE
            and any(score(i, k) >= FUZZY_MIN_SCORE for k in range(n) if k != i)
            for i in range(n)
        )
        if not misplaced:
            return list(range(n))
    candidates = sorted(((score(i, k), i, k) for i in range(len(restated)) for k in range(n)), reverse=True)
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for value, i, k in candidates:
        if value < FUZZY_MIN_SCORE:
            break
        if k not in mapping and i not in used:
            mapping[k] = i
            used.add(i)
    if len(mapping) != n:
        return None
    return [mapping[k] for k in range(n)]


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


async def ask_structured(
    client: LLMClient,
    role: str,
    prompt: str,
    lang: str,
    parse: Callable[[str], Any],
    expected: int | None,
    keys: Sequence[str],
    max_attempts: int,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """Ask `prompt`, parse the answer, and on `ParseFailure` ask again in the same conversation.

    Returns the parsed value, or None when every attempt failed to parse.
    """
    messages: Messages = [{"role": "user", "content": prompt}]
    for attempt in range(max_attempts):
        answer = (await client.chat(role, messages)).texts[0]
        try:
            return parse(answer)
        except ParseFailure as failure:
            if attempt + 1 == max_attempts:
                return None
            if on_retry is not None:
                on_retry()
            retry = render_lang(
                "format_retry",
                lang,
                reason=failure.reason,
                got=failure.got,
                expected=expected,
                keys=list(keys),
            )
            messages = [
                *messages,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": retry},
            ]
    return None


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
    ):
        self.client = client
        self.role = role
        self.lang = lang
        self.max_attempts = max_attempts
        self.stats = stats or JudgeStats()
        self.template = template

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
            self.template, lang, constraints=list(constraints), query=query, response=response, **extra
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


def follow_rate(follows: Sequence[bool] | None) -> float:
    """Share of constraints followed (an empty list counts as fully followed; unjudged as 0)."""
    if follows is None:
        return 0.0
    return sum(follows) / len(follows) if follows else 1.0
