"""SysBench's file formats as validated records, and the judged turns every metric is computed from.

Two of SysBench's files are read: its release (`system_benchmark_eval_datas.json`: dialogues with
their system prompt, five user turns with reference answers, and per-turn criteria) and its own
evaluation output (the same dialogues with `eval_results[user prompt]`). SysBench writes some
fields of the latter as Python dict literals (`"{'1': '是'}"`), so those are parsed as well.
This toolkit's own runs store one `JudgedTurn` per line in `judgments.jsonl`.

Verdicts are checked, not guessed at: each criterion of a turn has exactly one verdict, and each
verdict is one of the words SysBench's judges write: `是`, `否`, and the few others found in its
published evaluation outputs (`不适用`, `部分是`, `部分`, `无法判断`, `无法评判`, `忽略`), which its
analysis counts as not followed. Anything else (`yes`, `true`, ` 是`) stops the read with one line
naming file, dialogue, turn and criterion. Fields that no figure depends on
(`领域`, `场景`, ...) may hold anything.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rpo.utils.io import InputError, describe_validation_error, iter_lines, parse_jsonl_line

FOLLOWED, NOT_FOLLOWED, NOT_APPLICABLE = "是", "否", "不适用"
# every verdict word in SysBench's published evaluation outputs (its judge is asked for 是 or 否)
VERDICT_WORDS = (FOLLOWED, NOT_FOLLOWED, NOT_APPLICABLE, "部分是", "部分", "无法判断", "无法评判", "忽略")


def literal_mapping(value: Any) -> Any:
    """A mapping written as JSON or as a Python literal (SysBench does both); anything else as is."""
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(parsed, dict):
                return parsed
    return value


def _str_keys(value: Any) -> Any:
    value = literal_mapping(value)
    return {str(k).strip(): v for k, v in value.items()} if isinstance(value, dict) else value


class Criterion(BaseModel):
    model_config = ConfigDict(extra="allow")

    criteria_id: int | str
    criteria_content: str
    criteria_type: str


class PromptInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    alignment: str
    criteria: dict[str, Criterion]

    _keys = field_validator("criteria", mode="before")(classmethod(lambda cls, v: _str_keys(v)))


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant"]
    content: str


class Dialogue(BaseModel):
    """One dialogue of SysBench's release: system prompt, user turns, reference answers, criteria."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    system_id: int | str
    system_prompt: str
    messages: list[Message]
    prompt_infos: dict[str, PromptInfo]
    rounds_related: bool
    domain: Any = Field(None, alias="领域")
    scene: Any = Field(None, alias="场景")

    @model_validator(mode="after")
    def _conversation(self) -> Dialogue:
        roles = [m.role for m in self.messages]
        turns = len(roles) // 2
        if not roles or roles[0] != "system" or len(roles) % 2 == 0 or turns == 0 or any(
            roles[1 + 2 * i: 3 + 2 * i] != ["user", "assistant"] for i in range(turns)
        ):
            raise ValueError("field messages: expected a system message, then user/assistant pairs")
        for i, query in enumerate(self.queries, 1):
            if query not in self.prompt_infos:
                raise ValueError(f"field prompt_infos: no entry for the user message of turn {i}")
        return self

    @property
    def queries(self) -> list[str]:
        return [m.content for m in self.messages[1::2]]

    @property
    def references(self) -> list[str]:
        return [m.content for m in self.messages[2::2]]


class EvalResult(BaseModel):
    """SysBench's judgment of one turn: `评判结果` (criterion id → 是/否/...), reasons, the answer."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    verdicts: dict[str, Any] = Field(alias="评判结果")
    reasons: Any = Field(None, alias="评判理由")
    criteria: dict[str, Criterion] | None = None
    response: str = ""

    _keys = field_validator("verdicts", "criteria", mode="before")(classmethod(lambda cls, v: _str_keys(v)))


class EvalDialogue(Dialogue):
    """A dialogue of SysBench's evaluation output: the release record plus what the run produced."""

    infer_results: list[Message] | None = None
    eval_results: dict[str, EvalResult] | None = None


class JudgedTurn(BaseModel):
    """One answered turn and its verdicts (`None`: the judge never answered usably)."""

    system_id: int | str
    turn: int = Field(ge=1)
    query: str
    response: str
    alignment: str
    rounds_related: bool
    criteria: dict[str, Criterion]
    verdicts: dict[str, Any] | None
    reasons: Any = None
    attempts: int = 0
    judge_model: str | None = None

    def followed(self) -> list[bool | None] | None:
        """Per verdict: True for 是, False for 否, None for any other word; None if unjudged."""
        if self.verdicts is None:
            return None
        return [True if v == FOLLOWED else False if v == NOT_FOLLOWED else None for v in self.verdicts.values()]


