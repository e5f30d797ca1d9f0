"""How long a LLaMA-Factory dataset's examples are, to choose `cutoff_len`: one reader that honours the
dataset's `dataset_info.json` entry (formatting, columns, tags), one percentile, and the model's own
chat template.

`data_stats.py --dataset` and `generate_conf_file.py` both measure through here, so they recommend
the same `cutoff_len` for the same data. An example's length is its prompt (system, history, query)
plus its longer response, as the chat template lays them out; a row of the wrong shape is refused in
one line naming file, record and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from rpo.utils.dataset_registry import ENTRIES, INFO_FILE, read_dataset_info
from rpo.utils.io import InputError, iter_lines, read_json

CUTOFF_PERCENTILE = 0.95
CUTOFF_STEP = 256
Turn = tuple[str, str]
"""(chat role: system, user or assistant; text)."""

DEFAULT_ENTRY: dict[str, Any] = ENTRIES["rpo"]
"""How an unregistered file is read: the sharegpt layout this toolkit writes."""


def nearest_rank(values: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile: the smallest value at least `fraction` of the values do not exceed
    (`fraction` 1 is the maximum)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = -(-round(fraction * len(ordered) * 1_000_000) // 1_000_000)  # ceil, immune to 0.95 * 20 = 19.000000000000004
    return ordered[min(len(ordered), max(1, rank)) - 1]


def cutoff_len(lengths: Sequence[int], cap: int = 8192) -> int:
    """The `cutoff_len` for examples of these token lengths: their 95th percentile rounded up to a
    multiple of 256, at least 256, at most `cap`."""
    value = nearest_rank(lengths, CUTOFF_PERCENTILE)
    return max(CUTOFF_STEP, min(cap, -(-value // CUTOFF_STEP) * CUTOFF_STEP))


def iter_rows(path: str | Path) -> Iterator[Any]:
    """The rows of a dataset file: a JSON array (streamed when written one row a line, as this
    toolkit writes them) or JSON lines."""
    path = Path(path)
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise InputError(f"{path}: the dataset has no examples")
    head = first[1].strip()
    if head == "[":
        rows: list[Any] = []
        for lineno, line in lines:
            text = line.strip().removesuffix(",")
            if text == "]":
                break
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError:
                if rows:
                    raise InputError(f"{path}: line {lineno}: invalid JSON (expected one row a line)") from None
                yield from _whole_array(path)  # laid out otherwise (pretty-printed): read whole
                return
            yield rows.pop()
    elif head.startswith("["):
        yield from _whole_array(path)
    else:
        for lineno, line in [first, *lines]:
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {lineno}: invalid JSON ({err.msg})") from None


def _whole_array(path: Path) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of examples, got {type(data).__name__}")
    return data


def example_turns(row: Any, entry: dict[str, Any], where: str) -> list[Turn]:
    """The longest sequence an example trains on: prompt turns plus its longer response.

    `where` (`file: record N`) starts the refusal of a row of the wrong shape."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    columns = entry.get("columns") or {}
    if entry.get("formatting", "alpaca") == "sharegpt":
        return _sharegpt_turns(row, columns, entry.get("tags") or {}, where)
    return _alpaca_turns(row, columns, where)


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise InputError(f"{where}: field {field}: expected text, got {got}")
    return value


def _sharegpt_turns(row: dict[str, Any], columns: dict[str, str], tags: dict[str, str], where: str) -> list[Turn]:
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    roles = {
        tags.get("system_tag", "system"): "system",
        tags.get("user_tag", "human"): "user",
        tags.get("observation_tag", "observation"): "user",
        tags.get("assistant_tag", "gpt"): "assistant",
        tags.get("function_tag", "function_call"): "assistant",
    }

    def turn(message: Any, field: str) -> Turn:
        if not isinstance(message, dict):
            raise InputError(f"{where}: field {field}: expected a message object, got {type(message).__name__}")
        role = _text(message.get(role_tag), where, f"{field}.{role_tag}")
        if role not in roles:
            raise InputError(f"{where}: field {field}.{role_tag}: unknown role {role!r} (known: {', '.join(roles)})")
        return roles[role], _text(message.get(content_tag), where, f"{field}.{content_tag}")

    key = columns.get("messages", "conversations")
    messages = row.get(key)
    if not isinstance(messages, list) or not messages:
        got = "nothing" if messages is None else f"{type(messages).__name__}" if not isinstance(messages, list) else "[]"
        raise InputError(f"{where}: field {key}: expected a list of messages, got {got}")
    turns = [turn(message, f"{key}[{k}]") for k, message in enumerate(messages)]
    if columns.get("system") and row.get(columns["system"]) is not None:
        turns.insert(0, ("system", _text(row[columns["system"]], where, columns["system"])))
    answers = [turn(row[columns[k]], columns[k]) for k in ("chosen", "rejected") if k in columns and columns[k] in row]
    if answers:
        turns.append(max(answers, key=lambda answer: len(answer[1])))
    return turns


