"""Judging one SysBench turn: one user message to the judge, asked again until its answer is usable.

Two protocols, chosen per run:
- `sysbench`: the request is built by SysBench's own `get_eval_pattern` from the user's checkout
  (`checkout.py`) and read as SysBench's evaluation script reads it: the answer, stripped, minus
  its first 7 and last 3 characters (the `'''json` fence), must be a dict literal with `评判理由`
  and a `评判结果` mapping whose keys are, as integers, exactly the criterion ids; an answer cut
  off (finish reason other than `stop`) is asked again, as SysBench's client does. Its schedule:
  10 attempts, the first 5 at temperature 0 and the rest at 0.5 (all at 0 with reference history,
  as its reference-history script does).
- `own`: this project's prompt (`sysbench_judge.{zh,en}.j2`, language from the system prompt),
  read tolerantly (fenced or bare JSON, repaired), with the same schedule.
Both require each verdict to be one of the words SysBench's judges wrote (`data.VERDICT_WORDS`:
`是`, `否`, `不适用`, ...); SysBench's script writes down whatever word its judge used, so the one
difference is that a word outside that list is asked again here rather than scored as a failed
criterion.

Only usable answers are cached (`accept`), so a rerun asks again for a turn left unjudged.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import json_repair
from rpo.eval.sysbench.checkout import PatternBuilder
from rpo.eval.sysbench.data import VERDICT_WORDS, Criterion, literal_mapping
from rpo.utils.llm.client import ChatResult, LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.text_language import text_language

JUDGE_ROLE = "judge"
SYSBENCH_JUDGE_MODEL = "gpt-4o-2024-05-13"
ATTEMPTS = 10
SHOWN_CHARS = 120  # of the first unusable answer, in the failure report
_FENCE = re.compile(r"(?:```|''')[ \t]*(?:json)?[ \t]*\n?(.*?)(?:```|''')", re.DOTALL | re.IGNORECASE)

Parsed = tuple[dict[str, str], Any]


@dataclass(frozen=True)
class TurnContext:
    """What the judge is shown: the conversation the model answered, its answer, the criteria."""

    messages: list[dict[str, str]]  # system, earlier user/assistant pairs, the current user message
    response: str
    criteria: dict[str, Criterion]


@dataclass(frozen=True)
class JudgeProtocol:
    prompt: str  # "sysbench" or "own": recorded with every figure
    build: Callable[[TurnContext], str]
    parse: Callable[[str, list[str]], Parsed | None]
    temperatures: tuple[float, ...]
    require_stop: bool


@dataclass
class Judgment:
    verdicts: dict[str, str] | None
    reasons: Any
    attempts: int
    judge_model: str
    first_unusable: str | None = None  # the first answer that could not be used, cut short


def schedule(history: str) -> tuple[float, ...]:
    """SysBench's temperatures per attempt: half at 0 then half at 0.5; all at 0 with reference history."""
    if history == "reference":
        return (0.0,) * ATTEMPTS
    return (0.0,) * (ATTEMPTS // 2) + (0.5,) * (ATTEMPTS - ATTEMPTS // 2)


def _checked(verdicts: dict[Any, Any], criteria_ids: list[str], key: Callable[[Any], Any]) -> dict[str, str] | None:
    """Verdicts keyed by the turn's criterion ids, or None unless they match one to one in SysBench's words."""
    try:
        by_key = {key(k): v for k, v in verdicts.items()}
        wanted = {key(c): c for c in criteria_ids}
    except (TypeError, ValueError):
        return None
    if len(by_key) != len(verdicts) or set(by_key) != set(wanted):
        return None
    result = {wanted[k]: v for k, v in by_key.items()}
    if any(not isinstance(v, str) or v not in VERDICT_WORDS for v in result.values()):
        return None
    return {c: result[c] for c in criteria_ids}


def parse_sysbench(text: str, criteria_ids: list[str]) -> Parsed | None:
    """SysBench's reading of a judge answer (see the module docstring), or None when it would retry."""
    try:
        obj = ast.literal_eval(text.strip()[7:-3])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(obj, dict) or "评判理由" not in obj or not isinstance(obj.get("评判结果"), dict):
        return None
    verdicts = _checked(obj["评判结果"], criteria_ids, int)
    return None if verdicts is None else (verdicts, obj["评判理由"])


def parse_own(text: str, criteria_ids: list[str]) -> Parsed | None:
    """Verdicts and reasons from an answer to this project's prompt (fenced or bare JSON, repaired)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        candidates.append(text[start: end + 1])
    for candidate in candidates:
        try:
            obj = json.loads(candidate)  # most answers are plain JSON: no need to repair them
        except (ValueError, RecursionError):
            try:
                obj = json_repair.loads(candidate)
            except (ValueError, TypeError, IndexError, RecursionError):  # json-repair gives up on some inputs
                continue
        if not isinstance(obj, dict):
            continue
        verdicts = literal_mapping(obj.get("评判结果"))
        if not isinstance(verdicts, dict):
            continue
        checked = _checked({k: v.strip() if isinstance(v, str) else v for k, v in verdicts.items()},
                           criteria_ids, lambda k: str(k).strip())
        if checked is not None:
            return checked, obj.get("评判理由")
    return None


def own_prompt(context: TurnContext) -> str:
    system_prompt = context.messages[0]["content"]
    earlier = context.messages[1:-1]
    return render_lang(
        "sysbench_judge",
        text_language(system_prompt),
        system_prompt=system_prompt,
        history=[{"query": q["content"], "response": a["content"]} for q, a in zip(earlier[::2], earlier[1::2])],
        query=context.messages[-1]["content"],
        response=context.response,
        criteria=[{"id": key, "content": c.criteria_content, "type": c.criteria_type}
                  for key, c in context.criteria.items()],
    )


def own_protocol(history: str) -> JudgeProtocol:
    return JudgeProtocol("own", own_prompt, parse_own, schedule(history), require_stop=False)


def sysbench_protocol(builder: PatternBuilder, history: str) -> JudgeProtocol:
    def build(context: TurnContext) -> str:
        messages = [*context.messages, {"role": "assistant", "content": context.response}]
        criteria = {key: c.model_dump(exclude_none=True) for key, c in context.criteria.items()}
        return builder(messages, criteria)

    return JudgeProtocol("sysbench", build, parse_sysbench, schedule(history), require_stop=True)


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_CHARS else flat[: SHOWN_CHARS - 3] + "..."


async def judge_turn(client: LLMClient, protocol: JudgeProtocol, context: TurnContext) -> Judgment:
    """Ask until an answer is usable, on the protocol's schedule; a turn without criteria costs no call."""
    model = client.config.role(JUDGE_ROLE).model
    if not context.criteria:
        return Judgment({}, None, 0, model)
    criteria_ids = list(context.criteria)
    messages = [{"role": "user", "content": protocol.build(context)}]
    first_unusable = None

    last: list[tuple[ChatResult, Parsed | None]] = []  # the client's accept() and this loop read one parse

    def usable(result: ChatResult) -> Parsed | None:
        if last and last[0][0] is result:
            return last[0][1]
        parsed = None
        if not protocol.require_stop or (result.finish_reasons or ["stop"])[0] == "stop":
            parsed = protocol.parse(result.texts[0], criteria_ids)
        last[:] = [(result, parsed)]
        return parsed

    for attempt, temperature in enumerate(protocol.temperatures, 1):
        result = await client.chat(JUDGE_ROLE, messages, accept=lambda r: usable(r) is not None,
                                   temperature=temperature)
        parsed = usable(result)
        if parsed is not None:
            return Judgment(parsed[0], parsed[1], attempt, model)
        first_unusable = first_unusable if first_unusable is not None else _cut(result.texts[0])
    return Judgment(None, None, len(protocol.temperatures), model, first_unusable)
