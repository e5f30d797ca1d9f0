"""Every stage CLI refuses a bad argument or input at the boundary: exit 2 and one line naming the
flag (or file, record and field), never a traceback and never a silent run that builds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.utils.cli import fire_arguments

from tests.stages_fakes import profile_record, session_record, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SFT = ROOT / "src" / "dsc" / "sft_data_construction.py"
DPO = ROOT / "src" / "dsc" / "dpo_data_construction.py"
REVERSE = ROOT / "src" / "dsc" / "reverse_constrain.py"
PROFILES = ROOT / "src" / "utils" / "profile_generate.py"


def refusal(script: Path, *args: str, cwd: Path) -> str:
    """Run a CLI that must refuse; return its single stderr line."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture()
def files(tmp_path):
    """A config (never contacted: each refusal comes before any call), profiles and sessions."""
    config = write_config(tmp_path / "p.yaml", "http://127.0.0.1:9/v1", None)
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(0)])
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(0)])
    return tmp_path, config, profiles, sessions


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--max_turns=-1", "--max_turns: expected at least 1, got -1"),
        ("--threshold=5", "--threshold: expected a fraction in (0, 1], got 5"),
        ("--threshold=abc", "--threshold: expected a number between 0 and 1, got 'abc'"),
        ("--max_refines=-2", "--max_refines: expected at least 0, got -2"),
        ("--n_candidates=0", "--n_candidates: expected at least 1, got 0"),
        ("--n_candidates=2.5", "--n_candidates: expected an integer, got 2.5"),
        ("--concurrency=0", "--concurrency: expected at least 1, got 0"),
        ("--trigger=maybe", "--trigger: expected true or false (or --trigger / --no-trigger), got 'maybe'"),
        ("--dataset_name=a/b", "--dataset_name: expected a plain name, got 'a/b'"),
    ],
)
def test_self_play_arguments(files, flag, message):
    tmp_path, config, profiles, _ = files
    line = refusal(SFT, f"--profiles={profiles}", f"--config={config}", flag, cwd=tmp_path)
    assert line == f"error: {message}"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--n=abc", "--n: expected an integer, got 'abc'"),
        ("--n=2.5", "--n: expected an integer, got 2.5"),
        ("--n=0", "--n: expected at least 1, got 0"),
        ("--n=true", "--n: expected an integer, got 'true'"),
        ("--concurrency=0", "--concurrency: expected at least 1, got 0"),
        ("--refine_threshold=5", "--refine_threshold: expected a fraction in (0, 1], got 5"),
        (
            "--dataset_only=yes",
            "--dataset_only: expected true or false (or --dataset_only / --no-dataset_only), got 'yes'",
        ),
    ],
)
def test_sampling_arguments(files, flag, message):
    tmp_path, config, _, sessions = files
    line = refusal(DPO, f"--config={config}", f"--sessions_path={sessions}", flag, cwd=tmp_path)
    assert line == f"error: {message}"


def test_other_stage_arguments(files):
    tmp_path, config, profiles, _ = files
    out = f"--output={tmp_path / 'o.jsonl'}"
    common = (f"--input={profiles}", out, f"--config={config}")
    assert (
        refusal(REVERSE, *common, "--max_checks=0", cwd=tmp_path)
        == "error: --max_checks: expected at least 1, got 0"
    )
    assert refusal(REVERSE, *common, "--concurrency=x", cwd=tmp_path) == (
        "error: --concurrency: expected an integer, got 'x'"
    )
    assert refusal(PROFILES, "system", *common, "--min_constraints=a", cwd=tmp_path) == (
        "error: --min_constraints: expected an integer, got 'a'"
    )
    assert refusal(PROFILES, "user", *common, "--concurrency=0", cwd=tmp_path) == (
        "error: --concurrency: expected at least 1, got 0"
    )


def test_output_paths_that_cannot_be_written(files):
    tmp_path, config, profiles, sessions = files
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = (f"--config={config}", f"--sessions_path={sessions}")
    assert refusal(DPO, *base, f"--output_dir={a_file}", cwd=tmp_path) == (
        f"error: --output_dir: {a_file} is a file, not a directory"
    )
    assert refusal(DPO, *base, f"--detail_path={a_file}/detail.jsonl", cwd=tmp_path) == (
        f"error: --detail_path: {a_file} is a file, not a directory"
    )
    assert refusal(DPO, *base, f"--detail_path={tmp_path}", cwd=tmp_path) == (
        f"error: --detail_path: {tmp_path} is a directory, expected a file path"
    )
    assert refusal(DPO, *base, "--output_dir=/proc/rpo_out", cwd=tmp_path) == (
        "error: --output_dir: cannot write into /proc/rpo_out (No such file or directory)"
    )
    assert refusal(
        SFT, f"--profiles={profiles}", f"--config={config}", f"--sessions_path={a_file}/s.jsonl", cwd=tmp_path
    ) == (f"error: --sessions_path: {a_file} is a file, not a directory")
    assert refusal(
        PROFILES,
        "system",
        f"--input={profiles}",
        f"--output={a_file}/o.jsonl",
        f"--config={config}",
        cwd=tmp_path,
    ) == (f"error: --output: {a_file} is a file, not a directory")


