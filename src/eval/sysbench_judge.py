"""SysBench's judging protocol: one call per turn, answered as `{"评判理由", "评判结果": {id: 是/否}}`.

The judge sees the system prompt, the history, the current query and the answer verbatim, and the
turn's numbered criteria with their types. Its answer is parsed tolerantly (fenced or bare JSON,
repaired by json-repair; SysBench's own prompt shows a `'''json` fence); an answer that is not
such an object, or whose verdicts miss or add criteria, is asked again with a different sampling
seed (a cached answer would otherwise come back); after the last attempt the turn stays unjudged.
A verdict other than 是/否 (SysBench's judges sometimes write 不适用) is kept as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import json_repair
from rpo.eval.sysbench_data import Criterion, literal_mapping
from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang

JUDGE_ROLE = "judge"
_FENCE = re.compile(r"(?:```|''')[ \t]*(?:json)?[ \t]*\n?(.*?)(?:```|''')", re.DOTALL | re.IGNORECASE)
_CJK = re.compile(r"[\u4e00-\u9fff]")


def judge_language(system_prompt: str, lang: str = "auto") -> str:
    """`zh` for Chinese data (SysBench's release), `en` otherwise, unless a language is forced."""
    if lang != "auto":
        return lang
    return "zh" if _CJK.search(system_prompt) else "en"


def judge_prompt(system_prompt: str, history: list[tuple[str, str]], query: str, response: str,
                 criteria: dict[str, Criterion], lang: str) -> str:
    return render_lang(
        "sysbench_judge",
        lang,
        system_prompt=system_prompt,
        history=[{"query": q, "response": r} for q, r in history],
        query=query,
        response=response,
        criteria=[{"id": key, "content": c.criteria_content, "type": c.criteria_type} for key, c in criteria.items()],
    )


def parse_judgment(text: str, criteria_ids: list[str]) -> tuple[dict[str, str], Any] | None:
    """Verdicts (criterion id → verdict, in criteria order) and reasons, or None if unusable."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        candidates.append(text[start: end + 1])
    for candidate in candidates:
        try:
            obj = json_repair.loads(candidate)
        except (ValueError, TypeError, IndexError, RecursionError):  # json-repair gives up on some inputs
            continue
        if not isinstance(obj, dict):
            continue
        verdicts = literal_mapping(obj.get("评判结果"))
        if not isinstance(verdicts, dict):
            continue
        normalized = {str(k).strip(): v.strip() for k, v in verdicts.items() if isinstance(v, str)}
        if len(normalized) != len(verdicts) or set(normalized) != set(criteria_ids):
            continue
        return {key: normalized[key] for key in criteria_ids}, obj.get("评判理由")
    return None


@dataclass
class Judgment:
    verdicts: dict[str, str] | None
    reasons: Any
    attempts: int
    judge_model: str


async def judge_turn(client: LLMClient, system_prompt: str, history: list[tuple[str, str]], query: str,
                     response: str, criteria: dict[str, Criterion], lang: str, attempts: int) -> Judgment:
    """Ask until the answer is usable, at most `attempts` times; a turn without criteria costs no call."""
    model = client.config.role(JUDGE_ROLE).model
    if not criteria:
        return Judgment({}, None, 0, model)
    criteria_ids = list(criteria)
    prompt = judge_prompt(system_prompt, history, query, response, criteria, judge_language(system_prompt, lang))
    messages = [{"role": "user", "content": prompt}]
    for attempt in range(attempts):
        overrides = {} if attempt == 0 else {"temperature": 0.5, "seed": attempt}
        result = await client.chat(JUDGE_ROLE, messages, **overrides)
        parsed = parse_judgment(result.texts[0], criteria_ids)
        if parsed is not None:
            return Judgment(parsed[0], parsed[1], attempt + 1, model)
    return Judgment(None, None, attempts, model)
