"""Pair construction on hand-computed sessions: RPO both directions, margins, dedupe, non-reversible
constraints (drop vs skip), zero margins, history; the DPO baseline; KTO; the written files."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from rpo.utils.io import InputError, read_jsonl
from rpo.utils.pairs.build import build_dpo_dataset, build_kto_dataset, build_rpo_dataset
from rpo.utils.pairs.records import dpo_records, kto_records, rpo_records
from rpo.utils.pairs.counts import DpoCounts, KtoCounts, RpoCounts
from rpo.utils.prompts.language import detect_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import ProfileCore, SessionDetail

T, F = True, False
C = ["Answer in English.", "Use at most 50 words.", "End with a question."]
R = ["Answer in French.", None, "Do not end with a question."]
PROFILE = {
    "name": "Quiz Pal",
    "description": "Asks and answers quiz questions.",
    "skills": ["Trivia"],
    "constraints": C,
}


def session_dict() -> dict:
    """Turn 1: A=111, B=001, C=111 (repeats A), D unjudged, E=110. Turn 2: F=101, G=111."""
    return {
        "session_id": "s1",
        "profile": PROFILE,
        "reversed_constraints": R,
        "judge_model": "rule",
        "turns": [
            {
                "query": "q1",
                "reference_response": "ref1",
                "samples": [
                    {"response": "A", "follows": [T, T, T]},
                    {"response": "B", "follows": [T, F, F]},
                    {"response": "C", "follows": [T, T, T]},
                    {"response": "D", "follows": None},
                    {"response": "E", "follows": [F, T, T]},
                ],
            },
            {
                "query": "q2",
                "reference_response": "ref2",
                "samples": [{"response": "F", "follows": [T, F, T]}, {"response": "G", "follows": [T, T, T]}],
            },
        ],
    }


def session() -> SessionDetail:
    return SessionDetail.model_validate(session_dict())


def prompt(constraints: list[str]) -> str:
    return render_system_prompt(ProfileCore.model_validate(PROFILE), constraints)


def summary(record: dict) -> tuple:
    conv = record["conversations"]
    return (
        record["turn"],
        record["chosen"]["value"],
        record["rejected"]["value"],
        record["margin"],
        conv[0]["value"],
        [(m["from"], m["value"]) for m in conv[1:]],
    )


def short(record: dict) -> tuple:
    return record["turn"], record["chosen"]["value"], record["rejected"]["value"], record["margin"]


def test_rpo_pairs_hand_computed_drop() -> None:
    counters = RpoCounts()
    records = [summary(r) for r in rpo_records(session(), counters, "drop")]
    h1 = [("human", "q1")]
    h2 = [("human", "q1"), ("gpt", "ref1"), ("human", "q2")]
    all_c = prompt(C)
    assert records == [
        (1, "A", "B", 2, all_c, h1),
        (1, "B", "A", 1, prompt([C[0], R[2]]), h1),  # c1 has no reversal: left out
        (1, "A", "E", 1, all_c, h1),
        (1, "E", "A", 1, prompt([R[0], C[1], C[2]]), h1),
        (1, "B", "E", 2, prompt([C[0], R[2]]), h1),
        (1, "E", "B", 3, prompt([R[0], C[1], C[2]]), h1),
        (2, "G", "F", 1, all_c, h2),  # F over G differs only on c1, left out: margin 0, not emitted
    ]
    assert counters.sessions == 1 and counters.turns == 2 and counters.samples == 7
    assert counters.unjudged == 1 and counters.duplicates == 1
    assert counters.pairs == 7
    assert counters.margin_hist == {1: 4, 2: 2, 3: 1}
    assert counters.left_out_pairs == 2 and counters.zero_margin == 1 and counters.skipped_pairs == 0
    assert counters.non_reversible_pairs == 3  # the same pairs skip mode skips


def test_rpo_pairs_skip_drops_pairs_whose_chosen_fails_a_non_reversible_constraint() -> None:
    counters = RpoCounts()
    records = [short(r) for r in rpo_records(session(), counters, "skip")]
    assert records == [
        (1, "A", "B", 2),
        (1, "A", "E", 1),
        (1, "E", "A", 1),
        (1, "E", "B", 3),
        (2, "G", "F", 1),
    ]
    assert counters.skipped_pairs == 3 and counters.zero_margin == 0 and counters.left_out_pairs == 0
    assert counters.non_reversible_pairs == 3


def test_rpo_margin_equals_difference_count_when_everything_is_reversible() -> None:
    data = session_dict()
    data["reversed_constraints"] = [
        "Answer in French.",
        "Use more than 50 words.",
        "Do not end with a question.",
    ]
    records = list(rpo_records(SessionDetail.model_validate(data), RpoCounts()))
    for record in records:
        constraints = record["conversations"][0]["value"].split("# Constraints\n", 1)[1].splitlines()[1:]
        assert len(constraints) == 3
    margins = [short(r)[1:] for r in records]
    assert margins == [
        ("A", "B", 2), ("B", "A", 2), ("A", "E", 1), ("E", "A", 1), ("B", "E", 3), ("E", "B", 3), ("F", "G", 1), ("G", "F", 1),
    ]  # fmt: skip


def test_identical_follow_vectors_give_no_pairs() -> None:
    data = session_dict()
    data["turns"] = [
        {
            "query": "q",
            "reference_response": "r",
            "samples": [{"response": x, "follows": [T, F, T]} for x in "XYZ"],
        }
    ]
    counters = RpoCounts()
    assert list(rpo_records(SessionDetail.model_validate(data), counters)) == []
    assert counters.duplicates == 2
    direct, reverse = counters.efficiency.direct["all"], counters.efficiency.reverse["all"]
    assert direct.turns == reverse.turns == 1  # eligible (two judged samples) but nothing to pair
    assert counters.efficiency.as_dict() == {
        "direct": {"valid": 0.0, "dominated": 0.0, "perfect": 0.0},
        "reverse": {"valid": 0.0, "dominated": 0.0, "perfect": 0.0},
    }


def test_dpo_pairs_original_prompt_higher_count_chosen_no_margin() -> None:
    counters = DpoCounts()
    records = list(dpo_records(session(), counters))
    assert [(r["turn"], r["chosen"]["value"], r["rejected"]["value"]) for r in records] == [
        (1, "A", "B"),
        (1, "A", "E"),
        (1, "E", "B"),
        (2, "G", "F"),
    ]
    assert all(r["conversations"][0]["value"] == prompt(C) and "margin" not in r for r in records)
    assert counters.pairs == 4 and counters.unjudged == 1


def test_kto_records_remove_failed_or_followed_constraints() -> None:
    counters = KtoCounts()
    records = list(kto_records(session(), counters))
    got = [
        (r["turn"], r["kto_tag"], r["conversations"][-1]["value"], r["conversations"][0]["value"])
        for r in records
    ]
    assert got == [
        (1, True, "A", prompt(C)),
        (1, False, "B", prompt([C[1], C[2]])),  # B followed c0: removed from its prompt
        (2, True, "G", prompt(C)),
        (2, False, "F", prompt([C[1]])),
    ]
    assert [m["from"] for m in records[2]["conversations"]] == ["system", "human", "gpt", "human", "gpt"]
    assert counters.desirable == counters.undesirable == 2


def test_kto_skips_turns_without_a_score_gap() -> None:
    data = session_dict()
    data["turns"] = [
        {
            "query": "q",
            "reference_response": "r",
            "samples": [{"response": "X", "follows": [T, F, T]}, {"response": "Y", "follows": [F, T, T]}],
        }
    ]
    assert list(kto_records(SessionDetail.model_validate(data), KtoCounts())) == []


def test_language_detection_and_chinese_template() -> None:
    zh = ProfileCore(
        name="茶艺师", description="讲解泡茶。", skills=["介绍茶类"], constraints=["回复不超过100字。"]
    )
    assert detect_lang(zh) == "zh" and detect_lang(ProfileCore.model_validate(PROFILE)) == "en"
    text = render_system_prompt(zh)
    assert "茶艺师" in text and "1. 回复不超过100字。" in text and "Constraints" not in text
    numbered = render_system_prompt(ProfileCore.model_validate(PROFILE), ["x", "y"])
    assert "1. x\n2. y" in numbered and C[0] not in numbered
    assert "Constraints" not in render_system_prompt(ProfileCore.model_validate(PROFILE), [])


def write_detail(path: Path, sessions: list[dict]) -> Path:
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in sessions), encoding="utf-8")
    return path


def json_array(records: list[dict]) -> bytes:
    """What the builders write: one record a line, as `orjson.dumps` lays it out."""
    if not records:
        return b"[]\n"
    return b"[\n" + b",\n".join(orjson.dumps(r) for r in records) + b"\n]\n"


@pytest.mark.parametrize("zh", [False, True])
def test_builders_write_the_records_as_orjson_lays_them_out(tmp_path: Path, zh: bool) -> None:
    data = session_dict()
    if zh:
        data["profile"] = {
            **PROFILE,
            "name": "问答伙伴",
            "description": '出题并回答，含"引号"与\\反斜杠\n换行。',
        }
    detail = write_detail(tmp_path / "detail.jsonl", [data, {**data, "session_id": "s2"}])
    sessions = list(read_jsonl(detail, SessionDetail))
    for build, records_of, counts, name in (
        (build_rpo_dataset, rpo_records, RpoCounts, "rpo"),
        (build_dpo_dataset, dpo_records, DpoCounts, "dpo"),
        (build_kto_dataset, kto_records, KtoCounts, "kto"),
    ):
        counters = build(detail, tmp_path / "out", name)
        expected = [r for s in sessions for r in records_of(s, counts())]
        assert (tmp_path / "out" / f"{name}.json").read_bytes() == json_array(expected)
        assert counters.pairs == len(expected)
        assert counters.output == str(tmp_path / "out" / f"{name}.json")
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["rpo"]["columns"]["margin"] == "margin" and info["rpo"]["ranking"] is True
    assert "margin" not in info["dpo"]["columns"] and info["dpo"]["ranking"] is True
    assert (
        info["kto"]["columns"] == {"messages": "conversations", "kto_tag": "kto_tag"}
        and "ranking" not in info["kto"]
    )


@pytest.mark.parametrize(
    "profile",
    [
        # a constraint that ends (or starts) the prompt with whitespace: the rendered prompt is stripped
        {"name": "N", "description": "D", "skills": ["k"], "constraints": ["a ", " b\n", "c\t"]},
        # empty description and skill, a one-character constraint, text that looks like the placeholders
        {"name": "N\x00c0\x00", "description": "", "skills": ["", "s"], "constraints": ["z", "x", "y"]},
        # no constraints left in some prompts, a name with leading whitespace
        {"name": " N", "skills": [], "constraints": ["p", "q", "r"]},
    ],
)
def test_prompts_of_awkward_texts_are_rendered_as_the_template_renders_them(
    tmp_path: Path, profile: dict
) -> None:
    data = session_dict()
    data["profile"] = profile
    data["reversed_constraints"] = ["not a  ", None, "\tnot c"]
    detail = write_detail(tmp_path / "detail.jsonl", [data])
    build_rpo_dataset(detail, tmp_path, "rpo")
    written = json.loads((tmp_path / "rpo.json").read_text(encoding="utf-8"))
    core = ProfileCore.model_validate(profile)
    first = written[0]  # A over B: A follows all three, so they stand as written
    assert (first["chosen"]["value"], first["rejected"]["value"]) == ("A", "B")
    assert first["conversations"][0]["value"] == render_system_prompt(core, profile["constraints"])
    second = written[1]  # B over A: B follows c0, fails c1 (no reversal: left out) and c2 (reversed)
    assert second["conversations"][0]["value"] == render_system_prompt(
        core, [profile["constraints"][0], "\tnot c"]
    )


def test_margins_are_integers_in_the_file(tmp_path: Path) -> None:
    detail = write_detail(tmp_path / "d.jsonl", [session_dict()])
    build_rpo_dataset(detail, tmp_path, "rpo")
    text = (tmp_path / "rpo.json").read_text()
    assert '"margin":2,' in text and '"margin":2.0' not in text


def test_bad_record_names_file_line_and_field_and_leaves_no_partial_output(tmp_path: Path) -> None:
    bad = session_dict()
    bad["turns"][1]["samples"][0]["follows"] = [True, False]
    detail = write_detail(tmp_path / "d.jsonl", [session_dict(), bad])
    with pytest.raises(
        InputError, match=r"d\.jsonl: line 2 \(record s1\): .*turns\[1\]\.samples\[0\]\.follows"
    ):
        build_rpo_dataset(detail, tmp_path / "out", "rpo")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
