"""Multi-IF and IFEval inputs and responses as validated records.

Multi-IF rows (CSV, JSONL or parquet) hold `key`, `language` and, per step k = 1..3,
`turn_k_prompt` (a JSON string `{"role": "user", "content": ...}`), `turn_k_instruction_id_list`
and `turn_k_kwargs` (JSON strings or lists; each kwargs entry itself a JSON string or an object).
IFEval's `input_data.jsonl` (`key, prompt, instruction_id_list, kwargs`) is one step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from rpo.eval.common import describe_error
from rpo.eval.ifeval import IFExample
from rpo.utils.io import InputError, open_text

MAX_STEPS = 3


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        return value.tolist()
    return value


class Step(BaseModel):
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]]

    @field_validator("instruction_ids", mode="before")
    @classmethod
    def _decode_ids(cls, value: Any) -> Any:
        return _json_value(value)

    @field_validator("kwargs", mode="before")
    @classmethod
    def _decode_kwargs(cls, value: Any) -> Any:
        value = _json_value(value)
        if isinstance(value, list):
            value = [{} if _blank(v) else _json_value(v) for v in value]
        return value


class Row(BaseModel):
    """One benchmark row: a conversation of one to three steps."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    key: str
    language: str = "en"
    steps: list[Step]

    def examples(self) -> list[IFExample]:
        return [IFExample(self.key, s.prompt, s.instruction_ids, s.kwargs, self.language) for s in self.steps]


def _row_from_multi_if(raw: dict[str, Any]) -> dict[str, Any]:
    steps = []
    for k in range(1, MAX_STEPS + 1):
        prompt = raw.get(f"turn_{k}_prompt")
        if _blank(prompt):
            break
        try:
            message = _json_value(prompt)
        except json.JSONDecodeError:
            raise ValueError(f"field turn_{k}_prompt: not a JSON message") from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TypeError(f"field turn_{k}_prompt: expected a JSON object with a string `content`")
        steps.append({"prompt": message["content"], "instruction_ids": raw.get(f"turn_{k}_instruction_id_list"),
                      "kwargs": raw.get(f"turn_{k}_kwargs")})
    if not steps:
        raise ValueError("field turn_1_prompt: missing")
    return {"key": raw.get("key"), "language": raw.get("language") or "en", "steps": steps}


def _row_from_ifeval(raw: dict[str, Any]) -> dict[str, Any]:
    return {"key": raw.get("key"), "language": raw.get("language") or "en",
            "steps": [{"prompt": raw.get("prompt"), "instruction_ids": raw.get("instruction_id_list"),
                       "kwargs": raw.get("kwargs")}]}


def _raw_rows(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".parquet")):
        import pandas as pd

        frame = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path, dtype=str,
                                                                                    keep_default_na=False)
        return frame.to_dict(orient="records")
    rows = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {lineno}: invalid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object")
            rows.append(obj)
    return rows


def load_rows(path: str | Path) -> list[Row]:
    """Multi-IF or IFEval rows, validated; a bad row names file, row, key and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    raws = _raw_rows(path)
    if not raws:
        raise InputError(f"{path}: no rows")
    rows, seen = [], set()
    for index, raw in enumerate(raws):
        where = f"{path}: row {index + 1}" + (f" (key {raw.get('key')})" if not _blank(raw.get("key")) else "")
        try:
            shaped = _row_from_multi_if(raw) if "turn_1_prompt" in raw else _row_from_ifeval(raw)
            row = Row.model_validate(shaped)
        except ValidationError as err:
            raise InputError(f"{where}: {describe_error(err)}") from None
        except (ValueError, TypeError) as err:
            raise InputError(f"{where}: {err}") from None
        for k, step in enumerate(row.steps, 1):
            if len(step.kwargs) != len(step.instruction_ids):
                raise InputError(f"{where}: step {k}: {len(step.instruction_ids)} instruction ids but "
                                 f"{len(step.kwargs)} kwargs")
        if row.key in seen:
            raise InputError(f"{where}: field key: duplicate")
        seen.add(row.key)
        rows.append(row)
    return rows


def load_responses(path: str | Path, rows: list[Row]) -> dict[tuple[str, int], str]:
    """Responses keyed by (row key, step): this toolkit's `{key, step, response}` lines, or IFEval's
    `{prompt, response}` lines (matched to single-step rows by prompt, as IFEval does)."""
    path = Path(path)
    if path.is_dir():
        path = path / "responses.jsonl"
    by_prompt = {row.steps[0].prompt: row.key for row in rows if len(row.steps) == 1}
    responses: dict[tuple[str, int], str] = {}
    for lineno, obj in enumerate(_raw_rows(path), 1):
        if not isinstance(obj.get("response"), str):
            raise InputError(f"{path}: line {lineno}: field response: expected a string")
        if "key" in obj:
            responses[(str(obj["key"]), int(obj.get("step", 1)))] = obj["response"]
        elif obj.get("prompt") in by_prompt:
            responses[(by_prompt[obj["prompt"]], 1)] = obj["response"]
    for row in rows:
        for k in range(1, len(row.steps) + 1):
            if (row.key, k) not in responses:
                raise InputError(f"{path}: no response for key {row.key} step {k}")
    return responses
