"""SysBank loader: both key languages, flat prompts, misspellings, gz, folders, precise errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from rpo.utils.io import InputError, read_jsonl
from rpo.utils.schema import SystemProfile

from sysbank.bank import Bank, Filters
from sysbank.loader import (
    SAMPLE_PATH,
    expand_paths,
    load_profiles,
    normalise,
    parse_flat_prompt,
    to_jsonl_line,
)
from sysbank.ontology import CATEGORIES, categorize

EN_RECORD = {
    "system_prompt": "## Profile:\nName: Tide Clock\nDescription: Tells tide times.\n\n## Skills:\n1. Read tide tables\n\n"
    "## Constraints:\n1. Every answer must give times in 24-hour format.\n2. Never use emojis.",
    "structure_system_prompt": {
        "Name": "Tide Clock",
        "Description": "Tells tide times.",
        "Skils": ["Read tide tables", "Explain spring tides"],
        "Constraints": ["Every answer must give times in 24-hour format.", "Never use emojis."],
    },
    "source": "gptstore",
    "gen_model": "gpt-4o",
    "timestamp": "2025-01-14 15:54:40",
    "name": " Tide Clock ",
    "desription": "# Description\n\nA tide GPT",
    "gptId": "gptstore_1",
}

ZH_RECORD = {
    "system_prompt": "## profile:\n名称: 茶艺师\n描述: 讲解泡茶。\n\n## 技能:\n1. 讲解茶叶\n\n## 约束:\n1. 回复不超过100字。",
    "structure_system_prompt": {
        "名称": "茶艺师",
        "描述": "讲解泡茶的方法与茶叶知识。",
        "技能": ["讲解茶叶", "推荐茶具"],
        "约束": ["回复不超过100字。", "提到绿茶时必须说明水温。"],
    },
    "inspired_corpus": "Name: Tea master\nDescription: tea",
    "source": "frgpts",
    "gen_model": "gpt-4o",
    "gptId": "frgpts_39",
}


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_english_keys_with_release_misspellings() -> None:
    p = normalise(EN_RECORD)
    assert p.id == "gptstore_1" and p.source == "gptstore" and p.gen_model == "gpt-4o"
    assert p.name == "Tide Clock"
    assert p.skills == ["Read tide tables", "Explain spring tides"]  # from `Skils`
    assert p.constraints == ["Every answer must give times in 24-hour format.", "Never use emojis."]
    # no inspired_corpus key: the release's top-level name + misspelt `desription` stand in for it
    assert p.inspired_corpus is not None
    assert "Tide Clock" in p.inspired_corpus and "A tide GPT" in p.inspired_corpus
    assert p.system_prompt.startswith("## Profile:")


def test_chinese_keys() -> None:
    p = normalise(ZH_RECORD)
    assert (p.id, p.name, p.description) == ("frgpts_39", "茶艺师", "讲解泡茶的方法与茶叶知识。")
    assert p.skills == ["讲解茶叶", "推荐茶具"]
    assert p.constraints == ["回复不超过100字。", "提到绿茶时必须说明水温。"]
    assert p.inspired_corpus == "Name: Tea master\nDescription: tea"


def test_structure_wins_over_flat_text() -> None:
    """Both present and different: the structured form is the profile (the flat text is kept verbatim)."""
    p = normalise(ZH_RECORD)
    assert len(p.constraints) == 2 and p.system_prompt.count("约束") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            (
                "## Profile:\nName: Zodiac Expert  \nDescription: Reads stars.\nIt also gives advice.\n\n## Skills:\n"
                "1. Interpret signs\n2. Daily horoscopes\n\n## Constraints:\n1. Mention the user's sign.\n"
                "2. Keep answers within 150 words,\n   even for long questions.\n10. No emojis."
            ),
            {
                "name": "Zodiac Expert",
                "description": "Reads stars.\nIt also gives advice.",
                "skills": ["Interpret signs", "Daily horoscopes"],
                "constraints": ["Mention the user's sign.", "Keep answers within 150 words, even for long questions.",
                                "No emojis."],
            },
        ),
        (
            (
                "## profile:\n名称：星座专家\n描述: 解读星座。\n\n## 技能：\n1、解读星座特性\n2. 分析运势\n\n## 约束:\n"
                "1. 回复必须包含星座名称。\n2）所有回复必须在150字以内。"
            ),
            {
                "name": "星座专家",
                "description": "解读星座。",
                "skills": ["解读星座特性", "分析运势"],
                "constraints": ["回复必须包含星座名称。", "所有回复必须在150字以内。"],
            },
        ),
    ],
    ids=["en", "zh"],
)
def test_parse_flat_prompt(text: str, expected: dict) -> None:
    assert parse_flat_prompt(text) == expected


def test_flat_only_record_is_parsed() -> None:
    record = {k: v for k, v in EN_RECORD.items() if k != "structure_system_prompt"}
    p = normalise(record)
    assert p.name == "Tide Clock" and p.skills == ["Read tide tables"]
    assert p.constraints == ["Every answer must give times in 24-hour format.", "Never use emojis."]


def test_normalised_records_load_back() -> None:
    """An exported §4.1 line is itself loadable (by this loader and by the toolkit's SystemProfile reader)."""
    p = normalise(ZH_RECORD)
    again = normalise(json.loads(to_jsonl_line(p)))
    assert again == p
    assert list(json.loads(to_jsonl_line(p))) == [
        "id", "source", "name", "description", "skills", "constraints", "system_prompt", "inspired_corpus", "gen_model",
    ]


def test_language_column() -> None:
    assert Bank([normalise(EN_RECORD), normalise(ZH_RECORD)]).languages == ["en", "zh"]


def test_sample_covers_what_it_promises() -> None:
    bank = Bank.load(SAMPLE_PATH)
    assert 25 <= len(bank) <= 40
    assert set(bank.languages) == {"en", "zh"}
    assert {p.source for p in bank.profiles} == {"frgpts", "gptstore"}
    assert all(p.id.startswith(p.source + "_") for p in bank.profiles)
    raw = [json.loads(line) for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]
    keys = {k for r in raw for k in r.get("structure_system_prompt", {})}
    assert {"Name", "名称", "Skils", "Skills", "技能", "Constraints", "约束"} <= keys
    assert any("desription" in r for r in raw)
    assert any("structure_system_prompt" not in r for r in raw)
    kinds = {tag for per in bank.constraint_categories for tags in per for tag in tags}
    assert set(CATEGORIES) <= kinds
    # the toolkit's own SystemProfile reader accepts an export of it (checked further in the CLI tests)
    assert all(isinstance(p, SystemProfile) for p in bank.profiles)


def test_categorize_ontology_kinds() -> None:
    assert "format" in categorize("Present the plan as a markdown table.")
    assert "content" in categorize("Every response must mention the year.")
    assert "style" in categorize("Use a sarcastic tone.")
    assert "role" in categorize("Refer to yourself as 'the Captain'.")
    assert "logic" in categorize("When calculating totals, add one to the result.")
    assert "behaviour" in categorize("If asked about politics, politely decline.")
    assert "format" in categorize("回复不超过100字。") and "behaviour" in categorize("遇到政治话题时拒绝回答。")
    assert categorize("Listen to the user.") == ["other"]  # `list` only as a whole word


def test_gz_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "bank"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [EN_RECORD])
    with gzip.open(folder / "sub" / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(ZH_RECORD, ensure_ascii=False) + "\n")
    (folder / "notes.txt").write_text("not a bank file")
    assert [p.name for p in expand_paths(folder)] == ["a.jsonl", "b.jsonl.gz"]
    profiles = load_profiles([folder])
    assert [p.id for p in profiles] == ["gptstore_1", "frgpts_39"]
    both = Bank.load([folder / "a.jsonl", SAMPLE_PATH])
    assert len(both) == 1 + len(Bank.load(SAMPLE_PATH))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([EN_RECORD, "{not json"], "bad.jsonl: line 2: invalid JSON"),
        ([EN_RECORD, "", "[1, 2]"], "bad.jsonl: line 3: expected a JSON object, got list"),
        ([{**ZH_RECORD, "structure_system_prompt": {"名称": "x", "约束": ["ok", 7]}}],
         "line 1 (record frgpts_39): field structure_system_prompt.约束[1]: expected a string, got int"),
        ([{**ZH_RECORD, "structure_system_prompt": {"名称": "x", "技能": []}}],
         "line 1 (record frgpts_39): field structure_system_prompt.Constraints: missing"),
        ([{k: v for k, v in EN_RECORD.items() if k != "gptId"}], "line 1: field gptId: missing"),
        ([{**EN_RECORD, "structure_system_prompt": None, "system_prompt": "just some text"}],
         "line 1 (record gptstore_1): field system_prompt: no 'Name:'"),
        ([{**EN_RECORD, "source": 3}], "line 1 (record gptstore_1): field source: expected a string"),
        ([EN_RECORD, ZH_RECORD, EN_RECORD], "line 3 (record gptstore_1): field gptId: duplicate id, first seen at"),
        ([EN_RECORD, "[" * 100_000 + "]" * 100_000], "bad.jsonl: line 2: invalid JSON (nested too deeply)"),
    ],
    ids=["json", "not-object", "list-item", "no-constraints", "no-id", "flat-unparsable", "source-type", "dup-id",
         "deep-json"],
)
def test_bad_input_names_file_line_field(tmp_path: Path, lines: list, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputError) as err:
        Bank.load(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        Bank.load(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .jsonl"):
        Bank.load(tmp_path / "empty")


def test_search_and_filters() -> None:
    bank = Bank.load(SAMPLE_PATH)
    ids = lambda idx: [bank.profiles[i].id for i in idx]
    hits = bank.search("EMOJI")
    assert hits and all("emoji" in "\n".join(bank.profiles[i].constraints + [bank.profiles[i].name]).lower()
                        for i in hits)
    assert ids(bank.search("星座")) == ["frgpts_163"]
    assert set(ids(bank.search(r"refuse|拒绝", regex=True))) >= {"gptstore_514", "frgpts_170"}
    assert bank.search(r"^Never use emojis\.$", regex=True)  # ^/$ anchor at a constraint's own line
    assert bank.search("no such thing at all") == []
    zh_hits = bank.search("", filters=Filters(language="zh", min_constraints=6))
    assert zh_hits and all(bank.languages[i] == "zh" and bank.n_constraints[i] >= 6 for i in zh_hits)
    assert all(bank.sources[i] == "gptstore" for i in bank.select(Filters(source="GPTStore")))
    assert all("logic" in bank.record_categories[i] for i in bank.select(Filters(category="logic")))
    with pytest.raises(InputError, match="invalid regular expression"):
        bank.search("(", regex=True)
    with pytest.raises(InputError, match="^language: expected one of en, zh, got .fr.$"):
        Filters(language="fr")


def test_regex_never_matches_across_records() -> None:
    a = normalise({**EN_RECORD, "gptId": "a", "structure_system_prompt": {"Name": "alpha", "Constraints": ["x"]}})
    b = normalise({**EN_RECORD, "gptId": "b", "structure_system_prompt": {"Name": "beta", "Constraints": ["y"]}})
    bank = Bank([a, b])
    assert bank.search(r"alpha[\s\S]*beta", regex=True) == []
    assert bank.search(r"x[\s\S]*", regex=True) == [0]
    assert bank.search("x\n\x00\nbeta") == []


def test_sample_and_stats_are_deterministic() -> None:
    bank = Bank.load(SAMPLE_PATH)
    everything = bank.select()
    first = bank.sample(everything, 5, seed=3)
    assert first == bank.sample(everything, 5, seed=3) == sorted(first)
    assert first != bank.sample(everything, 5, seed=4)
    stats = bank.stats()
    assert stats["records"] == len(bank)
    assert sum(stats["by_language"].values()) == len(bank)
    assert sum(stats["constraints_per_prompt"].values()) == len(bank)
    assert stats["constraints"] == sum(int(k) * v for k, v in stats["constraints_per_prompt"].items())


def test_read_jsonl_accepts_exported_form(tmp_path: Path) -> None:
    out = tmp_path / "profiles.jsonl"
    out.write_text("".join(to_jsonl_line(p) + "\n" for p in Bank.load(SAMPLE_PATH).profiles), encoding="utf-8")
    assert len(list(read_jsonl(out, SystemProfile))) == len(Bank.load(SAMPLE_PATH))


def test_backtracking_regex_is_stopped_at_its_deadline() -> None:
    """`(\\w|\\w)*#` backtracks for tens of seconds on the sample; it is cut off with a clear message."""
    bank = Bank.load(SAMPLE_PATH)
    with pytest.raises(InputError) as err:
        bank.search(r"(\w|\w)*#", regex=True, timeout_s=0.3)
    assert str(err.value) == (
        r"search for '(\w|\w)*#' stopped after 0.3 s: it has alternatives inside a repeat, which can backtrack "
        "without end; simplify the pattern"
    )
    ordinary = bank.search(r"\d+ words", regex=True, timeout_s=0.3)  # still runs under the same bound
    assert [bank.profiles[i].id for i in ordinary] == ["frgpts_107", "gptstore_514", "gptstore_528"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "invalid regular expression '(' (missing ) at position 1)"),
        ("a{99999999999}", "invalid regular expression 'a{99999999999}' (repeat count too big at position 2)"),
        ("(" * 3000 + "x" + ")" * 3000,
         "regular expression '" + "(" * 60 + "'… (6001 characters) is nested too deeply"),
        ("\n(", r"invalid regular expression '\n(' (missing ) at position 2 (line 2, column 2))"),
    ],
    ids=["unbalanced", "huge-repeat", "deeply-nested", "control-character"],
)
def test_bad_regex_is_one_line(pattern: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        Bank.load(SAMPLE_PATH).search(pattern, regex=True)
    assert str(err.value) == message


def test_duplicate_ids_are_refused_naming_both_places(tmp_path: Path) -> None:
    """Not known to occur in the release; refused rather than dropped, since ids become session ids."""
    first = write_jsonl(tmp_path / "a.jsonl", [EN_RECORD, ZH_RECORD])
    second = write_jsonl(tmp_path / "b.jsonl", [{**EN_RECORD, "gptId": "gptstore_2"}, ZH_RECORD])
    for load in (Bank.load, load_profiles):
        with pytest.raises(InputError) as err:
            load([first, second])
        assert str(err.value) == (
            f"{second}: line 2 (record frgpts_39): field gptId: duplicate id, first seen at {first}: line 2"
        )
    exported = tmp_path / "export.jsonl"
    exported.write_text(to_jsonl_line(normalise(ZH_RECORD)) + "\n" + to_jsonl_line(normalise(ZH_RECORD)) + "\n",
                        encoding="utf-8")
    with pytest.raises(InputError) as err:
        Bank.load(exported)
    assert str(err.value) == f"{exported}: line 2 (record frgpts_39): field id: duplicate id, first seen at {exported}: line 1"


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\t\n\r\n", "\ufeff\n".encode()], ids=["empty", "newline", "blank", "bom"])
def test_empty_or_blank_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "from_frgpt.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        Bank.load(path)
    assert str(err.value) == f"{path}: no records (the file is empty or holds only blank lines)"
    gz = tmp_path / "from_gptstore.jsonl.gz"
    gz.write_bytes(gzip.compress(content))
    with pytest.raises(InputError) as err:
        load_profiles([write_jsonl(tmp_path / "ok.jsonl", [EN_RECORD]), gz])  # one good file does not hide it
    assert str(err.value) == f"{gz}: no records (the file is empty or holds only blank lines)"


def test_non_utf8_names_line_and_byte(tmp_path: Path) -> None:
    good = "".join(json.dumps({**EN_RECORD, "gptId": f"g{i}"}) + "\n" for i in range(3)).encode()
    bad = json.dumps(ZH_RECORD, ensure_ascii=False).encode("gbk") + b"\n"  # a GBK-encoded Chinese record
    first_bad_byte = next(i for i, byte in enumerate(bad) if byte >= 0x80) + 1
    for name, write in (("plain.jsonl", lambda p, data: p.write_bytes(data)),
                        ("packed.jsonl.gz", lambda p, data: p.write_bytes(gzip.compress(data)))):
        path = tmp_path / name
        write(path, good + bad)
        with pytest.raises(InputError) as err:
            Bank.load(path)
        assert str(err.value) == f"{path}: line 4: not valid UTF-8 (byte {first_bad_byte})"


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    not_gzip = write_jsonl(tmp_path / "a.jsonl.gz", [EN_RECORD])  # a plain file under a .gz name
    with pytest.raises(InputError) as err:
        Bank.load(not_gzip)
    assert str(err.value) == f"{not_gzip}: line 1: cannot read (Not a gzipped file (b'{{\"'))"

    lines = "".join(json.dumps({**EN_RECORD, "gptId": f"g{i}"}) + "\n" for i in range(400)).encode()
    truncated = tmp_path / "b.jsonl.gz"
    truncated.write_bytes(gzip.compress(lines)[:-300])  # a download cut short
    with pytest.raises(InputError) as err:
        Bank.load(truncated)
    message = str(err.value)
    assert message.startswith(f"{truncated}: line ")
    assert message.endswith(": cannot read (Compressed file ended before the end-of-stream marker was reached)")
    assert "\n" not in message


def test_filters_refuse_an_empty_range() -> None:
    with pytest.raises(InputError) as err:
        Filters(min_constraints=5, max_constraints=2)
    assert str(err.value) == "max_constraints: 2 is below the minimum 5, so nothing could match"
