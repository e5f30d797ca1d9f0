"""Multi-IF and IFEval inputs and recorded responses as validated records.

Multi-IF rows (CSV, JSONL or parquet, as its release has them) hold `key`, `language` (a name such
as `English`, or a code) and, per step k = 1..3, `turn_k_prompt` (a JSON string `{"role": "user",
"content": ...}`), `turn_k_instruction_id_list` and `turn_k_kwargs` (JSON strings or lists; each
kwargs entry itself a JSON string or an object). A step whose prompt is absent, empty or the string
`None` is skipped, as Multi-IF's scripts skip it; a step after a skipped one is refused (those
scripts would ask it in a broken conversation). IFEval's `input_data.jsonl` (`key, prompt,
instruction_id_list, kwargs`) is one step. Every instruction is checked to be checkable when the
file is read, so a run never stops half-way for an instruction it cannot decide.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo.eval.multi_if.checkers import argument_problem
from rpo.eval.multi_if.scoring import IFExample
from rpo.utils.io import InputError, iter_lines, json_line_object

MAX_STEPS = 3

# Multi-IF's `language` column holds English names; users select languages by ISO 639-1 code.
LANGUAGE_NAMES = {
    "english": "en", "chinese": "zh", "hindi": "hi", "russian": "ru", "spanish": "es", "french": "fr",
    "italian": "it", "portuguese": "pt", "japanese": "ja", "thai": "th", "german": "de",
    "vietnamese": "vi", "korean": "ko", "arabic": "ar",
}
LANGUAGE_CODES = frozenset(LANGUAGE_NAMES.values())


class BadRow(Exception):
    """What is wrong with one row, named by its field; the reader adds file and row."""


@dataclass(frozen=True)
class Step:
    number: int
    example: IFExample


@dataclass(frozen=True)
class Row:
    """One benchmark row: a conversation of one to three steps (numbered as in the file)."""

    key: str
    language: str
    steps: list[Step]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _absent_prompt(value: Any) -> bool:
    return _blank(value) or (isinstance(value, str) and value.strip() in ("", "None"))


def _json_value(value: Any, field: str) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise BadRow(f"field {field}: not valid JSON") from None


def language_code(value: Any) -> str:
    """`English` or `en` -> `en`; an unknown language is refused (it could not be selected or reported)."""
    if _blank(value):
        return "en"
    text = str(value).strip().lower()
    code = LANGUAGE_NAMES.get(text, text)
    if code not in LANGUAGE_CODES:
        raise BadRow(f"field language: {value!r} is not a language this benchmark has "
                         f"(known: {', '.join(sorted(LANGUAGE_NAMES))} or their codes)")
    return code


def _instructions(raw_ids: Any, raw_kwargs: Any, step: int) -> tuple[list[str], list[dict[str, Any]]]:
    ids = _json_value(raw_ids, f"turn_{step}_instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadRow(f"step {step}: field instruction_id_list: expected a non-empty list of ids")
    kwargs = _json_value(raw_kwargs, f"turn_{step}_kwargs")
    if not isinstance(kwargs, list):
        raise BadRow(f"step {step}: field kwargs: expected a list")
    kwargs = [{} if _blank(k) else _json_value(k, f"turn_{step}_kwargs") for k in kwargs]
    if len(kwargs) != len(ids):
        raise BadRow(f"step {step}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
    for i, entry in enumerate(kwargs):
        if not isinstance(entry, dict):
            raise BadRow(f"step {step}: field kwargs[{i}]: expected an object")
    return ids, kwargs


def _check_instructions(example: IFExample, step: int) -> None:
    for instruction_id, kwargs in zip(example.instruction_ids, example.kwargs):
        if problem := argument_problem(instruction_id, kwargs, example.rules):
            raise BadRow(f"step {step}: cannot be checked: {problem}")


def _multi_if_steps(raw: dict[str, Any], key: str) -> list[Step]:
    steps, skipped = [], None
    for k in range(1, MAX_STEPS + 1):
        prompt = raw.get(f"turn_{k}_prompt")
        if _absent_prompt(prompt):
            skipped = skipped or k
            continue
        if skipped:
            raise BadRow(f"field turn_{k}_prompt: step {k} follows the absent step {skipped}")
        message = _json_value(prompt, f"turn_{k}_prompt")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise BadRow(f"field turn_{k}_prompt: expected a JSON object with a string `content`")
        ids, kwargs = _instructions(raw.get(f"turn_{k}_instruction_id_list"), raw.get(f"turn_{k}_kwargs"), k)
        steps.append(Step(k, IFExample(key, message["content"], ids, kwargs, "multi_if")))
    if not steps:
        raise BadRow("field turn_1_prompt: missing")
    return steps


def _ifeval_steps(raw: dict[str, Any], key: str) -> list[Step]:
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRow("field prompt: expected a non-empty string")
    ids, kwargs = _instructions(raw.get("instruction_id_list"), raw.get("kwargs"), 1)
    return [Step(1, IFExample(key, prompt, ids, kwargs, "ifeval"))]


def _decode(path: Path) -> str:
    """The whole file as text; a byte that is not UTF-8 is named with its line."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not valid UTF-8 (byte {err.start + 1})") from None


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    try:
        records = list(csv.reader(io.StringIO(_decode(path), newline="")))
    except csv.Error as err:
        raise InputError(f"{path}: not a readable CSV file ({err})") from None
    records = [r for r in records if r]
    if not records:
        raise InputError(f"{path}: empty (no header and no rows)")
    header, *body = records
    for index, record in enumerate(body, 1):
        if len(record) != len(header):
            raise InputError(f"{path}: row {index}: {len(record)} fields, but the header has {len(header)}")
    return [dict(zip(header, record)) for record in body]


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    return [(lineno, json_line_object(line, path, lineno)) for lineno, line in iter_lines(path)]


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, raw record) of every row of a CSV, parquet or JSONL file."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return [(f"row {i}", r) for i, r in enumerate(_csv_rows(path), 1)]
    if name.endswith(".parquet"):
        return [(f"row {i}", r) for i, r in enumerate(_parquet_rows(path), 1)]
    return [(f"line {lineno}", r) for lineno, r in _jsonl_rows(path)]


