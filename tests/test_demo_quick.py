"""`make demo QUICK=1`'s run, end to end: every stage really runs, the report has its documented
shape, progress reaches the terminal, and nothing is written outside the output folder.

How long the run takes is measured by `benchmarks/demo_quick.py`, not here."""

import asyncio
import json

from rpo.demo.evaluation import evaluate, judge_turn
from rpo.demo.pipeline import held_out_sessions
from rpo.demo.policy import LocalPolicy
from rpo.demo.rules import triggered
from rpo.demo.run import EVAL_STREAM, QUICK, QUICK_NOTE, self_play_sessions, summarise, world_profiles


def test_report_holds_what_the_trained_models_score(quick_demo):
    """Every number of the table is what the kept models score on the held-out sessions: the models are
    evaluated again here (greedy, so the same replies) and summarised as the run summarises them."""
    _, out, report, _ = quick_demo
    assert set(report["methods"]) == {"base", "dpo", "rpo"}
    sessions = held_out_sessions("eval", QUICK)
    for method, entry in report["methods"].items():
        judged = evaluate(LocalPolicy(out / "seed0" / "models" / method, max_new_tokens=QUICK.max_new_tokens),
                          sessions)
        assert entry == {**summarise({0: judged["own"]}), "reference_history": summarise({0: judged["reference"]})}
    for kind in ("direct", "reverse"):
        assert set(report["sample_efficiency"][kind]) == {"valid", "dominated", "perfect"}
    assert report["seeds"] == [0] and report["minutes"] > 0 and report["quick"] is True


def test_every_stage_ran(quick_demo):
    _, out, report, _ = quick_demo
    assert report["pairs"]["dpo"] > 0 and report["pairs"]["rpo"] > report["pairs"]["dpo"]
    assert set(report["timings_s"]) == {"world", "sft", "sampling", "pairs", "dpo", "rpo", "evaluation"}
    # reversal makes every emitted chosen response perfect for its prompt
    assert report["sample_efficiency"]["reverse"]["perfect"] >= report["sample_efficiency"]["direct"]["perfect"]
    detail = [json.loads(line) for line in (out / "seed0" / "detail.jsonl").read_text().splitlines()]
    assert all(len(turn["samples"]) == QUICK.samples_per_turn for session in detail for turn in session["turns"])
    # sampling judged each turn's triggered constraints only, as the rule trigger selector chose them
    for session in detail:
        for turn in session["turns"]:
            assert turn["triggered"] == triggered(session["profile"]["constraints"], turn["query"])
            for sample in turn["samples"]:
                assert [k for k, v in enumerate(sample["follows"]) if v is not None] == turn["triggered"]
    rpo_state = json.loads((out / "seed0" / "data" / "dataset_info.json").read_text())["demo_rpo"]
    assert rpo_state["columns"]["margin"] == "margin"
    assert "rpo/margin_mean" in (out / "seed0" / "rpo.log").read_text()


def test_eval_scores_every_held_out_turn_on_its_triggered_constraints(quick_demo):
    _, _, report, _ = quick_demo
    sessions = asyncio.run(self_play_sessions(world_profiles(EVAL_STREAM, QUICK.eval_profiles, "eval", QUICK),
                                              EVAL_STREAM, QUICK.turns))
    assert report["eval_turns"] == sum(len(s.turns) for s in sessions)
    # the oracle's reference replies follow everything they are judged on
    assert all(all(judge_turn(s.profile.constraints, t.query, t.reference_response)) for s in sessions for t in s.turns)


def test_progress_and_the_smoke_test_note_reach_the_terminal(quick_demo):
    _, _, _, proc = quick_demo
    for stage in ("sft", "dpo", "rpo"):
        assert f"[demo] seed 0: {stage}: 100%" in proc.stderr
    assert f"{QUICK.pref_steps}/{QUICK.pref_steps}" in proc.stderr
    assert "[demo] seed 0: sampling: 100%" in proc.stderr
    assert "own history (SysBench)" in proc.stdout and "ISR 95% CI" in proc.stdout
    assert proc.stdout.count(QUICK_NOTE) == 2  # above and below the table


def test_quick_mode_writes_only_its_output_folder(quick_demo):
    base, out, _, proc = quick_demo
    assert sorted(p.name for p in base.iterdir()) == ["run"]
    assert (out / "demo_results.png").stat().st_size > 10_000
    assert proc.stdout.splitlines()[-1] == f"[demo] wrote {out / 'report.json'} and {out / 'demo_results.png'}"
