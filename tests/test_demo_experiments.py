"""`python -m rpo.demo.experiments NAME --quick`: every experiment runs end to end at toy size,
writes its documented report, and every arm of a seed shares the seed's base policy and held-out
sessions (trained once, reused by later experiments); the paired interval is the hand-computed one."""

import contextlib
import io
import json
import math
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from PIL import Image
from rpo.demo import experiments
from rpo.demo.arms import EmptyArmData, SeedParts, arm_dataset
from rpo.demo.by_constraints import difference_by_group, efficiency, group_of, table4_by_group, turns_in
from rpo.demo.experiments import (
    EXPERIMENTS,
    chosen_arms,
    chunks,
    claim_verdict,
    figure_data,
    figure_digest,
    interval_over_sessions,
    readme_tables,
    run_seed,
    summarise,
    table,
    verdict,
)
from rpo.demo.pipeline import QUICK, demonstrator_detail
from rpo.eval.crossed import crossed_difference, seeds_needed
from rpo.eval.metrics import METRICS, bootstrap_ci95, paired_difference, score
from rpo.utils.io import InputError

from tests.stand_in_training import stand_in_train

ORDER = ("methods", "gamma", "gap", "prompt", "online")
SEEDS = {"prompt": [0, 1]}  # one experiment over two seeds; the others reuse seed 0's base


@dataclass
class Ran:
    """What an experiment printed (a finished process's `stdout`, or the in-process run's)."""

    stdout: str


@pytest.fixture(scope="module")
def runs(quick_demo, tmp_path_factory):
    """Every experiment at `--quick`, in one folder that starts with the QUICK demo's seed-0 base.

    `methods` runs as a user runs it, a process that trains every method (SFT on the best samples,
    DPO, KTO, RPO) through `llamafactory-cli`. The other experiments then run in this process with the
    stand-in trainer: what they add is which arm trains on what, and the reports, not training
    itself; they reuse methods' real RPO arm where they share it."""
    base = tmp_path_factory.mktemp("experiments")
    out = base / "out"
    demo_seed = quick_demo[1] / "seed0"
    (out / "seed0" / "models").mkdir(parents=True)
    shutil.copy(demo_seed / "base.json", out / "seed0" / "base.json")
    shutil.copytree(demo_seed / "models" / "base", out / "seed0" / "models" / "base")
    proc = subprocess.run(
        [sys.executable, "-m", "rpo.demo.experiments", "methods", "--quick", "--seeds", "0", "--output_dir", "out",
         "--jobs", "2"],
        capture_output=True, text=True, timeout=900, cwd=base, check=False,
    )
    assert proc.returncode == 0, f"methods:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    done = {"methods": (json.loads((out / "methods.json").read_text()), Ran(proc.stdout))}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rpo.demo.arms.train", stand_in_train)
        patch.setattr("rpo.demo.pipeline.train", stand_in_train)
        for name in ORDER[1:]:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                experiments.main(name, seeds=",".join(map(str, SEEDS.get(name, [0]))), output_dir=str(out),
                                 quick=True, jobs=2)
            done[name] = (json.loads((out / f"{name}.json").read_text()), Ran(printed.getvalue()))
    return base, done


def arm_results(base: Path, seed: int) -> dict[str, dict]:
    """The seed's cached arm results by what the arm is (its spec without its name)."""
    results = {}
    for path in (base / "out" / f"seed{seed}" / "arms").glob("*/result.json"):
        result = json.loads(path.read_text())
        results[json.dumps({k: v for k, v in result["arm"].items() if k != "name"}, sort_keys=True)] = result
    return results


def judged_own(base: Path, report: dict, seed: int, arm: str) -> list:
    """The held-out judgments the report's `arm` was computed from, read back from the experiment's cache."""
    if report["experiment"] == "online" and arm == "online":
        [finished] = (base / "out" / f"seed{seed}" / "online").glob("*/result.json")
        return json.loads(finished.read_text())["judged"]["own"]
    spec = next(a for a in EXPERIMENTS[report["experiment"]].arms if a.name == arm).spec(QUICK)
    if arm == "offline":
        spec["max_pairs"] = report["per_seed"][str(seed)]["offline"]["records"]
    return arm_results(base, seed)[json.dumps(spec, sort_keys=True)]["judged"]["own"]


