"""SysBench `run`: the model under test answers every turn, the judge decides every turn's criteria.

Dialogues run concurrently (at most N requests in flight); the turns of one dialogue run in order,
since each one's history holds the earlier answers. Every answer and every usable judgment is
appended to `responses.jsonl` / `judgments.jsonl` as soon as it arrives, and a rerun takes what is
there, so a killed run resumes where it stopped and a finished one makes no calls.

A request that fails for good does not stop the run: the turn is reported (and, for an answer,
the rest of its dialogue, whose history it would be) and every other turn still runs; a turn the
judge never answered usably is reported with the first unusable answer. Neither is written as a
judgment, so a rerun asks for exactly those again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from rpo.eval.answers import strip_think
from rpo.eval.common import refuse_other_models
from rpo.eval.sysbench.data import Dialogue, JudgedTurn, read_judgments
from rpo.eval.sysbench.judge import JUDGE_ROLE, JudgeProtocol, TurnContext, judge_turn
from rpo.utils.io import JsonlAppender, read_jsonl
from rpo.utils.llm.client import LLMClient, LLMError
from rpo.utils.llm.concurrency import bounded_map

HISTORIES = ("own", "reference")
RESPONSE_ROLE = "response"


@dataclass(frozen=True)
class RunSettings:
    history: str = "own"
    keep_think: bool = False


class ResponseRecord(BaseModel):
    """One answer of the model under test and the conversation it answered.

    `response` is what is judged and kept as history: the answer without its `<think>` block
    unless the run keeps it; `raw` holds the answer as sent when that differs.
    """

    system_id: int | str
    turn: int
    messages: list[dict[str, str]]
    response: str
    model: str
    raw: str | None = None
    truncated: bool = False


@dataclass
class RunOutcome:
    """What a run produced: the judged turns per dialogue and every turn it could not finish."""

    dialogues: list[list[JudgedTurn]]
    answers: list[ResponseRecord]
    missing: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def think_stripped(self) -> int:
        return sum(a.raw is not None for a in self.answers)


def _by_key(path: Path, model: type[BaseModel]) -> dict:
    return {(r.system_id, r.turn): r for r in read_jsonl(path, model, allow_empty=True)} if path.exists() else {}


async def run_sysbench(client: LLMClient, dialogues: list[Dialogue], out: Path, settings: RunSettings,
                       protocol: JudgeProtocol, concurrency: int) -> RunOutcome:
    """Answer and judge every turn not already on disk; the judged turns, dialogue by dialogue."""
    responses_path, judgments_path = out / "responses.jsonl", out / "judgments.jsonl"
    answered = _by_key(responses_path, ResponseRecord)
    judged = {(t.system_id, t.turn): t for t in read_judgments(judgments_path) if t.verdicts is not None}
    model = client.config.role(RESPONSE_ROLE).model
    refuse_other_models(responses_path, {r.model for r in answered.values()}, model)
    refuse_other_models(judgments_path, {t.judge_model for t in judged.values() if t.attempts},
                        client.config.role(JUDGE_ROLE).model)
    if answered or judged:
        print(f"resuming: {len(answered)} turns answered, {len(judged)} judged", file=sys.stderr)
    failures: list[str] = []
    answers: dict[tuple, ResponseRecord] = {}

    with JsonlAppender(responses_path) as responses, JsonlAppender(judgments_path) as judgments:

        async def answer(dialogue: Dialogue, k: int, messages: list[dict[str, str]]) -> ResponseRecord:
            key = (dialogue.system_id, k)
            if key in answered:
                return answered[key]
            result = await client.chat(RESPONSE_ROLE, messages)
            raw = result.texts[0]
            text, stripped = (raw, False) if settings.keep_think else strip_think(raw)
            record = ResponseRecord(system_id=dialogue.system_id, turn=k, messages=messages, response=text,
                                    model=model, raw=raw if stripped else None,
                                    truncated=(result.finish_reasons or [None])[0] == "length")
            responses.write(record)
            return record

        async def one(dialogue: Dialogue) -> list[JudgedTurn]:
            messages = [{"role": "system", "content": dialogue.messages[0].content}]
            turns = []
            for k, (query, reference) in enumerate(zip(dialogue.queries, dialogue.references), 1):
                key = (dialogue.system_id, k)
                where = f"system_id {dialogue.system_id} turn {k}"
                messages = [*messages, {"role": "user", "content": query}]
                try:
                    record = await answer(dialogue, k, messages)
                except LLMError as err:
                    failures.append(f"{where}: no answer, so turns {k}-{len(dialogue.queries)} wait: {err}")
                    break
                answers[key] = record
                turn = judged.get(key)
                if turn is None:
                    info = dialogue.prompt_infos[query]
                    try:
                        judgment = await judge_turn(client, protocol, TurnContext(messages, record.response,
                                                                                  info.criteria))
                    except LLMError as err:
                        failures.append(f"{where}: judge request failed: {err}")
                        judgment = None
                    if judgment is not None and judgment.verdicts is None:
                        failures.append(f"{where}: no usable judge answer in {judgment.attempts} attempts "
                                        f"(first: {judgment.first_unusable!r})")
                    if judgment is not None and judgment.verdicts is not None:
                        turn = JudgedTurn(
                            system_id=dialogue.system_id, turn=k, query=query, response=record.response,
                            alignment=info.alignment, rounds_related=dialogue.rounds_related,
                            criteria=info.criteria, verdicts=judgment.verdicts, reasons=judgment.reasons,
                            attempts=judgment.attempts, judge_model=judgment.judge_model,
                        )
                        judgments.write(turn)
                if turn is not None:
                    turns.append(turn)
                previous = record.response if settings.history == "own" else reference
                messages = [*messages, {"role": "assistant", "content": previous}]
            return turns

        results = {}
        async for dialogue, turns in bounded_map(one, dialogues, concurrency, desc="sysbench", unit="turn",
                                                     weight=lambda d: len(d.queries)):
            results[dialogue.system_id] = turns
    done = [results[d.system_id] for d in dialogues if results[d.system_id]]
    total = sum(len(d.queries) for d in dialogues)
    return RunOutcome(done, [answers[k] for k in sorted(answers, key=str)], total - sum(map(len, done)), failures)