def load_rows(path: str | Path, languages: list[str] | None = None) -> list[Row]:
    """Multi-IF or IFEval rows, validated (a bad row names file, row, key and field); with
    `languages` (codes), only the rows in those languages."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise InputError(f"{path}: no rows")
    multi_if = "turn_1_prompt" in records[0][1]
    rows, seen = [], set()
    for where, raw in records:
        key = None if _blank(raw.get("key")) else str(raw["key"])
        where = f"{path}: {where}" + (f" (key {key})" if key is not None else "")
        try:
            if key is None:
                raise BadRow("field key: missing")
            if ("turn_1_prompt" in raw) != multi_if:
                raise BadRow("an IFEval row in a Multi-IF file or the reverse (field turn_1_prompt)")
            steps = _multi_if_steps(raw, key) if multi_if else _ifeval_steps(raw, key)
            for step in steps:
                _check_instructions(step.example, step.number)
            row = Row(key, language_code(raw.get("language")), steps)
        except BadRow as err:
            raise InputError(f"{where}: {err}") from None
        if key in seen:
            raise InputError(f"{where}: field key: duplicate")
        seen.add(key)
        rows.append(row)
    if languages is not None:
        rows = [row for row in rows if row.language in languages]
        if not rows:
            raise InputError(f"{path}: no rows in the languages {', '.join(languages)}")
    return rows


def parse_languages(value: str | tuple[str, ...] | list[str] | None) -> list[str] | None:
    """`--languages en,zh` (Fire may hand a tuple) as a list of known codes; None selects all."""
    if value is None:
        return None
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    codes = [item.strip().lower() for item in items if item.strip()]
    for code in codes:
        if code not in LANGUAGE_CODES:
            raise InputError(f"--languages: {code!r} is not a language code of the benchmark "
                             f"(known: {', '.join(sorted(LANGUAGE_CODES))})")
    if not codes:
        raise InputError("--languages: no language given")
    return sorted(set(codes), key=codes.index)


def _step_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def load_responses(path: str | Path, rows: list[Row]) -> dict[tuple[str, int], str]:
    """Responses keyed by (row key, step number): this toolkit's `{key, step, response}` lines, or
    IFEval's `{prompt, response}` lines (matched to single-step rows by prompt, as IFEval does).
    Lines for rows not selected are ignored; two answers to one step, a step the row does not have,
    or a step that is not a whole number are refused."""
    path = Path(path)
    if path.is_dir():
        path = path / "responses.jsonl"
    steps = {row.key: {step.number for step in row.steps} for row in rows}
    by_prompt = {row.steps[0].example.prompt: row.key for row in rows if len(row.steps) == 1}
    responses: dict[tuple[str, int], str] = {}
    first_line: dict[tuple[str, int], int] = {}
    for lineno, obj in _jsonl_rows(path):
        where = f"{path}: line {lineno}"
        if not isinstance(obj.get("response"), str):
            raise InputError(f"{where}: field response: expected a string")
        if "key" in obj:
            key, step = str(obj["key"]), _step_number(obj.get("step", 1))
            if step is None:
                raise InputError(f"{where}: field step: {obj.get('step')!r} is not a step number (1, 2, 3)")
            if key in steps and step not in steps[key]:
                raise InputError(f"{where}: key {key} has no step {step} in the data")
        elif "prompt" in obj:
            if obj["prompt"] not in by_prompt:
                continue
            key, step = by_prompt[obj["prompt"]], 1
        else:
            raise InputError(f"{where}: expected a `key` and `step`, or a `prompt`")
        if key not in steps:
            continue
        if (key, step) in responses:
            raise InputError(f"{where}: a second response to key {key} step {step} "
                             f"(the first is on line {first_line[(key, step)]})")
        responses[(key, step)] = obj["response"]
        first_line[(key, step)] = lineno
    for row in rows:
        for step in row.steps:
            if (row.key, step.number) not in responses:
                raise InputError(f"{path}: no response for key {row.key} step {step.number}")
    return responses