def test_paired_difference_is_the_hand_computed_delta_method_interval():
    # three units (sessions answered by both systems), one turn each
    first = [[[True, True]], [[True, False, False]], [[True]]]
    second = [[[True, False]], [[False, False, False]], [[True]]]
    pairs = list(zip(first, second))
    # CSR: 4/6 - 2/6; influences (x1 - R1 n1)/2 - (x2 - R2 n2)/2 = 1/6, 0, -1/6; sd 1/6
    half = 1.959964 * (1 / 6) / math.sqrt(3)
    csr = paired_difference(pairs, "CSR")
    assert csr["diff"] == round(1 / 3, 4) and csr["units"] == 3
    assert csr["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half], abs=1e-4)
    # ISR: 2/3 - 1/3; influences 2/3, -1/3, -1/3; sd sqrt(1/3)
    half = 1.959964 * math.sqrt(1 / 3) / math.sqrt(3)
    isr = paired_difference(pairs, "ISR")
    assert isr["diff"] == round(1 / 3, 4)
    assert isr["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half], abs=1e-4)
    # SSR: a unit whose streak is unknown for one system is left out of both
    ssr = paired_difference([*pairs, ([None], [[True]])], "SSR")
    assert ssr["units"] == 3 and ssr["diff"] == isr["diff"] and ssr["ci95"] == isr["ci95"]
    # identical systems differ by exactly zero
    assert paired_difference(list(zip(first, first)), "CSR") == {"diff": 0.0, "ci95": [0.0, 0.0], "units": 3}


def test_verdicts_read_the_interval():
    assert verdict([0.01, 0.2]) == "supported" and verdict([-0.2, -0.01]) == "reversed"
    assert verdict([-0.1, 0.1]) == "inconclusive"
    assert claim_verdict({"CSR": "supported", "ISR": "inconclusive", "SSR": "inconclusive"}) == "supported on CSR"
    assert claim_verdict({"CSR": "reversed", "ISR": "inconclusive", "SSR": "reversed"}).startswith("not supported")
    assert claim_verdict({"CSR": "supported", "ISR": "reversed", "SSR": "inconclusive"}).startswith("mixed")
    assert claim_verdict({m: "inconclusive" for m in ("CSR", "ISR", "SSR")}) == "inconclusive"
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]


def test_every_experiment_writes_its_documented_report(runs):
    base, done = runs
    for name, (report, proc) in done.items():
        experiment = EXPERIMENTS[name]
        seeds = SEEDS.get(name, [0])
        assert report["experiment"] == name and report["quick"] is True and report["seeds"] == seeds
        assert list(report["arms"]) == [arm.name for arm in experiment.arms]
        assert set(report["per_seed"]) == {str(seed) for seed in seeds}
        judged = {seed: {arm: judged_own(base, report, seed, arm) for arm in report["arms"]} for seed in seeds}
        for arm_name, arm in report["arms"].items():
            # every number is the one its arms' cached judgments give
            assert arm["seeds"] == seeds
            for seed in seeds:
                expected = {m: round(v, 4) for m, v in score(judged[seed][arm_name]).items()}
                assert {m: report["per_seed"][str(seed)][arm_name][m] for m in METRICS} == expected
            values = [report["per_seed"][str(seed)][arm_name] for seed in seeds]
            for metric in METRICS:
                assert arm[metric] == round(statistics.fmean(v[metric] for v in values), 4)
                assert arm["sd"][metric] == (round(statistics.stdev(v[metric] for v in values), 4)
                                             if len(seeds) > 1 else 0.0)
            assert arm["ci95"] == interval_over_sessions([judged[seed][arm_name] for seed in seeds])
            if arm_name == experiment.reference:
                assert "vs_reference" not in arm
            else:
                grid = [list(zip(judged[seed][arm_name], judged[seed][experiment.reference])) for seed in seeds]
                assert arm["vs_reference"] == {m: crossed_difference(grid, m) for m in METRICS}
        assert [claim["claim"] for claim in report["claims"]] == [f"{a} > {b}" for a, b in experiment.claims]
        for claim, (better, worse) in zip(report["claims"], experiment.claims):
            grid = [list(zip(judged[seed][better], judged[seed][worse])) for seed in seeds]
            assert claim["difference"] == {m: crossed_difference(grid, m) for m in METRICS}
            assert claim["verdicts"] == {m: verdict(claim["difference"][m]["ci95"]) for m in METRICS}
            if len(seeds) == 1:  # one seed: the interval over sessions, and nothing to project seeds from
                units = grid[0]
                assert claim["difference"] == {m: {**paired_difference(units, m), "seeds": 1, "components": None}
                                               for m in METRICS}
                assert claim["seeds_for_target"] is None
            else:
                assert claim["seeds_for_target"] == {
                    m: {str(n): seeds_needed(claim["difference"][m]["components"], n, 0.015) for n in (100, 300, 1000)}
                    for m in METRICS}
        assert proc.stdout.count("QUICK mode is a smoke test") == 1 and "paired difference" in proc.stdout


def test_readme_tables_and_figure_show_the_json(runs):
    """The Markdown tables written beside each JSON and the figure's data hold the JSON's numbers: every
    arm's mean ± sd, every claim's difference and interval in points, every plotted value and interval."""
    base, done = runs
    for name, (report, _) in done.items():
        tables = (base / "out" / f"{name}.md").read_text()
        assert tables == readme_tables(report)
        parsed = [[[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()
                   if line.startswith("| ")] for block in tables.split("\n\n")]
        rows = parsed[0] + parsed[1]
        arm_rows = {row[0]: row[1:] for row in rows[1 : 1 + len(report["arms"])]}
        for arm_name, arm in report["arms"].items():
            cells = arm_rows[arm_name]
            assert cells[:3] == [f"{arm[m]:.3f} ± {arm['sd'][m]:.3f}" for m in METRICS]
            assert cells[3] == (f"{arm['records']:,.0f}" if arm["records"] else "—")
        claim_rows = rows[2 + len(report["arms"]) :]
        assert [row[0] for row in claim_rows] == [claim["claim"] for claim in report["claims"]]
        for row, claim in zip(claim_rows, report["claims"]):
            for cell, metric in zip(row[1:4], METRICS):
                difference = claim["difference"][metric]
                shown = [float(x.replace("\u2212", "-")) for x in cell.replace("[", "").replace("]", "")
                         .replace(",", "").split()]
                assert shown == [round(100 * difference["diff"], 1), round(100 * difference["ci95"][0], 1),
                                 round(100 * difference["ci95"][1], 1)]
            assert row[4] == claim["verdict"]
        extra = parsed[2:]
        if len(report["seeds"]) > 1:  # the seeds each claim's interval would need for ±1.5 points
            power_rows = extra.pop(0)[1:]
            expected = [[claim["claim"], m, f"{50 * (claim['difference'][m]['ci95'][1] - claim['difference'][m]['ci95'][0]):.1f}",
                         " / ".join(str(c) if c is not None else "> 1,000" for c in claim["seeds_for_target"][m].values())]
                        for claim in report["claims"] for m in METRICS]
            assert power_rows == expected
        if "by_constraints" in report:
            seed_rows = extra.pop(0)[1:]
            assert [row[0] for row in seed_rows] == [str(seed) for seed in report["seeds"]]
            for row, arms in zip(seed_rows, report["per_seed"].values()):
                assert row[1:4] == [f"{100 * (arms['RPO'][m] - arms['DPO'][m]):+.1f}".replace("-", "\u2212")
                                    for m in METRICS]
                assert row[4] == f"{arms['DPO']['records']:,} / {arms['RPO']['records']:,}"
            split = report["by_constraints"]
            constraint_rows = extra.pop(0)[1:]
            assert [row[0] for row in constraint_rows] == ["1-2", "3-4", "5+"]
            for row, group in zip(constraint_rows, split["groups"]):
                table4, difference = split["table4"][group], split["difference"][group]
                assert row[1] == f"{table4['turns']:,}" and row[5] == f"{difference['turns']:,}"
                assert row[4].startswith(f"{table4['reverse']['perfect']['rate']:.2f} [")
                assert row[7].startswith(f"{100 * difference['ISR']['diff']:+.1f}".replace("-", "\u2212"))
        assert extra == []

        data = figure_data(report)
        assert data["differences"] == [
            {"label": f"{claim['claim']} {m}", "metric": m, "diff": claim["difference"][m]["diff"],
             "ci95": claim["difference"][m]["ci95"]}
            for claim in report["claims"] for m in METRICS
        ]
        if name == "online":
            curve = report["curve"]["0"]
            assert [p["round"] for p in data["curve"]] == [0, 1, 2, 3]
            for m in METRICS:
                assert data["curve"][0][m] == {"value": report["arms"]["base"][m],
                                               "ci95": report["arms"]["base"]["ci95"][m]}
                assert [p[m] for p in data["curve"][1:]] == [
                    {"value": entry["metrics"][m], "ci95": ci[m]} for entry, ci in zip(curve, report["curve_ci95"])]
                assert data["offline"][m] == report["arms"]["offline"][m]
        else:
            assert data["arms"] == {arm_name: {m: {"value": arm[m], "ci95": arm["ci95"][m]} for m in METRICS}
                                    for arm_name, arm in report["arms"].items()}
        with Image.open(base / "out" / f"{name}.png") as png:
            assert png.text["Description"] == f"figure_data sha256 {figure_digest(report)}"
            assert png.size[0] > 1000


def test_arms_share_one_base_and_one_held_out_set_across_experiments(runs):
    base, done = runs
    shared = [report["shared"]["0"] for report, _ in done.values()]
    assert all(entry == shared[0] for entry in shared)
    prompt = done["prompt"][0]["shared"]
    assert prompt["0"]["held_out"] == prompt["1"]["held_out"]  # every seed is scored on the same sessions
    assert prompt["0"]["base"] != prompt["1"]["base"]  # each seed has its own base
    assert len(shared[0]["held_out"]) == done["gamma"][0]["eval_sessions"]
    for name, (_, proc) in done.items():
        # seed 0's base is the QUICK demo's; seed 1's is trained by the one experiment that runs it
        assert "[experiments] seed 0: base policy reused" in proc.stdout, name
        assert ("[experiments] seed 1: sft" in proc.stdout) == (name == "prompt"), name
    # the RPO arm at the budget's gamma is trained once and shared by gamma, methods and prompt
    assert done["methods"][0]["per_seed"]["0"]["RPO"] == done["gamma"][0]["per_seed"]["0"]["γ=0.05"]
    assert done["prompt"][0]["per_seed"]["0"]["triggered"] == done["gamma"][0]["per_seed"]["0"]["γ=0.05"]
    assert sorted(p.name for p in base.iterdir()) == ["out"]


def test_gap_buckets_have_equal_size_and_online_matches_offline_pairs_and_steps(runs):
    _, done = runs
    gap = done["gap"][0]["per_seed"]["0"]
    assert gap["g>=3"]["records"] == gap["g=2"]["records"] == gap["g=1"]["records"] > 0
    online = done["online"][0]
    rounds = online["curve"]["0"]
    assert [entry["round"] for entry in rounds] == [1, 2, 3] and online["rounds"] == 3
    assert sum(entry["steps"] for entry in rounds) == QUICK.pref_steps
    assert sum(entry["records"] for entry in rounds) == online["per_seed"]["0"]["offline"]["records"]
    assert online["per_seed"]["0"]["online"]["records"] == online["per_seed"]["0"]["offline"]["records"]
    assert online["per_seed"]["0"]["online"]["CSR"] == rounds[-1]["metrics"]["CSR"]
    assert "online RPO per round" in done["online"][1].stdout


def test_bad_arguments_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "rpo.demo.experiments", "nonsense"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: experiment 'nonsense': expected one of gap, gamma, methods, prompt, online"]


def test_interval_over_sessions_is_the_session_bootstrap_of_the_mean_over_seeds():
    sessions = [[[True, True]], [[True, False]], [[False]], [[True], [True, True]]]
    # one seed, or seeds that answered alike: the plain bootstrap over sessions
    assert interval_over_sessions([sessions]) == bootstrap_ci95(sessions)
    assert interval_over_sessions([sessions, sessions]) == bootstrap_ci95(sessions)
    # sessions all alike: nothing varies, the interval is the value itself
    assert interval_over_sessions([[[[True, False]]] * 5, [[[True, True]]] * 5]) == {
        "CSR": [0.75, 0.75], "ISR": [0.5, 0.5], "SSR": [0.5, 0.5]}


@pytest.mark.parametrize("seed", range(5))
def test_quick_world_gives_every_gap_bucket(seed, tmp_path):
    """The QUICK budget's world, sampled by the noisy demonstrator that its base imitates (no training),
    gives pairs in every gap bucket: the paper's Table 2 sets can be built from it on seeds 0-4."""
    detail = demonstrator_detail(seed, QUICK, tmp_path / "detail.jsonl")
    for arm in EXPERIMENTS["gap"].arms[1:]:
        name, records = arm_dataset(arm, detail, tmp_path / "data", seed)
        assert name == f"demo_rpo_{arm.data}" and records > 0


def test_an_arm_without_data_is_named_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    """A base whose samples give no pair of some gap: its gap arms are named in one line each, left out
    of that seed, and summarised over the seeds that built them; a claim no seed can make says so."""
    narrow = replace(QUICK, min_constraints=2, max_constraints=2)  # no turn can differ on three constraints
    detail = demonstrator_detail(0, narrow, tmp_path / "detail.jsonl")
    with pytest.raises(EmptyArmData, match="gives no pairs for demo_rpo_gap_ge3"):
        arm_dataset(EXPERIMENTS["gap"].arms[1], detail, tmp_path / "data", 0)

    def result(seed: int, follows: bool) -> dict:
        return {"base": f"base{seed}", "held_out": ["a", "b"], "records": 4,
                "judged": {"own": [[[follows, True]], [[True]]]}}

    def fake_run_arm(arm, parts, budget, keep, threads=None):
        if arm.method != "base" and parts.seed == 1:
            raise EmptyArmData(f"{parts.detail} gives no pairs for demo_rpo_gap_ge3")
        return result(parts.seed, arm.name != "g=1")

    monkeypatch.setattr("rpo.demo.experiments.run_arm", fake_run_arm)
    gap = EXPERIMENTS["gap"]
    results = {seed: run_seed(gap, SeedParts(seed, tmp_path / f"seed{seed}", tmp_path, detail, [], [], "key"),
                              QUICK, jobs=1, rounds=3, keep=False) for seed in (0, 1)}
    out = capsys.readouterr().out.splitlines()
    assert out == [f"[experiments] seed 1: arm {arm} not built: {detail} gives no pairs for demo_rpo_gap_ge3; "
                   "the other arms go on" for arm in ("g>=3", "g=2", "g=1")]
    assert list(results[0]) == ["base", "g>=3", "g=2", "g=1"] and list(results[1]) == ["base"]
    report = summarise(gap, results)
    assert report["arms"]["base"]["seeds"] == [0, 1] and report["arms"]["g>=3"]["seeds"] == [0]
    assert report["arms"]["g=1"]["CSR"] == 0.6667 and report["arms"]["g>=3"]["CSR"] == 1.0
    first = report["claims"][0]
    assert first["claim"] == "g>=3 > g=1" and first["difference"]["CSR"]["diff"] == round(1 - 2 / 3, 4)
    assert first["difference"]["CSR"]["units"] == 2  # seed 0's two sessions only
    report.update(seeds=[0, 1], split="eval", eval_sessions=2, quick=True, minutes=0.1)
    assert "g>=3      not built for seeds [1]" in table(report)
    results[0] = {"base": results[0]["base"], "g=1": results[0]["g=1"]}
    lonely = summarise(gap, results)
    assert lonely["arms"]["g>=3"] == {"seeds": []}
    assert lonely["claims"][0] == {"claim": "g>=3 > g=1", "difference": None, "verdicts": None,
                                   "verdict": "not built (no seed has both arms)"}
    assert list(figure_data(lonely)["arms"]) == ["base", "g=1"]
    assert "| g>=3 |" not in readme_tables(lonely) and "| g>=3 > g=1 | — | — | — | not built" in readme_tables(lonely)


def test_methods_are_split_by_constraints_in_play(runs):
    """Table 4 and RPO − DPO per group of constraints in play, as recomputed from the seed's samples and
    the arms' cached judgments; the groups partition the paper's < 5 / >= 5 split and the held-out turns."""
    base, done = runs
    report = done["methods"][0]
    split = report["by_constraints"]
    detail = base / "out" / "seed0" / "detail.jsonl"
    assert split["groups"] == ["1-2", "3-4", "5+"] and split["claim"] == "RPO > DPO"
    assert split["table4"] == table4_by_group([detail])
    rpo, dpo = (judged_own(base, report, 0, arm) for arm in ("RPO", "DPO"))
    assert split["difference"] == difference_by_group({0: (rpo, dpo)})
    tallies = efficiency(detail)
    assert split["table4"]["1-2"]["turns"] + split["table4"]["3-4"]["turns"] == tallies.direct["<5"].turns
    assert split["table4"]["5+"]["turns"] == tallies.direct[">=5"].turns
    turns = [split["difference"][group]["turns"] for group in split["groups"]]
    assert sum(turns) == sum(len(session) for session in rpo)
    # ISR pools turns, so the groups' differences weighted by their turns give the overall difference
    overall = report["claims"][[c["claim"] for c in report["claims"]].index("RPO > DPO")]["difference"]["ISR"]["diff"]
    weighted = sum(n * split["difference"][g]["ISR"]["diff"] for n, g in zip(turns, split["groups"])) / sum(turns)
    assert weighted == pytest.approx(overall, abs=2e-4)
    assert "by constraints in play" in done["methods"][1].stdout


def test_turns_are_grouped_by_the_constraints_they_trigger():
    session = [[True, False], [True, True, True], None, [True] * 5, [False] * 6]
    assert turns_in([session], "1-2") == [[[True, False]]]
    assert turns_in([session], "3-4") == [[[True, True, True]]]
    assert turns_in([session], "5+") == [[[True] * 5, [False] * 6]]
    assert [group_of(n) for n in (1, 2, 3, 4, 5, 9)] == ["1-2", "1-2", "3-4", "3-4", "5+", "5+"]


def test_arms_option_keeps_the_base_the_reference_and_the_claims_between_kept_arms():
    methods = chosen_arms(EXPERIMENTS["methods"], "DPO,RPO")
    assert [arm.name for arm in methods.arms] == ["base", "DPO", "RPO"]
    assert methods.claims == (("DPO", "base"), ("RPO", "DPO"), ("RPO", "base"))
    gamma = chosen_arms(EXPERIMENTS["gamma"], "γ=0.05")
    assert [arm.name for arm in gamma.arms] == ["base", "γ=0", "γ=0.05"] and gamma.claims == (("γ=0.05", "γ=0"),)
    assert chosen_arms(EXPERIMENTS["gap"], None) is EXPERIMENTS["gap"]
    with pytest.raises(InputError, match="--arms: methods has arms base, SFT, DPO, KTO, RPO; got 'PPO'"):
        chosen_arms(EXPERIMENTS["methods"], "PPO")