def check_verdicts(label: str, turn: JudgedTurn) -> None:
    """Refuse a judged turn whose verdicts do not match its criteria one to one in SysBench's words."""
    if turn.verdicts is None:
        return
    where = f"{label}: turn {turn.turn}"
    for key in turn.verdicts:
        if key not in turn.criteria:
            raise InputError(f"{where}: criterion {key}: a verdict for a criterion the turn does not have")
    for key in turn.criteria:
        if key not in turn.verdicts:
            raise InputError(f"{where}: criterion {key}: no verdict")
        verdict = turn.verdicts[key]
        if verdict not in VERDICT_WORDS:
            raise InputError(f"{where}: criterion {key}: verdict {json.dumps(verdict, ensure_ascii=False)} is "
                             f"not one of SysBench's ({', '.join(VERDICT_WORDS)})")


def _record_label(index: int, raw: Any) -> str:
    sid = raw.get("system_id") if isinstance(raw, dict) else None
    return f"record {index}" + (f" (system_id {sid})" if sid is not None else "")


def load_dialogues(path: str | Path, model: type[Dialogue] = Dialogue) -> list[Any]:
    """Read and validate a SysBench JSON array; a bad record names file, record and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a JSON array of dialogues, got {type(raw).__name__}")
    if not raw:
        raise InputError(f"{path}: no dialogues")
    records, seen = [], set()
    for index, item in enumerate(raw):
        try:
            record = model.model_validate(item)
        except RecursionError:
            raise InputError(f"{path}: {_record_label(index, item)}: nested too deeply") from None
        except ValidationError as err:
            raise InputError(f"{path}: {_record_label(index, item)}: {describe_validation_error(err)}") from None
        if record.system_id in seen:
            raise InputError(f"{path}: {_record_label(index, item)}: field system_id: duplicate")
        seen.add(record.system_id)
        records.append(record)
    return records


def judged_from_eval_output(path: str | Path) -> list[list[JudgedTurn]]:
    """The judged turns of SysBench's own evaluation output, one list per dialogue, turn order."""
    dialogues: list[EvalDialogue] = load_dialogues(path, EvalDialogue)
    result = []
    for index, dialogue in enumerate(dialogues):
        label = f"{path}: {_record_label(index, {'system_id': dialogue.system_id})}"
        if "eval_results" not in dialogue.model_fields_set:
            raise InputError(f"{label}: field eval_results: missing (is this the release data, not an evaluation output?)")
        turns = []
        for k, query in enumerate(dialogue.queries, 1):
            info = dialogue.prompt_infos[query]
            if dialogue.eval_results is None:
                judged = None
            elif query in dialogue.eval_results:
                judged = dialogue.eval_results[query]
            else:
                raise InputError(f"{label}: field eval_results: no result for the user message of turn {k}")
            # SysBench's analysis reads the criteria stored with the verdicts; older files lack them
            criteria = (judged.criteria if judged and judged.criteria is not None else None) or info.criteria
            turn = JudgedTurn(
                system_id=dialogue.system_id, turn=k, query=query,
                response=judged.response if judged else "", alignment=info.alignment,
                rounds_related=dialogue.rounds_related, criteria=criteria,
                verdicts=judged.verdicts if judged else None, reasons=judged.reasons if judged else None,
            )
            check_verdicts(label, turn)
            turns.append(turn)
        result.append(turns)
    return result


def group_turns(turns: Iterable[JudgedTurn]) -> list[list[JudgedTurn]]:
    """Turns grouped by dialogue (first-seen order), each dialogue in turn order."""
    by_dialogue: dict[Any, list[JudgedTurn]] = {}
    for turn in turns:
        by_dialogue.setdefault(turn.system_id, []).append(turn)
    return [sorted(ts, key=lambda t: t.turn) for ts in by_dialogue.values()]


def read_judgments(path: str | Path) -> list[JudgedTurn]:
    """The turns of a `judgments.jsonl`, each checked; a turn judged twice is refused.

    A record without verdicts (an unjudged turn, as earlier versions wrote them) gives way to a
    later judgment of the same turn.
    """
    path = Path(path)
    if not path.is_file():
        return []
    turns: dict[tuple[Any, int], tuple[int, JudgedTurn]] = {}
    for lineno, line in iter_lines(path):
        turn = parse_jsonl_line(line, JudgedTurn, path, lineno)
        key = (turn.system_id, turn.turn)
        if key in turns and turns[key][1].verdicts is not None:
            raise InputError(f"{path}: line {lineno}: system_id {turn.system_id} turn {turn.turn}: "
                             f"recorded twice (first on line {turns[key][0]})")
        check_verdicts(f"{path}: line {lineno}: system_id {turn.system_id}", turn)
        turns[key] = (lineno, turn)
    return [turn for _, turn in turns.values()]


def load_judged(path: str | Path) -> list[list[JudgedTurn]]:
    """Judged turns from a run directory (its judgments.jsonl), a judgments.jsonl, or SysBench's output."""
    path = Path(path)
    if path.is_dir():
        path = path / "judgments.jsonl"
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        dialogues = group_turns(read_judgments(path))
        if not dialogues:
            raise InputError(f"{path}: no judged turns")
        return dialogues
    return judged_from_eval_output(path)
