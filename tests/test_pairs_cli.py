"""The pair-construction CLIs as users run them: by path, from a repo-like root, on the bundled demo file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "rpo_data" / "demo_detail.jsonl"
RPO_CLI = ROOT / "src" / "dsc" / "rpo_data_construction.py"
KTO_CLI = ROOT / "src" / "dsc" / "kto_data_construction.py"
STATS_CLI = ROOT / "src" / "dsc" / "data_stats.py"


def run(cli: Path, *args: str, cwd: Path, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python_flags, str(cli), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A working directory laid out like the repo root, holding only the bundled detail file."""
    (tmp_path / "data" / "rpo_data").mkdir(parents=True)
    shutil.copy(DEMO, tmp_path / "data" / "rpo_data" / DEMO.name)
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "other.json"}}))
    return tmp_path


def test_no_argument_run_on_the_bundled_file(repo_copy: Path) -> None:
    proc = run(RPO_CLI, cwd=repo_copy, python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr
    heavy = {"torch", "transformers", "openai", "llamafactory", "numpy"}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not heavy & imported
    records = json.loads((repo_copy / "data" / "rpo.json").read_text(encoding="utf-8"))
    info = json.loads((repo_copy / "data" / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "other.json"}  # other datasets kept
    assert info["rpo"] == {
        "file_name": "rpo.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "margin": "margin"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"},
    }  # fmt: skip
    out = proc.stdout
    assert f"rpo records: {len(records)}" in out
    assert "sessions 10," in out and "margin histogram:" in out and "non-reversible constraints:" in out
    assert any(line.startswith("direct ") for line in out.splitlines())
    assert any(line.startswith("reverse ") for line in out.splitlines())
    assert all(isinstance(r["margin"], int) and r["margin"] >= 1 for r in records)
    assert {r["conversations"][0]["from"] for r in records} == {"system"}
    assert any(
        "约束" in r["conversations"][0]["value"] for r in records
    )  # Chinese sessions use the zh template


def test_skip_mode_and_custom_names(repo_copy: Path) -> None:
    out_dir = repo_copy / "out"
    args = (
        f"--detail_path={DEMO}",
        f"--output_dir={out_dir}",
        "--dataset_name=rpo_skip",
        "--non_reversible=skip",
    )
    proc = run(RPO_CLI, *args, cwd=repo_copy)
    assert proc.returncode == 0, proc.stderr
    assert "non-reversible constraints: 23 pairs whose chosen fails one: 0 emitted with it left out of the prompt, 23 skipped, 0 not emitted (margin 0 without it)" in proc.stdout
    drop = run(RPO_CLI, f"--detail_path={DEMO}", f"--output_dir={out_dir}", "--dataset_name=rpo_drop", cwd=repo_copy)
    assert "non-reversible constraints: 23 pairs whose chosen fails one: 19 emitted with it left out of the prompt, 0 skipped, 4 not emitted (margin 0 without it)" in drop.stdout
    assert json.loads((out_dir / "dataset_info.json").read_text())["rpo_skip"]["file_name"] == "rpo_skip.json"


def test_bad_input_one_line_exit_2_and_previous_output_kept(repo_copy: Path) -> None:
    data = repo_copy / "data"
    assert run(RPO_CLI, cwd=repo_copy).returncode == 0
    before = (data / "rpo.json").read_bytes()
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[2])
    del broken["turns"][0]["query"]
    bad = repo_copy / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(broken), *lines[3:]]) + "\n", encoding="utf-8")
    proc = run(RPO_CLI, f"--detail_path={bad}", cwd=repo_copy)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1
    assert str(bad) in message and "line 3" in message and "turns[0].query" in message
    assert broken["session_id"] in message
    assert (data / "rpo.json").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == [
        "dataset_info.json",
        "rpo.json",
        "rpo_data",
    ]  # no temp files

    invalid_json = repo_copy / "torn.jsonl"
    invalid_json.write_text(lines[0] + "\n" + lines[1][:50] + "\n", encoding="utf-8")
    proc = run(RPO_CLI, f"--detail_path={invalid_json}", f"--output_dir={repo_copy / 'fresh'}", cwd=repo_copy)
    assert proc.returncode == 2 and "line 2: invalid JSON" in proc.stderr
    assert not (repo_copy / "fresh" / "rpo.json").exists()

    proc = run(RPO_CLI, "--detail_path=missing.jsonl", cwd=repo_copy)
    assert proc.returncode == 2 and "missing.jsonl: file not found" in proc.stderr
    proc = run(RPO_CLI, "--non_reversible=keep", cwd=repo_copy)
    assert proc.returncode == 2 and "--non_reversible" in proc.stderr


