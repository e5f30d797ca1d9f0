"""Answer handling shared by the evaluations: thinking removed, warnings on useless answers, run records."""

from __future__ import annotations

import json

import pytest
from rpo.eval.answers import answer_warnings, strip_think
from rpo.eval.run_record import check_or_record, file_sha256
from rpo.utils.io import InputError


@pytest.mark.parametrize(("text", "expected"), [
    ("<think>plan it</think>\n\nThe answer.", ("The answer.", True)),
    ("I reasoned.\n</think>\nThe answer.", ("The answer.", True)),
    ("<think>a</think>One <think>b</think>two", ("One two", True)),
    ("<think>never finished", ("", True)),
    ("Plain answer about <thinking> tags.", ("Plain answer about <thinking> tags.", False)),
    ("  untouched  ", ("  untouched  ", False)),
])
def test_strip_think(text, expected):
    assert strip_think(text) == expected


def test_answer_warnings():
    assert answer_warnings([], []) == []
    assert answer_warnings(["a", "b", "c"], [False, False, False]) == []
    empty = answer_warnings(["", " ", "x"], [False, False, False])
    assert empty == ["2 of 3 answers are empty: check the served model and its chat template"]
    cut = answer_warnings(["a", "b", "c"], [True, True, False])
    assert len(cut) == 1 and cut[0].startswith("2 of 3 answers were cut off")
    same = answer_warnings(["Sure!", "Sure!", "Sure! ", "no"], [False] * 4)
    assert len(same) == 1 and same[0].startswith("3 of 4 answers are the same text ('Sure!')")


def test_run_record(tmp_path):
    data = tmp_path / "data.json"
    data.write_bytes(b"[]")
    assert file_sha256(data) == "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    settings = {"model": "m", "data_sha256": file_sha256(data), "decoding": {"temperature": 0.0}}
    check_or_record(tmp_path, settings)
    assert json.loads((tmp_path / "run.json").read_text()) == settings
    check_or_record(tmp_path, dict(settings))
    with pytest.raises(InputError, match=r'was run with model="m", not "other"'):
        check_or_record(tmp_path, {**settings, "model": "other"})
    with pytest.raises(InputError, match=r"was run with decoding="):
        check_or_record(tmp_path, {**settings, "decoding": {"temperature": 0.5}})
    with pytest.raises(InputError, match=r'was run with history="<unset>", not "own"'):
        check_or_record(tmp_path, {**settings, "history": "own"})
    (tmp_path / "run.json").write_bytes(b"\xff")
    with pytest.raises(InputError, match="not a run record"):
        check_or_record(tmp_path, settings)
