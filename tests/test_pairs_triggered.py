"""Turns with triggered constraints, computed by hand: only those are judged, paired and counted in
the margin; RPO prompts hold only them (default) or every constraint with the untriggered ones as
written; DPO keeps the original prompt; KTO prompts hold triggered constraints; Table 4 buckets by
the number in play."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rpo.utils.io import InputError
from rpo.utils.pairs.build import build_rpo_dataset
from rpo.utils.pairs.records import dpo_records, kto_records, rpo_records
from rpo.utils.pairs.rule import ReversedPrompt, prompt_constraints, reversed_prompt, rpo_margin
from rpo.utils.pairs.counts import DpoCounts, KtoCounts, RpoCounts
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import ProfileCore, SessionDetail

T, F, N = True, False, None
C = [f"C{k}." for k in range(5)]
R = ["R0.", None, "R2.", "R3.", "R4."]
PROFILE = {"name": "Bot", "description": "Helps.", "skills": ["Help"], "constraints": C}


def session_dict() -> dict:
    """Turn 1 triggers c0, c1, c3: A=TT_F, B=FT_T, C=TF_F. Turn 2 triggers only c2: D=T, E=F."""
    return {
        "session_id": "t1",
        "profile": PROFILE,
        "reversed_constraints": R,
        "turns": [
            {
                "query": "q1",
                "reference_response": "ref1",
                "triggered": [0, 1, 3],
                "samples": [
                    {"response": "A", "follows": [T, T, N, F, N]},
                    {"response": "B", "follows": [F, T, N, T, N]},
                    {"response": "C", "follows": [T, F, N, F, N]},
                ],
            },
            {
                "query": "q2",
                "reference_response": "ref2",
                "triggered": [2],
                "samples": [
                    {"response": "D", "follows": [N, N, T, N, N]},
                    {"response": "E", "follows": [N, N, F, N, N]},
                ],
            },
        ],
    }


def prompt(constraints: list[str]) -> str:
    return render_system_prompt(ProfileCore.model_validate(PROFILE), constraints)


def rows(records: list[dict]) -> list[tuple]:
    return [
        (r["turn"], r["chosen"]["value"], r["rejected"]["value"], r["margin"], r["conversations"][0]["value"])
        for r in records
    ]


def test_rule_reverses_and_counts_only_triggered_constraints() -> None:
    a, c = [T, T, N, F, N], [T, F, N, F, N]
    reversible = [r is not None for r in R]
    assert reversed_prompt(a, (0, 1, 3), reversible) == ReversedPrompt(
        ((0, False), (1, False), (3, True)), ()
    )
    c_prompt = reversed_prompt(c, (0, 1, 3), reversible)
    assert c_prompt == ReversedPrompt(((0, False), (3, True)), (1,))  # c1 failed, no reversal: left out
    assert (
        rpo_margin(c, a, c_prompt) == 0 and rpo_margin(a, c, reversed_prompt(a, (0, 1, 3), reversible)) == 1
    )
    assert prompt_constraints(C, R, c_prompt, (0, 1, 3)) == ["C0.", "R3."]
    assert prompt_constraints(C, R, c_prompt, (0, 1, 3), "all") == ["C0.", "C2.", "R3.", "C4."]


def test_rpo_records_with_triggered_prompts() -> None:
    counts = RpoCounts()
    records = list(rpo_records(SessionDetail.model_validate(session_dict()), counts))
    assert rows(records) == [
        (1, "A", "B", 2, prompt(["C0.", "C1.", "R3."])),
        (1, "B", "A", 2, prompt(["R0.", "C1.", "C3."])),
        (1, "A", "C", 1, prompt(["C0.", "C1.", "R3."])),
        # C over A: C's prompt leaves c1 out and the two agree on c0 and c3: margin 0, not emitted
        (1, "B", "C", 3, prompt(["R0.", "C1.", "C3."])),
        (1, "C", "B", 2, prompt(["C0.", "R3."])),
        (2, "D", "E", 1, prompt(["C2."])),
        (2, "E", "D", 1, prompt(["R2."])),
    ]
    assert records[-1]["conversations"][1:] == [
        {"from": "human", "value": "q1"},
        {"from": "gpt", "value": "ref1"},
        {"from": "human", "value": "q2"},
    ]
    assert counts.margin_hist == {1: 3, 2: 3, 3: 1} and counts.zero_margin == 1
    assert counts.left_out_pairs == 1 and counts.non_reversible_pairs == 2 and counts.pairs == 7
    # five constraints in the profile, but three and one in play: both turns count in the < 5 bucket
    eff = counts.efficiency
    assert (eff.direct["<5"].turns, eff.direct[">=5"].turns) == (2, 0)
    # turn 1: scores 2, 2, 1 (gap), C's followed set inside A's (dominated), none follows all three
    # turn 2: D follows the one constraint in play and E does not
    assert eff.as_dict()["direct"] == {"valid": 1.0, "dominated": 1.0, "perfect": 0.5}
    assert eff.as_dict()["reverse"] == {"valid": 1.0, "dominated": 1.0, "perfect": 1.0}


def test_prompt_constraints_all_keeps_the_untriggered_ones_as_written() -> None:
    records = list(
        rpo_records(SessionDetail.model_validate(session_dict()), RpoCounts(), which_constraints="all")
    )
    assert rows(records) == [
        (1, "A", "B", 2, prompt(["C0.", "C1.", "C2.", "R3.", "C4."])),
        (1, "B", "A", 2, prompt(["R0.", "C1.", "C2.", "C3.", "C4."])),
        (1, "A", "C", 1, prompt(["C0.", "C1.", "C2.", "R3.", "C4."])),
        (1, "B", "C", 3, prompt(["R0.", "C1.", "C2.", "C3.", "C4."])),
        (1, "C", "B", 2, prompt(["C0.", "C2.", "R3.", "C4."])),
        (2, "D", "E", 1, prompt(["C0.", "C1.", "C2.", "C3.", "C4."])),
        (2, "E", "D", 1, prompt(["C0.", "C1.", "R2.", "C3.", "C4."])),
    ]


def test_dpo_and_kto_score_only_triggered_constraints() -> None:
    session = SessionDetail.model_validate(session_dict())
    dpo = list(dpo_records(session, DpoCounts()))
    assert [(r["turn"], r["chosen"]["value"], r["rejected"]["value"]) for r in dpo] == [
        (1, "A", "C"),
        (1, "B", "C"),
        (2, "D", "E"),
    ]
    assert {r["conversations"][0]["value"] for r in dpo} == {prompt(C)}
    kto = list(kto_records(session, KtoCounts()))
    assert [
        (r["turn"], r["kto_tag"], r["conversations"][-1]["value"], r["conversations"][0]["value"])
        for r in kto
    ] == [
        (1, True, "A", prompt(["C0.", "C1."])),  # what A follows of c0, c1, c3
        (1, False, "C", prompt(["C1.", "C3."])),  # what C fails of them
        (2, True, "D", prompt(["C2."])),
        (2, False, "E", prompt(["C2."])),
    ]


def test_builder_writes_every_constraint_with_prompt_constraints_all(tmp_path: Path) -> None:
    detail = tmp_path / "d.jsonl"
    detail.write_text(json.dumps(session_dict()) + "\n", encoding="utf-8")
    build_rpo_dataset(detail, tmp_path, "rpo", prompt_constraints="all")
    written = json.loads((tmp_path / "rpo.json").read_text(encoding="utf-8"))
    assert written[-1]["conversations"][0]["value"] == prompt(["C0.", "C1.", "R2.", "C3.", "C4."])


def test_an_untriggered_verdict_is_invalid_input(tmp_path: Path) -> None:
    data = session_dict()
    data["turns"][0]["samples"][0]["follows"][2] = True
    detail = tmp_path / "d.jsonl"
    detail.write_text(json.dumps(data) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        build_rpo_dataset(detail, tmp_path / "out", "rpo")
    assert str(err.value) == (
        f"{detail}: line 1 (record t1): field turns[0].samples[0].follows[2]: expected null (constraint not triggered)"
    )
