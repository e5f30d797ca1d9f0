"""`python sysbank/browse.py ...` as a user runs it: on the bundled sample and on generated files."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.utils.io import read_jsonl
from rpo.utils.schema import SystemProfile

from sysbank.loader import SAMPLE_PATH

ROOT = Path(__file__).resolve().parent.parent
BROWSE = ROOT / "sysbank" / "browse.py"
N_SAMPLE = sum(1 for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines() if line.strip())


def browse(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BROWSE), *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          check=False)


def release_record(i: int, zh: bool = False, **extra: object) -> dict[str, object]:
    if zh:
        structure = {"名称": f"助手{i}", "描述": "一个测试助手。", "技能": ["聊天"], "约束": [f"回复不超过{i + 10}字。"] * (1 + i % 3)}
    else:
        structure = {"Name": f"Helper {i}", "Description": "A test helper.", "Skils": ["chat"],
                     "Constraints": [f"Answer in at most {i + 10} words.", "Never use emojis."][: 1 + i % 2]}
    return {"structure_system_prompt": structure, "source": "gptstore" if i % 2 else "frgpts",
            "gptId": f"gen_{i}", **extra}


def write(path: Path, records: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def test_stats_on_the_sample() -> None:
    text = browse("stats")
    assert text.returncode == 0, text.stderr
    for needle in ("records: ", "by source", "frgpts", "gptstore", "constraints per prompt", "behaviour", "logic"):
        assert needle in text.stdout
    as_json = json.loads(browse("stats", "--json").stdout)
    assert as_json["records"] == N_SAMPLE
    assert set(as_json["by_source"]) == {"frgpts", "gptstore"}
    assert as_json["by_language"]["en"] > 0 and as_json["by_language"]["zh"] > 0
    assert all(as_json["constraint_categories"][k] > 0 for k in ("content", "format", "style", "role", "logic", "behaviour"))
    zh_only = json.loads(browse("stats", "--json", "--language", "zh").stdout)
    assert zh_only["records"] == as_json["by_language"]["zh"]


def test_list_filters_and_json() -> None:
    out = browse("list")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == N_SAMPLE
    rows = [json.loads(line) for line in browse("list", "--json", "--source", "gptstore", "--language", "zh").stdout.splitlines()]
    assert rows and all(r["source"] == "gptstore" and r["id"].startswith("gptstore_") for r in rows)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r["name"]) for r in rows)
    assert set(rows[0]) == {"id", "source", "name", "description", "skills", "constraints", "system_prompt",
                            "inspired_corpus", "gen_model"}
    few = [json.loads(line) for line in browse("list", "--json", "--min_constraints", "7").stdout.splitlines()]
    assert few and all(len(r["constraints"]) >= 7 for r in few)
    capped = browse("list", "--max-constraints", "4", "--limit", "1").stdout.splitlines()
    assert len(capped) == 1 and capped[0].split("\t")[3] == "4"


def test_show_text_and_json() -> None:
    shown = browse("show", "frgpts_163")
    assert shown.returncode == 0
    assert "星座专家" in shown.stdout and "Constraints (8)" in shown.stdout and "[format" in shown.stdout
    record = json.loads(browse("show", "frgpts_163", "--json").stdout)
    assert record["id"] == "frgpts_163" and len(record["constraints"]) == 8
    missing = browse("show", "nope_1")
    assert missing.returncode == 2 and "nope_1" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_search_text_regex_and_filters() -> None:
    hits = [json.loads(line) for line in browse("search", "EMOJI", "--json").stdout.splitlines()]
    assert hits and all("emoji" in json.dumps(h).lower() for h in hits)
    zh = [json.loads(line) for line in browse("search", r"\d+字", "--regex", "--json").stdout.splitlines()]
    assert zh and all(any("字" in c for c in h["constraints"]) for h in zh)
    en_only = [json.loads(line) for line in browse("search", "the", "--json", "--language", "en", "--source", "frgpts").stdout.splitlines()]
    assert en_only and all(h["source"] == "frgpts" for h in en_only)
    none = browse("search", "zzz-nothing-like-this")
    assert none.returncode == 0 and none.stdout == "" and "0 match(es)" in none.stderr
    bad = browse("search", "([", "--regex")
    assert bad.returncode == 2 and "invalid regular expression" in bad.stderr


def test_export_filters_sample_seed_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out" / "profiles.jsonl"
    done = browse("export", "--output", str(out), "--language", "zh", "--sample", "5", "--seed", "7")
    assert done.returncode == 0, done.stderr
    first = out.read_text(encoding="utf-8")
    profiles = list(read_jsonl(out, SystemProfile))  # what the data toolkit reads
    assert len(profiles) == 5 and all(any("\u4e00" <= ch <= "\u9fff" for ch in p.name) for p in profiles)
    assert browse("export", "-o", str(out), "--language", "zh", "--sample", "5", "--seed", "7").returncode == 0
    assert out.read_text(encoding="utf-8") == first
    assert browse("export", "-o", str(out), "--language", "zh", "--sample", "5", "--seed", "8").returncode == 0
    assert out.read_text(encoding="utf-8") != first
    assert [f.name for f in out.parent.iterdir()] == ["profiles.jsonl"]  # no temp file left behind

    gz = tmp_path / "all.jsonl.gz"
    assert browse("export", "-o", str(gz), "--search", "refuse|拒绝", "--regex").returncode == 0
    with gzip.open(gz, "rt", encoding="utf-8") as fh:
        ids = [json.loads(line)["id"] for line in fh]
    assert "gptstore_514" in ids and "frgpts_170" in ids
    reloaded = browse("list", "--path", str(gz))  # an export loads back through the same CLI
    assert reloaded.returncode == 0 and len(reloaded.stdout.splitlines()) == len(ids)


def test_generated_files_both_languages_gz_folders(tmp_path: Path) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    write(folder / "from_frgpt.jsonl", [release_record(i) for i in range(6)])
    with gzip.open(folder / "from_gptstore.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i in range(6, 10):
            fh.write(json.dumps(release_record(i, zh=True), ensure_ascii=False) + "\n")
    extra = write(tmp_path / "more.jsonl", [release_record(42)])
    stats = json.loads(browse("stats", "--json", "--path", str(folder), str(extra)).stdout)
    assert stats["records"] == 11
    assert stats["by_language"] == {"en": 7, "zh": 4}
    rows = [json.loads(line) for line in browse("list", "--json", "--path", str(folder), "--path", str(extra)).stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"gen_{i}" for i in [*range(10), 42]]
    assert rows[1]["skills"] == ["chat"]  # from the misspelt `Skils`
    assert rows[7]["constraints"] == ["回复不超过17字。", "回复不超过17字。"]


def test_malformed_lines_exit_2_with_line_number(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.jsonl", [release_record(0), release_record(1), "{oops", release_record(3)])
    for command in (["stats"], ["list"], ["search", "x"], ["show", "gen_0"], ["export", "-o", str(tmp_path / "o.jsonl")]):
        run = browse(*command, "--path", str(path))
        assert run.returncode == 2, command
        assert run.stderr.strip() == f"error: {path}: line 3: invalid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert not (tmp_path / "o.jsonl").exists()

    bad_field = write(tmp_path / "field.jsonl", [release_record(0), {**release_record(1), "structure_system_prompt": {"Name": 5, "Constraints": []}}])
    run = browse("list", "--path", str(bad_field))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {bad_field}: line 2 (record gen_1): field structure_system_prompt.Name: expected a string, got int"


def test_runs_from_any_directory(tmp_path: Path) -> None:
    """No sys.path tricks: the installed package resolves wherever the script is started from."""
    run = browse("list", "--limit", "2", cwd=tmp_path)
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--min_constraints", "abc"],
         "sysbank/browse.py list: argument --min_constraints/--min-constraints: expected a whole number >= 0, got 'abc'"),
        (["list", "--max-constraints", "-3"],
         "sysbank/browse.py list: argument --max_constraints/--max-constraints: expected a whole number >= 0, got '-3'"),
        (["list", "--limit", "1.5"], "sysbank/browse.py list: argument --limit: expected a whole number >= 0, got '1.5'"),
        (["list", "--language", "fr"],
         "sysbank/browse.py list: argument --language/--lang: invalid choice: 'fr' (choose from 'en', 'zh')"),
        (["stats", "--min_constraints", "5", "--max_constraints", "2"],
         "--max_constraints: 2 is below the minimum 5, so nothing could match"),
        (["export", "-o", "x.jsonl", "--sample", "-2"],
         "sysbank/browse.py export: argument --sample: expected a whole number >= 0, got '-2'"),
        (["export", "-o", "x.jsonl", "--seed", "one"], "sysbank/browse.py export: argument --seed: invalid int value: 'one'"),
        (["export", "-o", "x.jsonl", "--regex"], "--regex: needs --search TEXT (the regular expression)"),
        (["serve", "--port", "70000"], "sysbank/browse.py serve: argument --port: expected a port from 0 to 65535, got '70000'"),
        (["search", "x", "--regex", "--regex_timeout", "0"],
         "sysbank/browse.py search: argument --regex_timeout/--regex-timeout: expected a number of seconds > 0, got '0'"),
        (["search", "x", "--regex-timeout", "nan"],
         "sysbank/browse.py search: argument --regex_timeout/--regex-timeout: expected a number of seconds > 0, got 'nan'"),
        (["show"], "sysbank/browse.py show: the following arguments are required: id"),
        (["lst"], "sysbank/browse.py: argument command: invalid choice: 'lst' (choose from 'stats', 'list', 'show', "
                  "'search', 'export', 'serve')"),
        (["list", "--nope"], "sysbank/browse.py: unrecognized arguments: --nope"),
    ],
    ids=["not-int", "negative", "float", "choice", "empty-range", "sample", "seed", "regex-alone", "port", "timeout-zero",
         "timeout-nan", "missing-id", "unknown-command", "unknown-option"],
)
def test_bad_arguments_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    run = browse(*args, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == f"error: {message} (see --help)\n" if "sysbank/browse.py" in message else f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []  # an export that was refused wrote nothing


def test_slow_and_bad_regexes_are_one_line() -> None:
    slow = browse("search", r"(\w|\w)*#", "--regex", "--regex_timeout", "0.5")
    assert slow.returncode == 2 and slow.stdout == ""
    assert slow.stderr == (r"error: --regex: search for '(\w|\w)*#' stopped after 0.5 s: it has alternatives inside "
                           "a repeat, which can backtrack without end; simplify the pattern\n")
    nested = browse("search", "(" * 3000 + ")" * 3000, "--regex")
    assert nested.returncode == 2
    assert nested.stderr == f"error: --regex: regular expression '{'(' * 60}'… (6000 characters) is nested too deeply\n"
    export = browse("export", "-o", "unused.jsonl", "--search", r"(\w|\w)*#", "--regex", "--regex-timeout", "0.5")
    assert export.returncode == 2 and "stopped after 0.5 s" in export.stderr and len(export.stderr.splitlines()) == 1


def test_unreadable_inputs_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(release_record(0)).encode() + b"\n" + '{"gptId": "caf\xe9"}\n'.encode("latin-1"))
    not_gzip = write(tmp_path / "plain.jsonl.gz", [release_record(0)])
    expected = {
        empty: f"{empty}: no records (the file is empty or holds only blank lines)",
        latin1: f"{latin1}: line 2: not valid UTF-8 (byte 15)",
        not_gzip: f"{not_gzip}: line 1: cannot read (Not a gzipped file (b'{{\"'))",
    }
    for path, message in expected.items():
        for command in (["stats"], ["list"], ["show", "gen_0"], ["search", "x"], ["export", "-o", str(tmp_path / "o.jsonl")]):
            run = browse(*command, "--path", str(path))
            assert (run.returncode, run.stderr) == (2, f"error: {message}\n"), command
    assert not (tmp_path / "o.jsonl").exists()


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path / "from_frgpt.jsonl", [release_record(0), release_record(1)])
    second = write(tmp_path / "from_gptstore.jsonl", [release_record(2), release_record(1)])
    run = browse("list", "--path", str(first), str(second))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == f"error: {second}: line 2 (record gen_1): field gptId: duplicate id, first seen at {first}: line 2\n"


def test_export_refuses_nothing_and_unwritable_targets(tmp_path: Path) -> None:
    out = tmp_path / "profiles.jsonl"
    nothing = browse("export", "-o", str(out), "--search", "zzz-nothing-like-this")
    assert nothing.returncode == 2 and not out.exists()
    assert nothing.stderr == f"error: --output: nothing to write to {out}: no record passes the filters (no file written)\n"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    into_folder = browse("export", "-o", str(folder))
    assert into_folder.returncode == 2 and into_folder.stderr == f"error: --output: cannot write {folder} (Is a directory)\n"
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def readme_examples() -> list[str]:
    """Every `python sysbank/browse.py ...` line in the two READMEs' code blocks, comments cut off."""
    examples = []
    for readme in (ROOT / "README.md", ROOT / "sysbank" / "README.md"):
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S):
            examples += [line.split("  #")[0].strip() for line in block.splitlines()
                         if line.startswith("python sysbank/browse.py")]
    return examples


def test_readme_examples_are_true_on_the_sample(tmp_path: Path) -> None:
    """Each README command runs on the bundled sample and prints something (`serve` is covered by the web tests)."""
    examples = readme_examples()
    assert len(examples) >= 8
    for example in examples:
        args = shlex.split(example)[2:]
        if args[0] == "serve":
            continue
        run = browse(*args, cwd=tmp_path)  # relative outputs (data/profiles.jsonl) land in tmp_path
        assert run.returncode == 0 and run.stdout.strip(), f"{example}\n{run.stderr}"
        if args[0] == "search":
            assert not run.stderr.startswith("0 match"), example
    assert (tmp_path / "data" / "profiles.jsonl").is_file()


def test_readme_python_example_runs_on_the_sample() -> None:
    readme = (ROOT / "sysbank" / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - the README's own example
    assert namespace["profiles"], "the README's search finds nothing on the bundled sample"
