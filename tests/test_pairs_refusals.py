"""Bad input and bad flag values, refused by the pair CLIs in one line naming the file or the flag,
exit status 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.utils.io import InputError
from rpo.utils.pairs.build import build_dpo_dataset, build_kto_dataset, build_rpo_dataset
from rpo.utils.schema import blank_constraint

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "rpo_data" / "demo_detail.jsonl"
CLIS = {
    name: ROOT / "src" / "dsc" / f"{name}.py"
    for name in ("rpo_data_construction", "kto_data_construction", "data_stats")
}


def refused(tmp_path: Path, cli: str, *args: str) -> str:
    """Run the CLI into an empty output folder; assert it refused, wrote nothing, and said one line."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(CLIS[cli]), f"--output_dir={out}", *args]
        if cli != "data_stats"
        else [sys.executable, str(CLIS[cli]), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert not out.exists() or list(out.iterdir()) == []
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--dataset_name=../../x"],
            "--dataset_name: expected a plain name, got '../../x'",
        ),
        (["--dataset_name=a/b"], "--dataset_name: expected a plain name, got 'a/b'"),
        (["--min_margin=abc"], "--min_margin: expected an integer, got 'abc'"),
        (["--max_margin=1.5"], "--max_margin: expected an integer, got 1.5"),
        (["--max_margin=-1"], "--max_margin: expected at least 0, got -1"),
        (["--min_margin=3", "--max_margin=2"], "--min_margin: 3 is above --max_margin=2"),
        (["--max_pairs=0"], "--max_pairs: expected at least 1, got 0"),
        (["--seed=x"], "--seed: expected an integer, got 'x'"),
        (["--prompt_constraints=some"], "--prompt_constraints: expected triggered or all, got 'some'"),
        (["--non_reversible=keep"], "--non_reversible: expected drop or skip, got 'keep'"),
        (
            ["--gap_buckets", "--min_margin=2"],
            "--gap_buckets: sets the margins itself; leave out --min_margin and --max_margin",
        ),
        (["--gap_buckets", "--max_pairs=0"], "--max_pairs: expected at least 1, got 0"),
    ],
)
def test_rpo_flag_values(tmp_path: Path, args: list[str], message: str) -> None:
    assert refused(tmp_path, "rpo_data_construction", f"--detail_path={DEMO}", *args) == f"error: {message}"


def test_kto_and_stats_flag_values(tmp_path: Path) -> None:
    assert refused(tmp_path, "kto_data_construction", f"--detail_path={DEMO}", "--dataset_name=..") == (
        "error: --dataset_name: expected a plain name, got '..'"
    )
    assert refused(tmp_path, "data_stats", f"--detail_path={DEMO}", "--non_reversible=keep") == (
        "error: --non_reversible: expected drop or skip, got 'keep'"
    )


@pytest.mark.parametrize("cli", ["rpo_data_construction", "kto_data_construction", "data_stats"])
def test_duplicate_session_ids(tmp_path: Path, cli: str) -> None:
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    detail = tmp_path / "dup.jsonl"
    detail.write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n", encoding="utf-8")
    assert refused(tmp_path, cli, f"--detail_path={detail}") == (
        f"error: {detail}: line 3: field session_id: duplicate id 'demo_trailhead' (first at line 1)"
    )


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_inputs(tmp_path: Path, text: str) -> None:
    detail = tmp_path / "empty.jsonl"
    detail.write_text(text, encoding="utf-8")
    for cli in ("rpo_data_construction", "data_stats"):
        assert refused(tmp_path, cli, f"--detail_path={detail}") == (
            f"error: {detail}: no records (the file is empty or holds only blank lines)"
        )


def test_a_lone_surrogate_is_named_with_its_record(tmp_path: Path) -> None:
    session = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])
    session["turns"][0]["samples"][0]["response"] = "half \ud800 a character"
    detail = tmp_path / "d.jsonl"
    detail.write_text(json.dumps(session) + "\n", encoding="utf-8")
    assert refused(tmp_path, "rpo_data_construction", f"--detail_path={detail}") == (
        f"error: {detail}: line 1 (record demo_trailhead): field turns[0].samples[0].response: a lone surrogate "
        "escape (\\ud800-\\udfff without its pair), not valid UTF-8 text"
    )


@pytest.mark.parametrize("cli,what", [("rpo_data_construction", "RPO"), ("kto_data_construction", "KTO")])
def test_a_build_without_records_says_so_and_exits_1(tmp_path: Path, cli: str, what: str) -> None:
    session = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])
    for turn in session["turns"]:  # every sample judged alike: no pair, no score gap
        turn["samples"] = [dict(sample, follows=turn["samples"][0]["follows"]) for sample in turn["samples"]]
    detail = tmp_path / "alike.jsonl"
    detail.write_text(json.dumps(session) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(CLIS[cli]), f"--detail_path={detail}", f"--output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [f"error: nothing built ({what} records: 0)"]
    assert "records" in proc.stdout  # the summary still says what was read


@pytest.mark.parametrize(
    "field,value,wording",
    [
        ("constraints", "", "profile.constraints[1]: empty constraint ''"),
        ("constraints", "  \t", "profile.constraints[1]: empty constraint '  \\t'"),
        ("constraints", "1. ", "profile.constraints[1]: empty constraint '1. '"),
        ("constraints", "(2)", "profile.constraints[1]: empty constraint '(2)'"),
        ("constraints", "三、", "profile.constraints[1]: empty constraint '三、'"),
        ("reversed", " - ", "reversed_constraints[1]: empty reversal ' - ' (null marks a constraint without one)"),
    ],
)
def test_a_constraint_that_states_nothing_is_refused_by_every_builder(
    tmp_path: Path, field: str, value: str, wording: str
) -> None:
    session = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])
    if field == "constraints":
        session["profile"]["constraints"][1] = value
    else:
        session["reversed_constraints"][1] = value
    detail = tmp_path / "d.jsonl"
    detail.write_text(json.dumps(session, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = f"{detail}: record demo_trailhead: field {wording}"
    for build in (build_rpo_dataset, build_dpo_dataset, build_kto_dataset):
        with pytest.raises(InputError) as err:
            build(detail, tmp_path / "out")
        assert str(err.value) == expected
    assert list((tmp_path / "out").iterdir()) == []  # no dataset, no registration, no temp file


def test_a_bare_list_marker_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    session = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])
    session["profile"]["constraints"][0] = "1. "
    detail = tmp_path / "d.jsonl"
    detail.write_text(json.dumps(session) + "\n", encoding="utf-8")
    assert refused(tmp_path, "rpo_data_construction", f"--detail_path={detail}") == (
        f"error: {detail}: record demo_trailhead: field profile.constraints[0]: empty constraint '1. '"
    )


def test_short_rules_that_say_something_are_kept() -> None:
    assert not any(blank_constraint(text) for text in ("A", "No emoji", "用中文", "1. Be brief", "- cite"))
    assert blank_constraint("1)") and blank_constraint("12") and blank_constraint("a.") and blank_constraint("•") and blank_constraint(" ")