def test_empty_inputs_are_refused(files):
    tmp_path, config, _, _ = files
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    no_records = "no records (the file is empty or holds only blank lines)"
    for path in (empty, blank):
        assert refusal(DPO, f"--config={config}", f"--sessions_path={path}", cwd=tmp_path) == (
            f"error: {path}: {no_records}"
        )
        assert refusal(SFT, f"--profiles={path}", f"--config={config}", cwd=tmp_path) == (
            f"error: {path}: {no_records}"
        )
        out = f"--output={tmp_path / 'o.jsonl'}"
        assert refusal(REVERSE, f"--input={path}", out, f"--config={config}", cwd=tmp_path) == (
            f"error: {path}: {no_records}"
        )
        assert refusal(PROFILES, "user", f"--input={path}", out, f"--config={config}", cwd=tmp_path) == (
            f"error: {path}: {no_records}"
        )


def test_empty_constraints_and_repeated_ids_are_refused(files):
    tmp_path, config, _, _ = files
    blank_rule = profile_record(1)
    blank_rule["constraints"][1] = "  "
    profiles = write_jsonl(tmp_path / "bad_profiles.jsonl", [profile_record(0), blank_rule])
    assert refusal(SFT, f"--profiles={profiles}", f"--config={config}", cwd=tmp_path) == (
        f"error: {profiles}: record p1: field constraints[1]: empty constraint '  '"
    )
    session = session_record(2)
    session["profile"]["constraints"][0] = "1. "  # a list marker without its rule
    sessions = write_jsonl(tmp_path / "bad_sessions.jsonl", [session])
    assert refusal(DPO, f"--config={config}", f"--sessions_path={sessions}", cwd=tmp_path) == (
        f"error: {sessions}: record s2: field constraints[0]: empty constraint '1. '"
    )
    twice = write_jsonl(tmp_path / "twice.jsonl", [session_record(0), session_record(1), session_record(0)])
    assert refusal(DPO, f"--config={config}", f"--sessions_path={twice}", cwd=tmp_path) == (
        f"error: {twice}: line 3: field session_id: duplicate id 's0' (first at line 1)"
    )
    profiles_twice = write_jsonl(tmp_path / "p2.jsonl", [profile_record(0), profile_record(0)])
    assert refusal(SFT, f"--profiles={profiles_twice}", f"--config={config}", cwd=tmp_path) == (
        f"error: {profiles_twice}: line 2: field id: duplicate id 'p0' (first at line 1)"
    )
    users = write_jsonl(tmp_path / "u.jsonl", [{"id": "u", "persona": "a"}, {"id": "u", "persona": "b"}])
    good = write_jsonl(tmp_path / "good.jsonl", [profile_record(0)])
    assert refusal(SFT, f"--profiles={good}", f"--users={users}", f"--config={config}", cwd=tmp_path) == (
        f"error: {users}: line 2: field id: duplicate id 'u' (first at line 1)"
    )
    out = f"--output={tmp_path / 'o.jsonl'}"
    assert refusal(REVERSE, f"--input={profiles_twice}", out, f"--config={config}", cwd=tmp_path) == (
        f"error: {profiles_twice}: line 2: field id: duplicate id 'p0' (first at line 1)"
    )


def test_seed_corpus_with_a_byte_order_mark_is_read_as_jsonl(files):
    from rpo.utils.stages.profiles import read_seeds

    tmp_path = files[0]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"id": "g1", "text": "a lighthouse keeper"}).encode() + b"\n"
    )
    [seed] = read_seeds(corpus)
    assert (seed.id, seed.text, seed.source) == ("g1", "a lighthouse keeper", "corpus")


def test_help_is_asked_of_fire_after_its_separator() -> None:
    assert fire_arguments(["--help"]) == ["--", "--help"]
    assert fire_arguments(["run", "-h", "--data=x"]) == ["run", "--data=x", "--", "--help"]
    assert fire_arguments(["--no-trigger", "--n=2"]) == ["--notrigger", "--n=2"]
    assert fire_arguments(["x", "--", "--help"]) == ["x", "--", "--help"]  # already Fire's form


def test_help_shows_defaults_whole_and_no_info_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "src" / "dsc" / "rpo_data_construction.py"), "--help"],
                            cwd=tmp_path, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "INFO:" not in result.stderr and result.stderr.startswith("NAME\n")
    assert "        Default: 'data/rpo_data/demo_detail.jsonl'\n" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_lone_surrogate_in_a_detail_file_to_verify_is_refused_before_any_call(files):
    tmp_path, config, _, _ = files
    detail = json.loads((ROOT / "data" / "rpo_data" / "demo_detail.jsonl").read_text(encoding="utf-8").splitlines()[0])
    detail["turns"][0]["samples"][1]["response"] = "cut \udfff here"
    path = write_jsonl(tmp_path / "detail.jsonl", [detail])
    out = tmp_path / "verified.jsonl"
    line = refusal(REVERSE, f"--input={path}", f"--output={out}", f"--config={config}", "--verify", cwd=tmp_path)
    assert line == (
        f"error: {path}: line 1 (record demo_trailhead): field turns[0].samples[1].response: a lone surrogate "
        "escape (\\ud800-\\udfff without its pair), not valid UTF-8 text"
    )
    assert not out.exists()
