"""Multi-IF inputs that cannot be scored are refused in one line naming file, row and field."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.eval.multi_if.data import load_responses, load_rows, parse_languages
from rpo.utils.io import InputError

from tests.test_eval_ifeval_score import MULTI_IF_RESPONSES, _write_responses

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "eval" / "multi_if.csv"
MULTI_IF = [sys.executable, str(ROOT / "src" / "eval" / "multi_if.py")]


def _records() -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _refusal(call, *args) -> str:
    with pytest.raises(InputError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(turn_1_prompt="not json"), "line 1 (key a1): field turn_1_prompt: not valid JSON"),
        (lambda r: r.update(turn_2_kwargs="[]"), "line 1 (key a1): step 2: 2 instruction ids but 0 kwargs"),
        (lambda r: r.update(key="z1"), "line 2 (key z1): field key: duplicate"),
        (lambda r: r.update(turn_2_prompt="None"),
         "line 1 (key a1): field turn_3_prompt: step 3 follows the absent step 2"),
        (lambda r: r.update(turn_1_instruction_id_list='["length_constraints:number_characters"]'),
         ("line 1 (key a1): step 1: cannot be checked: instruction id 'length_constraints:number_characters' is not "
         "one the checker knows")),
        (lambda r: r.update(turn_3_kwargs=json.dumps(["{}", "{}", '{"relation": "less than"}'])),
         ("line 1 (key a1): step 3: cannot be checked: length_constraints:number_words: argument 'num_words' is "
         "missing (the checker would draw it at random)")),
        (lambda r: r.update(language="Klingon"), "line 1 (key a1): field language: 'Klingon' is not a language"),
        (lambda r: r.update(turn_1_instruction_id_list="None"),
         "line 1 (key a1): field turn_1_instruction_id_list: not valid JSON"),
        (lambda r: r.update(turn_1_instruction_id_list="[]"),
         "line 1 (key a1): step 1: field instruction_id_list: expected a non-empty list of ids"),
    ],
)
def test_bad_rows_are_refused(tmp_path, edit, message):
    records = _records()
    edit(records[0])
    bad = _write_jsonl(tmp_path / "bad.jsonl", records)
    assert _refusal(load_rows, bad).startswith(f"{bad}: {message}")


def test_an_ifeval_row_in_a_multi_if_file_is_refused(tmp_path):
    records = [*_records(), {"key": "x", "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"],
                             "kwargs": [{}]}]
    bad = _write_jsonl(tmp_path / "mixed.jsonl", records)
    assert _refusal(load_rows, bad) == (f"{bad}: line 4 (key x): an IFEval row in a Multi-IF file or the reverse "
                                        "(field turn_1_prompt)")


def test_unreadable_files_are_refused(tmp_path):
    text = DATA.read_bytes()
    latin = tmp_path / "latin.csv"
    latin.write_bytes(text.replace("春".encode(), b"\xe9", 1))
    assert "latin.csv: line 3: not valid UTF-8" in _refusal(load_rows, latin)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert _refusal(load_rows, empty) == f"{empty}: empty (no header and no rows)"
    header = tmp_path / "header.csv"
    header.write_bytes(text.splitlines(keepends=True)[0])
    assert _refusal(load_rows, header) == f"{header}: no rows"
    lines = text.decode().splitlines(keepends=True)
    short = tmp_path / "short.csv"
    short.write_text(lines[0] + "a9,English\n", encoding="utf-8")
    assert _refusal(load_rows, short) == f"{short}: row 1: 2 fields, but the header has 14"
    long = tmp_path / "long.csv"
    long.write_text(lines[0] + lines[1].rstrip("\n") + ",extra\n", encoding="utf-8")
    assert _refusal(load_rows, long) == f"{long}: row 1: 15 fields, but the header has 14"
    parquet = tmp_path / "broken.parquet"
    parquet.write_bytes(b"PAR1 this is not a parquet file")
    assert _refusal(load_rows, parquet).startswith(f"{parquet}: not a readable parquet file (")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"key": "a1", "step": "two", "response": "x"}, "line 9: field step: 'two' is not a step number (1, 2, 3)"),
        ({"key": "a1", "step": 2.7, "response": "x"}, "line 9: field step: 2.7 is not a step number (1, 2, 3)"),
        ({"key": "a1", "step": True, "response": "x"}, "line 9: field step: True is not a step number (1, 2, 3)"),
        ({"key": "a1", "step": 2, "response": "again"},
         "line 9: a second response to key a1 step 2 (the first is on line 2)"),
        ({"key": "h1", "step": 3, "response": "x"}, "line 9: key h1 has no step 3 in the data"),
        ({"key": "a1", "step": 1, "response": None}, "line 9: field response: expected a string"),
    ],
)
def test_bad_responses_are_refused(tmp_path, line, message):
    rows = load_rows(DATA)
    path = _write_responses(tmp_path / "r.jsonl")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    assert _refusal(load_responses, path, rows) == f"{path}: {message}"


def test_responses_of_rows_not_selected_are_ignored(tmp_path):
    rows = load_rows(DATA, ["zh"])
    assert [row.key for row in rows] == ["z1"]
    responses = load_responses(_write_responses(tmp_path / "r.jsonl"), rows)
    assert set(responses) == {("z1", 1), ("z1", 2), ("z1", 3)}
    partial = {k: v for k, v in MULTI_IF_RESPONSES.items() if k != ("z1", 3)}
    path = _write_responses(tmp_path / "partial.jsonl", partial)
    assert _refusal(load_responses, path, rows) == f"{path}: no response for key z1 step 3"


def test_languages_flag():
    assert parse_languages("en, zh") == ["en", "zh"] and parse_languages(("hi", "en")) == ["hi", "en"]
    assert parse_languages(None) is None
    assert "'english' is not a language code" in _refusal(parse_languages, "english")
    assert "'1' is not a language code" in _refusal(parse_languages, 1)
    assert _refusal(load_rows, DATA, ["ja"]) == f"{DATA}: no rows in the languages ja"


def test_cli_refuses_in_one_line(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes(DATA.read_bytes().replace("春".encode(), b"\xe9", 1))
    done = subprocess.run([*MULTI_IF, "score", f"--data={latin}", f"--responses={tmp_path / 'none.jsonl'}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {latin}: line 3: not valid UTF-8 (byte 841)\n"
