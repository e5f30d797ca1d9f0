"""SysBench `run`: the model under test answers every turn, the judge decides every turn's criteria.

Dialogues run concurrently (at most N requests in flight); the turns of one dialogue run in order,
since each one's history holds the earlier answers. Every answer and every judgment is appended to
`responses.jsonl` / `judgments.jsonl` as soon as it arrives, and a rerun takes what is there, so a
killed run resumes where it stopped and a finished one makes no calls.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from rpo.eval.common import refuse_other_models
from rpo.eval.sysbench_data import Dialogue, JudgedTurn
from rpo.eval.sysbench_judge import JUDGE_ROLE, judge_turn
from rpo.utils.io import JsonlAppender, read_jsonl
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map

HISTORIES = ("own", "reference")
RESPONSE_ROLE = "response"


@dataclass(frozen=True)
class RunSettings:
    history: str = "own"
    lang: str = "auto"
    judge_attempts: int = 3


class ResponseRecord(BaseModel):
    """One answer of the model under test and the conversation it answered."""

    system_id: int | str
    turn: int
    messages: list[dict[str, str]]
    response: str
    model: str


def _by_key(path: Path, model: type[BaseModel]) -> dict:
    return {(r.system_id, r.turn): r for r in read_jsonl(path, model, allow_empty=True)} if path.exists() else {}


async def run_sysbench(client: LLMClient, dialogues: list[Dialogue], out: Path, settings: RunSettings,
                       concurrency: int) -> list[list[JudgedTurn]]:
    """Answer and judge every turn not already on disk; all judged turns, dialogue by dialogue."""
    responses_path, judgments_path = out / "responses.jsonl", out / "judgments.jsonl"
    with JsonlAppender(responses_path) as responses, JsonlAppender(judgments_path) as judgments:
        answered = _by_key(responses_path, ResponseRecord)
        judged = _by_key(judgments_path, JudgedTurn)
        model = client.config.role(RESPONSE_ROLE).model
        refuse_other_models(responses_path, {r.model for r in answered.values()}, model)
        refuse_other_models(judgments_path, {t.judge_model for t in judged.values() if t.attempts},
                            client.config.role(JUDGE_ROLE).model)
        if answered or judged:
            print(f"resuming: {len(answered)} turns answered, {len(judged)} judged", file=sys.stderr)

        async def one(dialogue: Dialogue) -> list[JudgedTurn]:
            history: list[tuple[str, str]] = []
            turns = []
            for k, (query, reference) in enumerate(zip(dialogue.queries, dialogue.references), 1):
                key = (dialogue.system_id, k)
                if key in answered:
                    response = answered[key].response
                else:
                    messages = [{"role": "system", "content": dialogue.messages[0].content}]
                    for q, a in history:
                        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                    messages.append({"role": "user", "content": query})
                    response = (await client.chat(RESPONSE_ROLE, messages)).texts[0]
                    responses.write(ResponseRecord(system_id=dialogue.system_id, turn=k, messages=messages,
                                                   response=response, model=model))
                turn = judged.get(key)
                if turn is None:
                    info = dialogue.prompt_infos[query]
                    judgment = await judge_turn(client, dialogue.system_prompt, history, query, response,
                                                info.criteria, settings.lang, settings.judge_attempts)
                    turn = JudgedTurn(
                        system_id=dialogue.system_id, turn=k, query=query, response=response,
                        alignment=info.alignment, rounds_related=dialogue.rounds_related,
                        criteria=info.criteria, verdicts=judgment.verdicts, reasons=judgment.reasons,
                        attempts=judgment.attempts, judge_model=judgment.judge_model,
                    )
                    judgments.write(turn)
                turns.append(turn)
                history.append((query, response if settings.history == "own" else reference))
            return turns

        results = {}
        async for dialogue, turns in bounded_map(one, dialogues, concurrency, desc="sysbench dialogues"):
            results[dialogue.system_id] = turns
    return [results[d.system_id] for d in dialogues]