def _alpaca_turns(row: dict[str, Any], columns: dict[str, str], where: str) -> list[Turn]:
    turns: list[Turn] = []
    system = columns.get("system", "system")
    if row.get(system) is not None:
        turns.append(("system", _text(row[system], where, system)))
    history = columns.get("history", "history")
    for k, pair in enumerate(row.get(history) or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise InputError(f"{where}: field {history}[{k}]: expected [query, response]")
        turns += [("user", _text(pair[0], where, f"{history}[{k}][0]")),
                  ("assistant", _text(pair[1], where, f"{history}[{k}][1]"))]
    prompt, query = columns.get("prompt", "instruction"), columns.get("query", "input")
    user = _text(row.get(prompt), where, prompt)
    if row.get(query):
        user += "\n" + _text(row[query], where, query)
    turns.append(("user", user))
    names = [columns[k] for k in ("chosen", "rejected") if k in columns] or [columns.get("response", "output")]
    answers = [_text(row.get(name), where, name) for name in names]
    turns.append(("assistant", max(answers, key=len)))
    return turns


def dataset_examples(dataset_dir: str | Path, name: str) -> list[list[Turn]]:
    """Every example of dataset `name` as registered in `{dataset_dir}/dataset_info.json`."""
    info_path = Path(dataset_dir) / INFO_FILE
    if not info_path.is_file():
        raise InputError(f"{info_path}: file not found")
    info = read_dataset_info(dataset_dir)
    if name not in info:
        raise InputError(f"{info_path}: dataset {name!r} not defined (known: {', '.join(sorted(info)) or 'none'})")
    entry = info[name]
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        raise InputError(f"{info_path}: dataset {name!r}: field file_name: expected the dataset's file name")
    return file_examples(Path(dataset_dir) / entry["file_name"], entry)


def file_examples(path: str | Path, entry: dict[str, Any] | None = None) -> list[list[Turn]]:
    """Every example of a dataset file, read as `entry` says (by default as its `dataset_info.json`
    beside it registers it, else in the toolkit's sharegpt layout)."""
    path = Path(path)
    if entry is None:
        registered = [e for e in read_dataset_info(path.parent).values()
                      if isinstance(e, dict) and e.get("file_name") == path.name]
        entry = registered[0] if registered else DEFAULT_ENTRY
    examples = [example_turns(row, entry, f"{path}: record {k}") for k, row in enumerate(iter_rows(path))]
    if not examples:
        raise InputError(f"{path}: the dataset has no examples")
    return examples


def token_lengths(tokenizer: Any, examples: Iterable[list[Turn]]) -> list[int]:
    """Each example's length in tokens as the tokenizer's chat template lays it out (special tokens
    included); a tokenizer without a template, or whose template refuses the turns (some refuse a
    system turn), counts the texts joined by newlines with its special tokens."""
    texts: list[str] = []
    templated: list[bool] = []  # rendered by the template, which writes the special tokens itself
    for turns in examples:
        messages = [{"role": role, "content": text} for role, text in turns]
        rendered = None
        if getattr(tokenizer, "chat_template", None):
            try:
                rendered = tokenizer.apply_chat_template(messages, tokenize=False)
            except (TemplateError, ValueError):  # the template's own refusal, not the data's fault
                rendered = None
        templated.append(rendered is not None)
        texts.append(rendered if rendered is not None else "\n".join(text for _, text in turns))
    lengths = {}
    for done in (True, False):
        chosen = [text for text, flag in zip(texts, templated) if flag is done]
        lengths[done] = iter(map(len, tokenizer(chosen, add_special_tokens=not done)["input_ids"]) if chosen else ())
    return [next(lengths[done]) for done in templated]


def char_lengths(examples: Iterable[list[Turn]]) -> list[int]:
    return [sum(len(text) for _, text in turns) for turns in examples]