def test_kto_cli_and_llamafactory_reads_all_three_entries(repo_copy: Path) -> None:
    assert run(KTO_CLI, cwd=repo_copy).returncode == 0
    assert run(RPO_CLI, cwd=repo_copy).returncode == 0
    from rpo.utils.pairs.build import build_dpo_dataset

    build_dpo_dataset(DEMO, repo_copy / "data", "dpo")
    kto = json.loads((repo_copy / "data" / "kto.json").read_text(encoding="utf-8"))
    assert {r["kto_tag"] for r in kto} == {True, False}

    from llamafactory.data.converter import SharegptDatasetConverter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    attrs = {a.dataset_name: a for a in get_dataset_list(["rpo", "dpo", "kto"], str(repo_copy / "data"))}
    assert attrs["rpo.json"].ranking and attrs["rpo.json"].chosen == "chosen"
    assert attrs["kto.json"].kto_tag == "kto_tag" and not attrs["kto.json"].ranking
    data_args = DataArguments(dataset_dir=str(repo_copy / "data"))
    for name in ("rpo", "dpo", "kto"):
        attr = attrs[f"{name}.json"]
        example = json.loads((repo_copy / "data" / f"{name}.json").read_text(encoding="utf-8"))[-1]
        converted = SharegptDatasetConverter(attr, data_args)(example)
        assert converted["_system"] == example["conversations"][0]["value"]
        assert len(converted["_prompt"]) == len(example["conversations"]) - (2 if name == "kto" else 1)
        assert len(converted["_response"]) == 2  # ranking pair, or KTO's answer beside an empty one


def test_data_stats_cli_with_tokenizer_percentiles(repo_copy: Path) -> None:
    assert run(RPO_CLI, cwd=repo_copy).returncode == 0
    proc = run(STATS_CLI, "--dataset=data/rpo.json", cwd=repo_copy)
    assert proc.returncode == 0, proc.stderr
    assert "margin histogram:" in proc.stdout and "length in chars: p50" in proc.stdout

    from rpo.utils.tiny_model import train_tokenizer

    texts = DEMO.read_text(encoding="utf-8").splitlines()
    train_tokenizer(texts, vocab_size=400).save_pretrained(repo_copy / "tok")
    proc = run(
        STATS_CLI,
        "--detail_path=",
        "--dataset=data/rpo.json",
        f"--tokenizer={repo_copy / 'tok'}",
        cwd=repo_copy,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert "records, length in tokens:" in line and "margin histogram" not in proc.stdout
    head, cutoff = line.rsplit("; cutoff_len ", 1)
    values = [int(part.split()[1]) for part in head.rsplit(": ", 1)[1].split(", ")]
    assert values == sorted(values) and values[0] > 50
    assert int(cutoff) == max(256, -(-values[2] // 256) * 256)  # p95 rounded up, as generate_conf_file.py does


def test_gap_buckets_in_one_command(repo_copy: Path) -> None:
    proc = run(RPO_CLI, "--gap_buckets", "--max_pairs=30", "--seed=2", cwd=repo_copy)
    assert proc.returncode == 0, proc.stderr
    data = repo_copy / "data"
    info = json.loads((data / "dataset_info.json").read_text())
    for name, margins in (("rpo_gap_ge3", {3, 4, 5}), ("rpo_gap_2", {2}), ("rpo_gap_1", {1})):
        records = json.loads((data / f"{name}.json").read_text(encoding="utf-8"))
        assert len(records) == 30 and {r["margin"] for r in records} <= margins
        assert info[name]["file_name"] == f"{name}.json" and info[name]["ranking"] is True
    lines = proc.stdout.splitlines()
    assert lines[0] == "rpo records: 90"
    assert lines[2] == "gap buckets, 30 records each (seed 2):"
    assert lines[3] == "  rpo_gap_ge3 (margin >= 3): 30 of 61 -> data/rpo_gap_ge3.json"
    assert not (data / "rpo.json").exists()


def test_the_old_workers_flag_is_accepted_and_changes_nothing(repo_copy: Path) -> None:
    plain = run(RPO_CLI, cwd=repo_copy)
    first = (repo_copy / "data" / "rpo.json").read_bytes()
    flagged = run(RPO_CLI, "--workers=3", cwd=repo_copy)
    assert plain.returncode == flagged.returncode == 0, flagged.stderr
    assert (repo_copy / "data" / "rpo.json").read_bytes() == first
    assert flagged.stdout == plain.stdout
    assert flagged.stderr == (
        "note: --workers is no longer needed (pair construction runs in one process); ignored\n"
    )


def test_data_stages_with_their_default_paths_change_no_tracked_file(tmp_path: Path) -> None:
    """A checkout with the repository's ignore rules and bundled data: the stages' default outputs
    (datasets, their dataset_info.json, lock and temp files) leave `git status` clean."""
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    (tmp_path / "data" / "rpo_data").mkdir(parents=True)
    shutil.copy(DEMO, tmp_path / "data" / "rpo_data" / DEMO.name)
    git = ("git", "-c", "user.name=test", "-c", "user.email=test@localhost")
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "bundled data"], cwd=tmp_path, check=True)
    tracked = subprocess.run([*git, "ls-files"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert tracked.split() == [".gitignore", "data/rpo_data/demo_detail.jsonl"]  # the bundled file stays tracked
    for cli in (RPO_CLI, KTO_CLI):
        proc = run(cli, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "rpo.json").is_file() and (tmp_path / "data" / "dataset_info.json").is_file()
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all", "--ignored=no"], cwd=tmp_path,
                            check=True, capture_output=True, text=True).stdout
    assert status == ""
