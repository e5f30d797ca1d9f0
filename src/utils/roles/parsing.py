"""Tolerant parsing of structured LLM answers, shared by the judge, the reverser and profile generation.

Answers are parsed with `json_repair`, list items are aligned by position and, only when positions
do not line up, by fuzzy matching of the restated item; an unusable answer raises `ParseFailure`,
whose reason selects the wording of the retry that `ask_structured` sends in the same conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import json_repair
from rapidfuzz import fuzz, utils
from rpo.utils.llm.client import ChatResult, LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.schema import Messages
from rpo.utils.stats import Tally

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


def shown(answer: str, limit: int = 120) -> str:
    """An unusable answer as a failure line shows it: quoted, on one line, cut short."""
    flat = " ".join(answer.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")


@dataclass
class AnswerTally(Tally):
    """A role's counts plus the first answer no attempt could use, which its summary shows on a line of
    its own (`UNUSABLE`, a template over `first_unusable`) so a failed run says what came back."""

    UNUSABLE: ClassVar[str] = "first unusable answer: {first_unusable}"
    first_unusable: str = ""

    def summary_lines(self) -> list[str]:
        lines = super().summary_lines()
        return [*lines, self.UNUSABLE] if self.first_unusable else lines

    def note_unusable(self, answer: str) -> None:
        self.first_unusable = self.first_unusable or shown(answer)


class ParseFailure(Exception):
    """An answer that cannot be used; `reason` selects the wording of the retry request."""

    def __init__(self, reason: str, got: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.got = got


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
    on_unusable: Callable[[str], None] | None = None,
) -> Any:
    """Ask `prompt`, parse the answer, and on `ParseFailure` ask again in the same conversation.

    Returns the parsed value, or None when every attempt failed to parse (then `on_unusable` gets
    the last answer). Only answers that parse are cached, so a rerun asks anew instead of being
    handed the same unusable answer back.
    """

    def usable(result: ChatResult) -> bool:
        try:
            parse(result.texts[0])
        except ParseFailure:
            return False
        return True

    messages: Messages = [{"role": "user", "content": prompt}]
    for attempt in range(max_attempts):
        answer = (await client.chat(role, messages, accept=usable)).texts[0]
        try:
            return parse(answer)
        except ParseFailure as failure:
            if attempt + 1 == max_attempts:
                if on_unusable is not None:
                    on_unusable(answer)
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
