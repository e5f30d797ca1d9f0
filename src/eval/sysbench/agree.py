"""SysBench `agree`: re-judge a finished run's recorded answers with another judge and compare.

Tells whether a cheaper judge is good enough before paying for a full evaluation: agreement with the
recorded verdicts (followed = 是, as the metrics count them) overall and per constraint type, with
Cohen's kappa, and the CSR / ISR / SSR that each judge gives on the same answers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rpo.eval.common import pct, refuse_other_models
from rpo.eval.metrics import score
from rpo.eval.sysbench.data import EvalDialogue, JudgedTurn, load_dialogues, read_judgments
from rpo.eval.sysbench.judge import JUDGE_ROLE, JudgeProtocol, TurnContext, judge_turn
from rpo.eval.sysbench.metrics import sessions_of
from rpo.eval.sysbench.run import ResponseRecord
from rpo.utils.io import InputError, JsonlAppender, read_jsonl
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.text_table import table

Context = tuple[str, list[tuple[str, str]]]  # system prompt, history the model answered after


def _pairs(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]


def recorded_contexts(eval_file: str | Path) -> dict[tuple[Any, int], Context]:
    """System prompt and history of every recorded turn, as the model under test saw them."""
    path = Path(eval_file)
    contexts: dict[tuple[Any, int], Context] = {}
    if path.is_dir() or path.suffix == ".jsonl":
        responses = (path if path.is_dir() else path.parent) / "responses.jsonl"
        for record in read_jsonl(responses, ResponseRecord):
            contexts[(record.system_id, record.turn)] = (record.messages[0]["content"],
                                                         _pairs(record.messages[1:-1]))
        return contexts
    for dialogue in load_dialogues(path, EvalDialogue):
        if dialogue.infer_results:
            system = dialogue.infer_results[0].content
            answers = [m.content for m in dialogue.infer_results[2::2]]
        else:
            system = dialogue.system_prompt
            results = dialogue.eval_results or {}
            answers = [results[q].response if q in results else "" for q in dialogue.queries]
        for k in range(1, len(dialogue.queries) + 1):
            contexts[(dialogue.system_id, k)] = (system, list(zip(dialogue.queries, answers))[: k - 1])
    return contexts


async def rejudge(client: LLMClient, eval_file: str, recorded: list[list[JudgedTurn]], out: Path,
                  protocol: JudgeProtocol, concurrency: int, quiet: bool = False) -> list[list[JudgedTurn]]:
    """The recorded turns judged again by the configured judge (resumable, cached)."""
    contexts = recorded_contexts(eval_file)
    path = out / "judgments.jsonl"
    with JsonlAppender(path) as sink:
        done = {(t.system_id, t.turn): t for t in read_judgments(path) if t.verdicts is not None}
        refuse_other_models(path, {t.judge_model for t in done.values() if t.attempts},
                            client.config.role(JUDGE_ROLE).model)
        todo = [t for dialogue in recorded for t in dialogue if (t.system_id, t.turn) not in done]

        async def one(turn: JudgedTurn) -> JudgedTurn:
            key = (turn.system_id, turn.turn)
            if key not in contexts:
                raise InputError(f"{eval_file}: system_id {turn.system_id} turn {turn.turn}: no recorded conversation")
            system, history = contexts[key]
            messages = [{"role": "system", "content": system}]
            for query, answer in history:
                messages += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
            messages.append({"role": "user", "content": turn.query})
            judgment = await judge_turn(client, protocol, TurnContext(messages, turn.response, turn.criteria))
            return turn.model_copy(update={"verdicts": judgment.verdicts, "reasons": judgment.reasons,
                                           "attempts": judgment.attempts, "judge_model": judgment.judge_model})

        async for _, new in bounded_map(one, todo, concurrency, desc=None if quiet else "re-judging turns"):
            if new.verdicts is not None:  # an unjudged turn is asked again by a rerun
                sink.write(new)
            done[(new.system_id, new.turn)] = new
    if not quiet and len(todo) < sum(map(len, recorded)):
        print(f"reused {sum(map(len, recorded)) - len(todo)} earlier judgments from {path}", file=sys.stderr)
    return [[done[(t.system_id, t.turn)] for t in dialogue] for dialogue in recorded]


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float:
    """Cohen's kappa of two raters' binary labels (1.0 when both are constant and equal)."""
    n = len(pairs)
    if n == 0:
        return 0.0
    observed = sum(a == b for a, b in pairs) / n
    p_a, p_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def _agreement(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    return {"n": len(pairs), "agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0,
            "kappa": cohen_kappa(pairs)}


def agree_report(recorded: list[list[JudgedTurn]], new: list[list[JudgedTurn]]) -> dict[str, Any]:
    """Agreement on every criterion both judges decided, and the metrics under each judge."""
    pairs: list[tuple[bool, bool]] = []
    by_type: dict[str, list[tuple[bool, bool]]] = {}
    for old_dialogue, new_dialogue in zip(recorded, new):
        for old, fresh in zip(old_dialogue, new_dialogue):
            if old.verdicts is None or fresh.verdicts is None:
                continue
            for key, verdict in old.verdicts.items():
                pair = (verdict == "是", fresh.verdicts.get(key) == "是")
                pairs.append(pair)
                by_type.setdefault(old.criteria[key].criteria_type, []).append(pair)
    before, after = score(sessions_of(recorded)), score(sessions_of(new))
    return {
        "judge_model": next((t.judge_model for d in new for t in d if t.judge_model), None),
        **_agreement(pairs),
        "by_type": {kind: _agreement(p) for kind, p in sorted(by_type.items())},
        "recorded": before,
        "rejudged": after,
        "delta": {m: after[m] - before[m] for m in before},
        "unjudged": {"recorded": sum(t.verdicts is None for d in recorded for t in d),
                     "rejudged": sum(t.verdicts is None for d in new for t in d)},
    }


def format_agreement(report: dict[str, Any]) -> str:
    head = table(["criteria", "agreement", "kappa"],
                 [("all", pct(report["agreement"]), f"{report['kappa']:.3f}")]
                 + [(k, pct(v["agreement"]), f"{v['kappa']:.3f}") for k, v in report["by_type"].items()])
    moves = table(["metric", "recorded", "rejudged", "delta"],
                  [(m, pct(report["recorded"][m]), pct(report["rejudged"][m]), f"{100 * report['delta'][m]:+.1f}")
                   for m in ("CSR", "ISR", "SSR")])
    unjudged = report["unjudged"]
    return (f"judge {report['judge_model']}: {report['n']} criteria compared\n\n{head}\n\n{moves}\n\n"
            f"unjudged turns: recorded {unjudged['recorded']}, rejudged {unjudged['rejudged']}")
